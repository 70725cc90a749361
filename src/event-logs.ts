// The log lines that are subscribers of events: one access line per request, and the stream lines
// (opened, closed, refused; shared streams opened and closed). Each is built once from its event; the access line skips pino's
// censoring pass (see accessLineWriter in log.ts) and never makes a child logger per request.
import type { Logger } from 'pino';
import type { Events } from './events.js';
import { accessLineWriter } from './log.js';

const PROBES = new Set(['/healthz', '/readyz']);

/**
 * What the upstream means by the graphql-ws close codes it sends (graphql-transport-ws): the
 * token is checked at the handshake only, so none of them is about the token, 4401 included
 * (its reason text says "Unauthorized").
 */
const UPSTREAM_CLOSE_MEANING: Record<number, string> = {
  4400: 'the client sent a message the upstream could not parse',
  4401: 'the client subscribed before connection_init (a client bug, not a token problem: the token is checked only at the handshake)',
  4408: 'the client sent no connection_init in time',
  4409: 'the client reused the id of a running subscription',
  4429: 'the client sent connection_init twice',
};

export interface EventLogOptions {
  /** Name the credential set on access lines (when there are several). */
  credentialsInLines: boolean;
}

export function logEvents(events: Events, logger: Logger, { credentialsInLines }: EventLogOptions): void {
  const access = accessLineWriter(logger);
  events.on('request', (e) => {
    // A 5xx of the proxy's own (upstream unreachable, no token, shutting down) is a warning, as for
    // WebSocket handshakes; probes arrive every few seconds and would drown the traffic at info.
    const level = e.error && e.status >= 500 ? 'warn' : e.path === undefined && PROBES.has(e.url) ? 'debug' : 'info';
    // One object of one shape; JSON leaves out the fields that are undefined.
    const proxied = e.path !== undefined;
    access(level, {
      reqId: e.requestId,
      req: { method: e.method, url: e.url },
      key: e.key,
      credentials: credentialsInLines ? e.credentials : undefined,
      status: e.status,
      error: e.error,
      operation: e.operation,
      upstreamStatus: e.upstreamStatus,
      attempts: proxied ? e.attempts : undefined,
      upstreamMs: e.upstreamMs,
      cache: e.cache,
      bytesIn: proxied ? e.bytesIn : undefined,
      bytesOut: proxied ? e.bytesOut : undefined,
      ms: e.ms,
      msg: 'request',
    });
  });

  const ws = logger.child({ component: 'ws' });
  events.on('streamOpened', (e) => {
    ws.info({ stream: e.id, path: e.path, url: e.url, protocol: e.protocol, key: e.key, attempts: e.attempts }, 'stream opened');
  });
  events.on('streamClosed', (e) => {
    ws.info(
      {
        stream: e.id,
        path: e.path,
        protocol: e.protocol,
        key: e.key,
        ms: e.ms,
        closedBy: e.closedBy,
        cause: e.cause,
        code: e.code,
        reason: e.reason || undefined,
        meaning: e.closedBy === 'upstream' && e.code !== undefined ? UPSTREAM_CLOSE_MEANING[e.code] : undefined,
        bytesFromClient: e.bytesFromClient,
        bytesToClient: e.bytesToClient,
        messagesFromClient: e.messagesFromClient,
        messagesToClient: e.messagesToClient,
      },
      'stream closed',
    );
  });
  // Share mode: one line when an upstream stream opens, one when it ends saying how many
  // subscribers it carried.
  events.on('sharedStreamOpened', (e) => {
    ws.info({ stream: e.stream, credentials: e.credentials, path: e.path, operation: e.operationName }, 'shared stream opened');
  });
  events.on('sharedStreamClosed', (e) => {
    const { operationName, ...fields } = e;
    ws.info({ ...fields, operation: operationName }, 'shared stream closed');
  });
  events.on('refused', (e) => {
    if (e.transport !== 'ws') return;
    const line = { path: e.path, status: e.status, error: e.error };
    if (e.status >= 500) ws.warn(line, `stream refused: ${e.message}`);
    else ws.info(line, `stream refused: ${e.message}`);
  });
}
