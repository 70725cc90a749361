// The proxied paths' common case, served straight from Node's 'request' event: a GET, or a POST
// whose JSON body has a known length within BODY_LIMIT, with no Origin header (no CORS to answer),
// while the proxy is not shutting down. Fastify's routing, hooks and per-request objects were a
// large share of a proxied request's CPU (README, "Benchmarks"). What its hooks did for these
// requests is done here by the same parts: HttpForwarder's admission and forwarding, the error
// catalogue, publishRequest. Every other request goes to Fastify, which answers it as before.
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import type { Caller } from '../auth/caller.js';
import type { Config } from '../config/index.js';
import { answerToThrown, ProxyError, writeError } from '../errors.js';
import type { Events } from '../events.js';
import { REQUEST_ID_HEADER, requestId } from '../observability/request-id.js';
import type { HttpForwarder, ProxiedReply, ProxiedRequest, ProxyOutcome } from './http.js';
import { publishRequest } from './request-event.js';

export interface FastPathOptions {
  config: Config;
  forwarder: HttpForwarder;
  events: Events;
  log: FastifyBaseLogger;
}

/** The body types taken here; any other goes through Fastify's content-type checks. */
const JSON_BODY = /^application\/json(?:; ?charset=utf-8)?$/i;
const LENGTH = /^[1-9]\d{0,9}$/;

export class FastPath {
  private closing = false;
  private readonly paths: Set<string>;

  constructor(private readonly options: FastPathOptions) {
    this.paths = new Set(options.config.paths);
  }

  /** From now on every request goes to Fastify, which answers 503 while it shuts down. */
  close(): void {
    this.closing = true;
  }

  /** Serves the request when it is the common case; false leaves it to Fastify. */
  take(req: IncomingMessage, res: ServerResponse): boolean {
    if (this.closing) return false;
    const url = req.url!;
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const { headers } = req;
    if (!this.paths.has(path) || headers.origin !== undefined || url.includes('#')) return false;
    if (req.method === 'POST' ? !this.plainBody(headers) : req.method !== 'GET') return false;
    new FastRequest(req, res, path, this.options).start();
    return true;
  }

  private plainBody(headers: IncomingHttpHeaders): boolean {
    const type = headers['content-type'];
    const length = headers['content-length'];
    return (
      type !== undefined &&
      JSON_BODY.test(type) &&
      headers['transfer-encoding'] === undefined &&
      length !== undefined &&
      LENGTH.test(length) &&
      Number(length) <= this.options.config.bodyLimit
    );
  }
}

/** One request on the fast path: its own ProxiedRequest and ProxiedReply. */
class FastRequest implements ProxiedRequest, ProxiedReply {
  readonly id: string;
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  caller: Caller | null = null;
  proxyOutcome: ProxyOutcome | null = null;
  proxyError: ProxyError | null = null;
  /** What Fastify's hooks put on every answer: the request id, and CORS's Vary. */
  private readonly base: OutgoingHttpHeaders;
  private readonly startedAt = performance.now();
  private readonly chunks: Buffer[] = [];
  private received = 0;
  private takenOver = false;

  constructor(
    readonly raw: IncomingMessage,
    readonly res: ServerResponse,
    private readonly path: string,
    private readonly options: FastPathOptions,
  ) {
    const { headers } = raw;
    this.method = raw.method!;
    this.url = raw.url!;
    this.headers = headers;
    this.id = requestId(headers[REQUEST_ID_HEADER]);
    headers[REQUEST_ID_HEADER] = this.id;
    this.base = { [REQUEST_ID_HEADER]: this.id, vary: 'Origin' };
  }

  start(): void {
    this.res.on('finish', this.finished);
    this.res.on('error', this.finished);
    this.options.forwarder.admit(this, this, this.path, this.admitted);
  }

  fail(error: ProxyError): void {
    this.proxyError = error;
    writeError(this.res, error, this.base);
  }

  addHeaders(headers: Record<string, string>): void {
    Object.assign(this.base, headers);
  }

  takeOver(): OutgoingHttpHeaders {
    this.takenOver = true;
    return this.base;
  }

  private readonly admitted = (err?: Error): void => {
    if (err) return this.failed(err);
    if (this.method === 'GET') return this.bodyRead(undefined);
    this.raw.on('data', this.data);
    this.raw.on('end', this.end);
    this.raw.on('error', this.unreadable);
  };

  private readonly data = (chunk: Buffer): void => {
    this.chunks.push(chunk);
    this.received += chunk.length;
  };

  private readonly end = (): void => {
    this.bodyRead(Buffer.concat(this.chunks, this.received));
  };

  private bodyRead(body: Buffer | undefined): void {
    this.options.forwarder.forward(this, body, this, this.path).catch(this.failed);
  }

  /** The body could not be read (the client went away mid-body): answered as Fastify does, 400. */
  private readonly unreadable = (err: Error): void => {
    this.fail(new ProxyError('bad_request', err.message));
  };

  private readonly failed = (err: Error): void => {
    const error = answerToThrown(err, this.options.config.bodyLimit);
    if (error && !this.takenOver) return this.fail(error);
    this.options.log.error({ reqId: this.id, err }, 'unexpected error');
    if (!this.takenOver) this.fail(new ProxyError('internal_error'));
  };

  private readonly finished = (): void => {
    this.res.removeListener('finish', this.finished);
    this.res.removeListener('error', this.finished);
    publishRequest(this.options.events, this, this.res.statusCode, performance.now() - this.startedAt);
  };
}
