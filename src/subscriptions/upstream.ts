// One upstream stream: one WebSocket to Bitquery carrying one subscription, shared by every client
// subscription with the same identity. It speaks legacy `graphql-ws` upstream (Bitquery's safe
// default: some graphql-transport-ws clients reported receiving no events), whatever its
// subscribers speak.
//
// Bitquery bills a stream until its socket closes (`stop`/`complete` change nothing), so the stream
// is ended by closing the socket: when the last subscriber has been gone for the linger, when the
// upstream completes or errs, when reconnecting has failed too often, or at shutdown.
//
// It never stalls silently: no message at all (no event, no `ka`) for `idleMs`, or the socket
// dropping, and it reconnects (backoff, a fresh token after a 401) and subscribes again while its
// subscribers stay; after `reconnectAttempts` failed attempts in a row each subscriber gets an
// error saying why. Events that arrive while it reconnects are lost to everyone alike.
//
// Memory: one socket, its timers and the set of subscribers. No event is queued here: each is
// handed to every subscriber as it arrives (a slow subscriber is the session's to drop).
import type { Logger } from 'pino';
import { WebSocket, type RawData } from 'ws';
import type { Events } from '../events.js';
import type { GraphqlRequest } from '../graphql/identity.js';
import { wsOrigin } from '../proxy/ws/handshake.js';
import { clip, scrubSecrets } from '../scrub.js';
import { errorsOf, LEGACY } from './protocol.js';
import type { Principal, ReconnectReason, SharedStreamClosedEvent, Subscriber, UpstreamSettings } from './types.js';

export interface StreamContext {
  settings: UpstreamSettings;
  log: Logger;
  events?: Events;
  /** Called once, when the stream has ended (the hub forgets it). */
  onEnd(stream: UpstreamStream): void;
  /** Called for each reconnect scheduled. */
  onReconnect(stream: UpstreamStream, reason: ReconnectReason): void;
}

/** After a stream starts closing, how long the upstream gets to answer the close frame before the socket is cut. */
const CLOSE_GRACE_MS = 2000;
/**
 * At most this much of a handshake refusal's body is read, and at most REFUSAL_TEXT_MAX characters
 * of it, scrubbed of the token first, are quoted in the error subscribers get: an upstream (or a
 * proxy in between) may echo the request URL, which holds `?token=`.
 */
const REFUSAL_BODY_MAX = 4096;
const REFUSAL_TEXT_MAX = 200;
/** The only operation id used upstream: one subscription per socket. */
const OP_ID = '1';

type Phase = 'connecting' | 'initialising' | 'live' | 'waiting' | 'ended';

interface Failure {
  reason: ReconnectReason;
  /** Words for the log and, if this was the last straw, for subscribers. */
  message: string;
  /** Wait this long before the next attempt instead of the backoff (Retry-After, or 0 with a fresh token). */
  delayMs?: number;
}

export class UpstreamStream {
  private readonly subscribers = new Set<Subscriber>();
  private phase: Phase = 'waiting';
  private ws?: WebSocket;
  /** Failed attempts in a row (the one that broke a live stream included). */
  private failures = 0;
  /** A token to use for the next attempt instead of asking (after a 401). */
  private nextToken?: string;
  /** The token of the current attempt: removed from any upstream text quoted to subscribers. */
  private token = '';
  private lastMessageAt = 0;
  private ackAt = 0;
  private timer?: NodeJS.Timeout;
  private lingerTimer?: NodeJS.Timeout;
  private readonly started = performance.now();
  private events = 0;
  private reconnects = 0;
  private subscribersTotal = 0;
  private peakSubscribers = 0;
  private readonly start: string;

  constructor(
    readonly id: number,
    readonly principal: Principal,
    readonly path: string,
    readonly request: GraphqlRequest,
    private readonly ctx: StreamContext,
  ) {
    // The start message is the same for every attempt: the normalized document and canonical variables.
    this.start = JSON.stringify({
      type: 'start',
      id: OP_ID,
      payload: { query: request.document, variables: JSON.parse(request.variables) as unknown, ...(request.operationName !== undefined && { operationName: request.operationName }) },
    });
    ctx.events?.emit('sharedStreamOpened', { stream: id, credentials: principal.credentials, path, ...(request.operationName !== undefined && { operationName: request.operationName }) });
    void this.connect();
  }

  /** Current subscribers. */
  get size(): number {
    return this.subscribers.size;
  }

  /** Only for a stream the hub still holds (an ended one is forgotten at once). */
  join(subscriber: Subscriber): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.subscribers.add(subscriber);
    this.subscribersTotal += 1;
    this.peakSubscribers = Math.max(this.peakSubscribers, this.subscribers.size);
  }

  /** The subscriber completed, stopped or went away. The last one out starts the linger. */
  leave(subscriber: Subscriber): void {
    if (!this.subscribers.delete(subscriber) || this.subscribers.size > 0 || this.phase === 'ended') return;
    const { lingerMs } = this.ctx.settings;
    if (lingerMs === 0) return this.end('unused');
    this.lingerTimer = setTimeout(() => this.end('unused'), lingerMs);
    this.lingerTimer.unref();
  }

  /** Closes the upstream socket and forgets the subscribers (who must have been told already). */
  end(cause: SharedStreamClosedEvent['cause']): void {
    if (this.phase === 'ended') return;
    this.phase = 'ended';
    clearTimeout(this.timer);
    clearTimeout(this.lingerTimer);
    this.subscribers.clear();
    const ws = this.ws;
    this.ws = undefined;
    if (ws) {
      if (ws.readyState === WebSocket.OPEN) {
        ws.close(cause === 'shutdown' ? 1001 : 1000, cause === 'shutdown' ? 'proxy shutting down' : 'no more subscribers');
        setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
      } else ws.terminate();
    }
    this.ctx.onEnd(this);
    const { credentials } = this.principal;
    const { operationName } = this.request;
    const summary: SharedStreamClosedEvent = {
      stream: this.id,
      credentials,
      path: this.path,
      ...(operationName !== undefined && { operationName }),
      ms: Math.round(performance.now() - this.started),
      subscribers: this.subscribersTotal,
      peakSubscribers: this.peakSubscribers,
      events: this.events,
      reconnects: this.reconnects,
      cause,
    };
    this.ctx.events?.emit('sharedStreamClosed', summary);
  }

  // ---- one attempt

  private async connect(): Promise<void> {
    this.phase = 'connecting';
    let token = this.nextToken;
    this.nextToken = undefined;
    if (token === undefined) {
      try {
        token = await this.principal.tokens.getToken(this.ctx.settings.tokenWaitMs);
      } catch (err) {
        if (this.phase === 'connecting') this.failed({ reason: 'token_unavailable', message: `no token could be had (${(err as Error).message})` });
        return;
      }
      if (this.phase !== 'connecting') return;
    }
    this.token = token;
    // The URL holds the token: it is never logged, nor any error text that could quote it.
    const url = `${wsOrigin(this.principal.origin)}${this.path}?token=${encodeURIComponent(token)}`;
    const sentAt = performance.now();
    const ws = new WebSocket(url, [LEGACY], {
      headers: { authorization: `Bearer ${token}` },
      perMessageDeflate: false,
      followRedirects: false,
      maxPayload: this.ctx.settings.maxMessageBytes,
    });
    this.ws = ws;
    let errorCode: string | undefined;
    ws.on('error', (err: NodeJS.ErrnoException) => (errorCode ??= err.code ?? 'error'));
    this.timer = setTimeout(() => {
      if (this.ws === ws) this.failed({ reason: 'timeout', message: `the upstream did not complete the WebSocket handshake within ${this.ctx.settings.connectTimeoutMs} ms` });
    }, this.ctx.settings.connectTimeoutMs);
    ws.once('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      const retryAfter = Number(res.headers['retry-after']);
      let body = '';
      const done = () => {
        if (this.ws !== ws) return;
        const detail = clip(scrubSecrets(body, [token]).replace(/[^\x20-\x7e]+/g, ' ').trim(), REFUSAL_TEXT_MAX);
        void this.handshakeRefused(token, sentAt, status, detail, Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter * 1000 : undefined);
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
        if (body.length >= REFUSAL_BODY_MAX) done();
      });
      res.once('end', done);
      res.once('error', done);
    });
    ws.once('open', () => {
      if (this.ws !== ws) return;
      clearTimeout(this.timer);
      this.principal.tokens.tokenWorked?.(token);
      this.phase = 'initialising';
      this.lastMessageAt = performance.now();
      this.watchIdle();
      ws.send('{"type":"connection_init","payload":{}}');
    });
    ws.on('message', (data, isBinary) => {
      if (this.ws === ws) this.received(data, isBinary);
    });
    ws.once('close', (code) => {
      if (this.ws !== ws) return;
      if (errorCode !== undefined && this.phase === 'connecting') {
        this.failed({ reason: 'unreachable', message: `the upstream could not be reached (${errorCode})` });
      } else if (errorCode === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        this.failed({ reason: 'dropped', message: `an upstream message was larger than ${this.ctx.settings.maxMessageBytes} bytes` });
      } else {
        this.failed({ reason: 'dropped', message: `the upstream connection closed (${code}${errorCode ? `, ${errorCode}` : ''})` });
      }
    });
  }

  /** The handshake got an HTTP answer instead of an upgrade. */
  private async handshakeRefused(token: string, sentAt: number, status: number, detail: string, retryAfterMs: number | undefined): Promise<void> {
    this.detach();
    const quoted = detail ? `: ${detail}` : '';
    if (status === 401) {
      // Bitquery checks the token at the handshake only: this token is no good. A fresh one is tried at once.
      const fresh = await this.principal.tokens.tokenRejected(token, this.ctx.settings.tokenWaitMs, sentAt);
      if (this.phase !== 'connecting') return;
      this.nextToken = fresh;
      return this.failed({ reason: 'unauthorized', message: `the upstream rejected the token (401)${quoted}`, ...(fresh !== undefined && { delayMs: 0 }) });
    }
    if (status === 408 || status === 429 || status >= 500) {
      return this.failed({ reason: 'refused', message: `the upstream refused the WebSocket handshake with ${status}${quoted}`, ...(retryAfterMs !== undefined && { delayMs: retryAfterMs }) });
    }
    // 402 (no points), 403, 404 …: asking again will not help.
    this.giveUp(`the upstream refused the WebSocket handshake with ${status}${quoted}`);
  }

  private received(data: RawData, isBinary: boolean): void {
    this.lastMessageAt = performance.now();
    if (isBinary) return; // proof of life all the same
    let msg: { type?: unknown; id?: unknown; payload?: unknown } | null;
    try {
      msg = JSON.parse((data as Buffer).toString('utf8')) as typeof msg; // binaryType nodebuffer: always one Buffer
    } catch {
      return;
    }
    if (msg === null || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'connection_ack':
        if (this.phase !== 'initialising') return;
        this.phase = 'live';
        this.ackAt = this.lastMessageAt;
        this.ws!.send(this.start);
        return;
      case 'data': {
        if (msg.id !== OP_ID) return;
        this.failures = 0;
        this.events += 1;
        const payload = Buffer.from(JSON.stringify(msg.payload ?? null));
        for (const subscriber of this.subscribers) subscriber.next(payload);
        return;
      }
      case 'error':
        if (msg.id !== OP_ID) return;
        return this.finish('upstream_error', (s) => s.fail(errorsOf(msg.payload)));
      case 'complete':
        if (msg.id !== OP_ID) return;
        return this.finish('upstream_complete', (s) => s.complete());
      case 'connection_error': {
        const [first] = errorsOf(msg.payload);
        return this.failed({ reason: 'connection_error', message: `the upstream refused connection_init (${clip(scrubSecrets(first!.message, [this.token]), REFUSAL_TEXT_MAX)})` });
      }
      default:
        // `ka` and anything else: the stream is alive. Alive long after the ack counts as recovered.
        if (this.phase === 'live' && this.lastMessageAt - this.ackAt >= this.ctx.settings.idleMs) this.failures = 0;
    }
  }

  /** Checks for silence every idleMs at most, without a timer reset per message. */
  private watchIdle(): void {
    const { idleMs } = this.ctx.settings;
    const quiet = performance.now() - this.lastMessageAt;
    if (quiet >= idleMs) return this.failed({ reason: 'idle', message: `no message from the upstream for ${idleMs} ms` });
    this.timer = setTimeout(() => this.watchIdle(), idleMs - quiet);
  }

  /** Cuts the current socket (if any) and stops its timers; its events are ignored from now on. */
  private detach(): void {
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = undefined;
    ws?.terminate();
  }

  /** One attempt failed, or a live stream broke: reconnect, or give up. */
  private failed(failure: Failure): void {
    this.detach();
    if (this.subscribers.size === 0) return this.end('unused'); // lingering: nobody to reconnect for
    this.failures += 1;
    if (this.failures > this.ctx.settings.reconnectAttempts) {
      const n = this.ctx.settings.reconnectAttempts;
      return this.giveUp(n === 0 ? failure.message : `${failure.message}, and ${n} reconnect attempt${n === 1 ? '' : 's'} in a row failed`);
    }
    const { backoffMinMs, backoffMaxMs } = this.ctx.settings;
    const backoff = this.failures === 1 ? 0 : Math.min(backoffMaxMs, backoffMinMs * 2 ** (this.failures - 2)) * (0.5 + Math.random() / 2);
    const delayMs = Math.round(Math.min(backoffMaxMs, failure.delayMs ?? backoff));
    this.reconnects += 1;
    this.ctx.onReconnect(this, failure.reason);
    this.ctx.log.warn(
      { stream: this.id, credentials: this.principal.credentials, reason: failure.reason, attempt: this.failures, delayMs, subscribers: this.subscribers.size },
      `shared stream reconnecting: ${failure.message}`,
    );
    this.phase = 'waiting';
    this.timer = setTimeout(() => void this.connect(), delayMs);
  }

  private giveUp(message: string): void {
    this.ctx.log.warn({ stream: this.id, credentials: this.principal.credentials, subscribers: this.subscribers.size }, `shared stream failed: ${message}`);
    this.finish('failed', (s) => s.fail([{ message: `the subscription's upstream stream failed: ${message}` }]));
  }

  /** Ends the stream, then tells each subscriber (who are no longer subscribers by then). */
  private finish(cause: SharedStreamClosedEvent['cause'], tell: (s: Subscriber) => void): void {
    const told = [...this.subscribers];
    this.end(cause);
    for (const s of told) tell(s);
  }
}
