// The two GraphQL-over-WebSocket subprotocols, as the proxy speaks them with its clients: parsing
// what a client sends (bounded and validated, with the close codes each protocol prescribes) and
// encoding what the proxy sends. Pure: no sockets, no timers.
//
//  - `graphql-transport-ws` (the graphql-ws library): connection_init/connection_ack, ping/pong,
//    subscribe, next, error, complete. Violations close the socket: 4400 bad message, 4401 subscribe
//    before the ack, 4409 an id already in use, 4429 a second connection_init (4403 and 4408 are the
//    session's: key refused, init timeout).
//  - `graphql-ws` (subscriptions-transport-ws, "legacy", Bitquery's safe default): connection_init/
//    connection_ack, ka, start, data, error, complete, stop, connection_terminate. Like the servers of
//    that library, an unknown message type or a bad `start` gets an `error` message, not a close; only
//    what is not a JSON object with a string `type` closes with 4400.

export const TRANSPORT = 'graphql-transport-ws';
export const LEGACY = 'graphql-ws';
export type Protocol = typeof TRANSPORT | typeof LEGACY;

/** The subprotocol the proxy serves itself: the client's first choice among the two, or undefined. */
export function pickProtocol(offered: Iterable<string>): Protocol | undefined {
  for (const p of offered) if (p === TRANSPORT || p === LEGACY) return p;
  return undefined;
}

/** Longest operation id accepted (clients use short counters or UUIDs). */
export const MAX_ID_CHARS = 128;

/** What a subscribe (transport) or start (legacy) asks for, shape-checked. */
export interface OperationPayload {
  query: string;
  variables?: Record<string, unknown> | null;
  operationName?: string | null;
}

export type ClientMessage =
  | { type: 'init'; payload?: Record<string, unknown> }
  | { type: 'ping'; payload?: Record<string, unknown> }
  | { type: 'pong' }
  | { type: 'subscribe'; id: string; idJson: string; payload: OperationPayload }
  | { type: 'complete'; id: string }
  | { type: 'terminate' }
  /** Close the socket with this code and reason. */
  | { type: 'close'; code: number; reason: string }
  /** Legacy only: answer with an `error` message (for `idJson` when known) and carry on. */
  | { type: 'invalid'; idJson?: string; message: string };

export const CLOSE = {
  badRequest: 4400,
  unauthorized: 4401,
  forbidden: 4403,
  initTimeout: 4408,
  duplicateId: 4409,
  tooManyInits: 4429,
} as const;

const close = (code: number, reason: string): ClientMessage => ({ type: 'close', code, reason: fitReason(reason) });

/** A close reason must fit in 123 bytes of UTF-8. */
export function fitReason(reason: string): string {
  if (Buffer.byteLength(reason) <= 123) return reason;
  let cut = reason.slice(0, 120);
  while (Buffer.byteLength(cut) > 120) cut = cut.slice(0, -1);
  return `${cut}...`;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The shape of an operation payload, or what is wrong with it. */
function operationPayload(payload: unknown): OperationPayload | string {
  if (!isObject(payload)) return 'the payload must be an object with a query';
  const { query, variables, operationName } = payload;
  if (typeof query !== 'string' || query === '') return 'the payload must hold a query string';
  if (variables !== undefined && variables !== null && !isObject(variables)) return 'variables must be an object';
  if (operationName !== undefined && operationName !== null && typeof operationName !== 'string') return 'operationName must be a string';
  return { query, ...(variables != null && { variables }), ...(operationName != null && { operationName }) };
}

function decode(data: Buffer | string, isBinary: boolean): Record<string, unknown> | undefined {
  if (isBinary) return undefined;
  try {
    const msg: unknown = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
    return isObject(msg) && typeof msg.type === 'string' ? msg : undefined;
  } catch {
    return undefined;
  }
}

/** One `graphql-transport-ws` client message; anything off the specification closes with 4400. */
export function parseTransport(data: Buffer | string, isBinary: boolean): ClientMessage {
  const msg = decode(data, isBinary);
  if (!msg) return close(CLOSE.badRequest, 'Invalid message received');
  const { type, id, payload } = msg;
  const optionalPayload = payload === undefined || payload === null || isObject(payload);
  switch (type) {
    case 'connection_init':
      if (!optionalPayload) return close(CLOSE.badRequest, 'Invalid message received: connection_init payload must be an object');
      return { type: 'init', ...(isObject(payload) && { payload }) };
    case 'ping':
      if (!optionalPayload) return close(CLOSE.badRequest, 'Invalid message received: ping payload must be an object');
      return { type: 'ping', ...(isObject(payload) && { payload }) };
    case 'pong':
      return { type: 'pong' };
    case 'subscribe': {
      if (typeof id !== 'string' || id === '' || id.length > MAX_ID_CHARS) {
        return close(CLOSE.badRequest, `Invalid message received: subscribe needs an id string of 1 to ${MAX_ID_CHARS} characters`);
      }
      const op = operationPayload(payload);
      if (typeof op === 'string') return close(CLOSE.badRequest, `Invalid message received: ${op}`);
      return { type: 'subscribe', id, idJson: JSON.stringify(id), payload: op };
    }
    case 'complete':
      if (typeof id !== 'string' || id === '' || id.length > MAX_ID_CHARS) return close(CLOSE.badRequest, 'Invalid message received: complete needs an id');
      return { type: 'complete', id };
    default:
      return close(CLOSE.badRequest, `Invalid message received: unknown type ${String(type).slice(0, 40)}`);
  }
}

/** A legacy id: a string or a number (subscriptions-transport-ws sends numbers as strings, some clients not). */
function legacyId(id: unknown): string | undefined {
  if (typeof id === 'string' && id !== '' && id.length <= MAX_ID_CHARS) return id;
  if (typeof id === 'number' && Number.isSafeInteger(id)) return String(id);
  return undefined;
}

/** One legacy `graphql-ws` client message. */
export function parseLegacy(data: Buffer | string, isBinary: boolean): ClientMessage {
  const msg = decode(data, isBinary);
  if (!msg) return close(CLOSE.badRequest, 'Invalid message received');
  const { type, payload } = msg;
  const id = legacyId(msg.id);
  // The id goes back exactly as it came: a client that sent 1 gets 1, not "1".
  const idJson = id === undefined ? undefined : JSON.stringify(msg.id);
  switch (type) {
    case 'connection_init':
      return { type: 'init', ...(isObject(payload) && { payload }) };
    case 'start': {
      if (id === undefined) return { type: 'invalid', message: `start needs an id (a string of 1 to ${MAX_ID_CHARS} characters, or an integer)` };
      const op = operationPayload(payload);
      if (typeof op === 'string') return { type: 'invalid', idJson, message: op };
      return { type: 'subscribe', id, idJson: idJson!, payload: op };
    }
    case 'stop':
      if (id === undefined) return { type: 'invalid', message: 'stop needs an id' };
      return { type: 'complete', id };
    case 'connection_terminate':
      return { type: 'terminate' };
    default:
      return { type: 'invalid', ...(idJson !== undefined && { idJson }), message: `unknown message type ${String(type).slice(0, 40)}` };
  }
}

export function parseClientMessage(protocol: Protocol, data: Buffer | string, isBinary: boolean): ClientMessage {
  return protocol === TRANSPORT ? parseTransport(data, isBinary) : parseLegacy(data, isBinary);
}

// ---------------------------------------------------------------------------------------------
// Server messages. Event payloads arrive as UTF-8 JSON bytes, encoded once per upstream event, and
// are framed per subscriber without being parsed or stringified again.

export const CONNECTION_ACK = '{"type":"connection_ack"}';
export const KEEP_ALIVE = '{"type":"ka"}';

export function pong(payload?: Record<string, unknown>): string {
  return payload ? JSON.stringify({ type: 'pong', payload }) : '{"type":"pong"}';
}

/** Legacy: the connection was refused (sent before the close). */
export function connectionError(message: string): string {
  return JSON.stringify({ type: 'connection_error', payload: { message } });
}

const SUFFIX = Buffer.from('}');

/** The bytes before an event's payload for one subscription: `{"type":"next"|"data","id":…,"payload":`. */
export function nextPrefix(protocol: Protocol, idJson: string): Buffer {
  return Buffer.from(`{"type":"${protocol === TRANSPORT ? 'next' : 'data'}","id":${idJson},"payload":`);
}

/** A whole next/data message from its prefix and the event's payload JSON. */
export function frameNext(prefix: Buffer, payload: Buffer): Buffer {
  return Buffer.concat([prefix, payload, SUFFIX], prefix.length + payload.length + 1);
}

export function complete(idJson: string): string {
  return `{"type":"complete","id":${idJson}}`;
}

/** A GraphQL error as sent in `error` messages. */
export interface ErrorLike {
  message: string;
  [field: string]: unknown;
}

/**
 * The errors of an upstream legacy `error` payload (an error object, an array of them, or
 * `{errors: [...]}`), as a non-empty list.
 */
export function errorsOf(payload: unknown): ErrorLike[] {
  const isError = (e: unknown): e is ErrorLike => isObject(e) && typeof e.message === 'string';
  const list = Array.isArray(payload) ? payload : isObject(payload) && Array.isArray(payload.errors) ? payload.errors : [payload];
  const errors = list.filter(isError);
  return errors.length > 0 ? errors : [{ message: 'the upstream reported an error without a message' }];
}

/**
 * An `error` message for one subscription: transport's payload is the list of errors; legacy's is
 * the error itself when there is one (as subscriptions-transport-ws servers send it), else the list.
 */
export function errorMessage(protocol: Protocol, idJson: string | undefined, errors: readonly ErrorLike[]): string {
  const payload = protocol === TRANSPORT ? errors : errors.length === 1 ? errors[0] : errors;
  return `{"type":"error"${idJson === undefined ? '' : `,"id":${idJson}`},"payload":${JSON.stringify(payload)}}`;
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/**
 * The proxy key a browser put in connection_init's payload (its `connectionParams`):
 * `{"apiKey": "…"}`, `{"Authorization": "Bearer …"}`, or either inside `headers` as some clients
 * nest them. Undefined when there is none.
 */
export function initKey(payload: Record<string, unknown> | undefined): string | undefined {
  if (!payload) return undefined;
  const nested = isObject(payload.headers) ? payload.headers : {};
  for (const source of [payload, nested]) {
    const apiKey = source.apiKey;
    if (typeof apiKey === 'string' && apiKey.trim() !== '') return apiKey.trim();
    const auth = source.Authorization ?? source.authorization;
    const match = typeof auth === 'string' ? BEARER.exec(auth) : null;
    if (match) return match[1];
  }
  return undefined;
}
