// Which headers cross the proxy. Inbound credentials never reach Bitquery; hop-by-hop headers
// belong to one connection and are never forwarded in either direction (RFC 9110 7.6.1).
import type { IncomingHttpHeaders } from 'node:http';
import { decodeParam, pairName, queryPairs } from '../query-string.js';

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

/** Names listed in a Connection header are hop-by-hop too. */
function connectionListed(headers: Headers): Set<string> {
  const value = headers.connection;
  const list = Array.isArray(value) ? value.join(',') : value ?? '';
  return new Set(list.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

function filter(headers: Headers, dropped: Set<string>): Record<string, string | string[]> {
  const listed = connectionListed(headers);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || dropped.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Inbound headers minus credentials and hop-by-hop ones; the caller adds Authorization per attempt. */
export function upstreamRequestHeaders(inbound: IncomingHttpHeaders): Record<string, string | string[]> {
  return filter(inbound, DROPPED_REQUEST);
}

const NONE = new Set<string>();

/** Upstream response headers as sent, minus hop-by-hop ones. */
export function clientResponseHeaders(upstream: Headers): Record<string, string | string[]> {
  return filter(upstream, NONE);
}

/** The query string without any `token` parameter (a client-supplied token is never forwarded). */
export function withoutTokenParam(search: string): string {
  const kept = queryPairs(search).filter((pair) => decodeParam(pairName(pair)) !== 'token');
  return kept.length ? `?${kept.join('&')}` : '';
}
