// What a client's WebSocket handshake must be to be relayed, and what of it goes upstream.
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { ProxyError } from '../../errors.js';
import { upstreamRequestHeaders } from '../headers.js';

const KEY = /^[+/0-9A-Za-z]{22}==$/;
/** RFC 7230 token characters: what a subprotocol name may be made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The client's handshake headers that the upstream connection sets for itself. */
const HANDSHAKE_HEADERS = new Set([
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-protocol',
  'sec-websocket-accept',
]);

/** The offered subprotocols in order, or undefined if the header is malformed. */
export function offeredProtocols(header: string | undefined): string[] | undefined {
  if (header === undefined) return [];
  const list = header.split(',').map((p) => p.trim());
  if (list.some((p) => !TOKEN.test(p)) || new Set(list).size !== list.length) return undefined;
  return list;
}

/** The subprotocols a valid WebSocket handshake offers, or the 400 it gets. */
export function validHandshake(req: IncomingMessage): string[] | ProxyError {
  const protocols = offeredProtocols(req.headers['sec-websocket-protocol']);
  const version = req.headers['sec-websocket-version'];
  if (
    req.method !== 'GET' ||
    req.headers.upgrade?.toLowerCase() !== 'websocket' ||
    !KEY.test(req.headers['sec-websocket-key'] ?? '') ||
    (version !== '13' && version !== '8') ||
    protocols === undefined
  ) {
    return new ProxyError('bad_request', 'not a valid WebSocket handshake (only WebSocket upgrades are served)');
  }
  return protocols;
}

/** The client's headers that go on the upstream handshake: no credentials, no hop-by-hop, no handshake fields. */
export function upstreamHandshakeHeaders(inbound: IncomingHttpHeaders): Record<string, string | string[]> {
  const headers = upstreamRequestHeaders(inbound);
  for (const name of HANDSHAKE_HEADERS) delete headers[name];
  return headers;
}

/** ws(s)://host of an upstream origin. */
export function wsOrigin(origin: URL): string {
  return `${origin.protocol === 'https:' ? 'wss:' : 'ws:'}//${origin.host}`;
}
