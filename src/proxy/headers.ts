// Which headers cross the proxy. Inbound credentials never reach Bitquery; hop-by-hop headers
// belong to one connection and are never forwarded in either direction (RFC 9110 7.6.1).
import type { IncomingHttpHeaders } from 'node:http';
import { ProxyError } from '../errors.js';
import { decodeParam, pairName, queryPairs } from '../query-string.js';

/**
 * The most header lines a proxied request (or WebSocket handshake) may carry; more gets 431.
 * Browsers send about 20. Node itself accepts 2000, and an upstream that accepts fewer drops the
 * ones past its limit: with enough of them a client could push the proxy's Authorization out and
 * provoke 401s, each of which would cost a token renewal.
 */
export const MAX_REQUEST_HEADERS = 100;

/** The refusal for a request with more than MAX_REQUEST_HEADERS header lines, else undefined. */
export function headerLimit(rawHeaders: readonly string[]): ProxyError | undefined {
  if (rawHeaders.length / 2 <= MAX_REQUEST_HEADERS) return undefined;
  return new ProxyError('request_header_fields_too_large', `the request has ${rawHeaders.length / 2} header lines; at most ${MAX_REQUEST_HEADERS} are accepted`);
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/**
 * Not forwarded upstream: the target is fixed (host), the body is re-framed (content-length,
 * expect), the caller's credentials are replaced (authorization, x-api-key), and a browser's
 * cookies for localhost are none of Bitquery's business.
 */
const DROPPED_REQUEST = new Set(['host', 'content-length', 'expect', 'authorization', 'x-api-key', 'cookie']);

type Headers = Record<string, string | string[] | undefined>;

/** Headers as a flat list, name then value (undici's dispatch() and Node's writeHead() take it as is). */
export type HeaderList = (string | string[] | number)[];

const NONE = new Set<string>();

/** Names listed in a Connection header are hop-by-hop too. */
function connectionListed(headers: Headers): Set<string> {
  const value = headers.connection;
  if (value === undefined || value === 'keep-alive') return NONE;
  const list = Array.isArray(value) ? value.join(',') : value;
  return new Set(list.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

/** The headers that cross, as a flat list: no object with the request's own keys is built. */
function kept(headers: Headers, dropped: Set<string>): HeaderList {
  const listed = connectionListed(headers);
  const out: HeaderList = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || dropped.has(name) || listed.has(name)) continue;
    out.push(name, value);
  }
  return out;
}

function record(list: HeaderList): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < list.length; i += 2) out[list[i] as string] = list[i + 1] as string | string[];
  return out;
}

/**
 * Inbound headers minus credentials and hop-by-hop ones. The caller puts Authorization first for
 * each attempt: undici writes headers in list order, so no number of client headers comes before it.
 */
export function upstreamRequestHeaderList(inbound: IncomingHttpHeaders): HeaderList {
  return kept(inbound, DROPPED_REQUEST);
}

/** The same, as an object (for a WebSocket handshake). */
export function upstreamRequestHeaders(inbound: IncomingHttpHeaders): Record<string, string | string[]> {
  return record(kept(inbound, DROPPED_REQUEST));
}

/** Upstream response headers as sent, minus hop-by-hop ones. */
export function clientResponseHeaders(upstream: Headers): Record<string, string | string[]> {
  return record(kept(upstream, NONE));
}

/**
 * What the client's response head carries: the upstream's headers as sent minus hop-by-hop ones,
 * then `base` (headers the proxy set itself: CORS, rate limit) where the upstream set no header
 * of that name.
 */
export function clientResponseHeaderList(upstream: Headers, base: Record<string, string | string[] | number | undefined>): HeaderList {
  const out = kept(upstream, NONE);
  for (const name in base) {
    const value = base[name];
    if (value !== undefined && upstream[name] === undefined) out.push(name, value);
  }
  return out;
}

/** The query string without any `token` parameter (a client-supplied token is never forwarded). */
export function withoutTokenParam(search: string): string {
  const kept = queryPairs(search).filter((pair) => decodeParam(pairName(pair)) !== 'token');
  return kept.length ? `?${kept.join('&')}` : '';
}
