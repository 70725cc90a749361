// An in-process rig for the points saver with real parts: a node:http upstream on loopback whose
// answers each test scripts, a real undici Pool to it, and a node:http front whose handler calls
// PointsSaver.handle with real ServerResponses, exactly as the proxy's HTTP handler will. The
// exchange here is what relay.ts does for the proxy: dispatch() into the sink, a 401 held and
// retried once with a fresh token, the proxy's own 502 JSON when the upstream cannot be reached.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Test } from 'tap';
import { Pool, type Dispatcher } from 'undici';
import { PointsSaver, type SaverOptions, type SaverOutcome } from '../../src/savings/saver.js';
import type { AnswerSink, Exchange, ResponseHeaders } from '../../src/savings/flight.js';

export interface UpstreamRequest {
  n: number;
  req: IncomingMessage;
  res: ServerResponse;
  body: string;
  authorization: string;
  /** Resolves true when the connection closed before the answer was finished (the proxy aborted). */
  aborted: Promise<boolean>;
}

export interface Rig {
  saver: PointsSaver;
  /** The front's URL: requests here go through the saver. */
  url: string;
  upstreamUrl: string;
  /** Every request the upstream received, in order. */
  upstream: UpstreamRequest[];
  /** How the upstream answers; by default 200 JSON naming the request's number. */
  answer: (u: UpstreamRequest) => void;
  /** Token of the first attempt of each exchange; a request with it gets 401 from the default answer. */
  firstToken: string;
  outcomes: SaverOutcome[];
  /** The front's responses, in arrival order. */
  responses: ServerResponse[];
  errors: unknown[];
  /** Exchanges started (not attempts). */
  exchanges: number;
  /** Times an exchange was told to stop reading the upstream (sink.write returned false). */
  pauses: number;
  /** Replaces the exchange for the next requests (to test a broken one). */
  exchangeOverride?: Exchange;
}

const GOOD = 'Bearer good';
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'trailer', 'upgrade', 'te']);

export function defaultAnswer(u: UpstreamRequest): void {
  if (u.authorization !== GOOD) {
    u.res.writeHead(401, { 'content-type': 'text/plain' }).end('Unauthorized');
    return;
  }
  const body = JSON.stringify({ data: { n: u.n } });
  u.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
}

type AttemptResult = { kind: 'relayed' } | { kind: 'held' } | { kind: 'failed'; error: Error };

/** One upstream attempt written into the sink; a 401 is held (not written) when `hold401`. */
function attempt(rig: Rig, pool: Dispatcher, sink: AnswerSink, request: Dispatcher.DispatchOptions, hold401: boolean): Promise<AttemptResult> {
  return new Promise((resolve) => {
    let held = false;
    pool.dispatch(request, {
      onRequestStart(controller) {
        sink.onGone(() => controller.abort(new Error('every client has gone')));
      },
      onResponseStart(_controller, status, headers) {
        if (status === 401 && hold401) {
          held = true;
          return;
        }
        const kept: ResponseHeaders = {};
        for (const [name, value] of Object.entries(headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) kept[name] = value;
        sink.head(status, kept);
      },
      onResponseData(controller, chunk) {
        if (held || sink.write(chunk)) return;
        rig.pauses += 1;
        controller.pause();
        sink.onDrain(() => controller.resume());
      },
      onResponseEnd() {
        if (held) return resolve({ kind: 'held' });
        sink.end();
        resolve({ kind: 'relayed' });
      },
      onResponseError(_controller, error) {
        resolve({ kind: 'failed', error });
      },
    });
  });
}

function exchangeFor(rig: Rig, pool: Dispatcher, req: IncomingMessage, body: Buffer): Exchange {
  const headers: Record<string, string> = {};
  for (const name of ['accept', 'accept-encoding', 'content-type']) if (typeof req.headers[name] === 'string') headers[name] = req.headers[name];
  const request = (authorization: string): Dispatcher.DispatchOptions => ({
    method: req.method as Dispatcher.HttpMethod,
    path: req.url!,
    headers: { ...headers, authorization },
    body: req.method === 'POST' ? body : undefined,
  });
  return async (sink) => {
    rig.exchanges += 1;
    let result = await attempt(rig, pool, sink, request(rig.firstToken), rig.firstToken !== GOOD);
    if (result.kind === 'held') {
      if (sink.gone) return;
      result = await attempt(rig, pool, sink, request(GOOD), false);
    }
    if (result.kind !== 'failed' || sink.gone) return;
    if (sink.started) return sink.destroy();
    const text = Buffer.from(JSON.stringify({ error: 'upstream_unreachable', message: result.error.message }));
    sink.head(502, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(text.length) });
    sink.write(text);
    sink.end();
  };
}

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * Starts the rig; everything is closed at the end of the test. The front takes the credential
 * set from `x-test-set` and the key's TTL from `x-test-ttl` (what the caller's key decides in the
 * proxy).
 */
export async function startRig(t: Test, options: Partial<SaverOptions> = {}): Promise<Rig> {
  const rig = {
    upstream: [],
    answer: defaultAnswer,
    firstToken: GOOD,
    outcomes: [],
    responses: [],
    errors: [],
    exchanges: 0,
    pauses: 0,
  } as unknown as Rig;

  const upstream = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const aborted = new Promise<boolean>((r) => res.once('close', () => r(!res.writableFinished)));
      const u: UpstreamRequest = { n: rig.upstream.length + 1, req, res, body: Buffer.concat(chunks).toString(), authorization: req.headers.authorization ?? '', aborted };
      rig.upstream.push(u);
      rig.answer(u);
    });
  });
  rig.upstreamUrl = await listen(upstream);
  const pool = new Pool(rig.upstreamUrl, { connections: 64 });

  rig.saver = new PointsSaver({
    coalesce: true,
    cacheTtlMs: 0,
    maxHeldBytes: 1 << 20,
    maxHeldTotalBytes: 64 << 20,
    maxBacklogBytes: 4 << 20,
    onError: (err) => rig.errors.push(err),
    ...options,
  });
  const front = createServer((req, res) => {
    rig.responses.push(res);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const q = req.url!.indexOf('?');
      const ttl = req.headers['x-test-ttl'];
      const facts = {
        method: req.method!,
        path: q === -1 ? req.url! : req.url!.slice(0, q),
        search: q === -1 ? '' : req.url!.slice(q + 1),
        body: req.method === 'POST' ? body : undefined,
        headers: req.headers,
        credentials: (req.headers['x-test-set'] as string | undefined) ?? 'default',
        ...(typeof ttl === 'string' && { cacheTtlMs: Number(ttl) }),
      };
      const exchange = rig.exchangeOverride ?? exchangeFor(rig, pool, req, body);
      void rig.saver.handle(facts, exchange, res, { 'x-front': 'yes' }).then((outcome) => rig.outcomes.push(outcome));
    });
  });
  rig.url = await listen(front);

  t.teardown(async () => {
    front.closeAllConnections();
    upstream.closeAllConnections();
    await Promise.all([new Promise((r) => front.close(r)), new Promise((r) => upstream.close(r)), pool.destroy()]);
  });
  return rig;
}
