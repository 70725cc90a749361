// Which requests the points saver may share, and under which key. Pure: the facts of one request
// in, a decision out. A request is shared only when it is a GraphQL query whose answer depends on
// nothing but what goes into the key; everything else passes through as today ("bypass").
//
// The key: the method, the path, the query string's other parameters, the credential set, the
// normalized document, the operation run (graphql/identity.ts), the variables and extensions as
// canonical JSON, and the request headers that can change the answer:
//   Accept-Encoding  a gzip answer must never reach a client that did not ask for gzip;
//   Accept           the media type of the answer;
//   Origin           the upstream may answer with CORS headers naming the origin.
// Not in the key: the caller's own key (answers depend on the credential set, not on who asks),
// Content-Type (only application/json bodies are shared at all), X-Request-Id and tracing
// headers (they name a request, they do not change its answer), and the client's max-age, which
// bounds the age of what the client accepts, not what the answer is.
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { LRUCache } from 'lru-cache';
import { canonicalJson, graphqlRequest, identityKey, type GraphqlRequest } from '../graphql/identity.js';

/** The facts of one request on a proxied path, as the HTTP handler has them. */
export interface RequestFacts {
  method: string;
  /** The configured proxied path (`/graphql`). */
  path: string;
  /** The query string as received, without `?`. */
  search: string;
  body: Buffer | undefined;
  headers: IncomingHttpHeaders;
  /** The name of the credential set the request is sent with. */
  credentials: string;
  /** The caller's key's `cacheTtlMs` in PROXY_CONFIG, when it has one (0 = never cached). */
  cacheTtlMs?: number;
}

export interface ClassifyOptions {
  /** COALESCE: identical queries in flight at once go upstream once. */
  coalesce: boolean;
  /** Whether a response cache exists at all. */
  cache: boolean;
  /** CACHE_TTL_MS: how long an answer is kept when the key sets no TTL of its own; 0 = not kept. */
  cacheTtlMs: number;
  /** A body (or a GET query string) larger than this is not parsed: it passes through. */
  maxParseBytes: number;
}

export type BypassReason =
  /** Not a GraphQL request the saver understands: another method, content type or encoding, a batch, a syntax error. */
  | 'not_graphql'
  /** Larger than maxParseBytes: not parsed. */
  | 'too_large'
  | 'mutation'
  | 'subscription'
  /** The client said Cache-Control: no-store. */
  | 'no_store'
  /** The client said no-cache, and there is no cache to refresh. */
  | 'no_cache'
  /** Neither coalescing nor a cache applies to this request (COALESCE=false, cache off for it). */
  | 'off';

export type Classification =
  | { kind: 'bypass'; reason: BypassReason }
  | {
      kind: 'shared';
      /** `<credential set>:<sha256 of the identity, base64url>`. */
      key: string;
      credentials: string;
      /** May join, or lead, identical queries in flight. */
      coalesce: boolean;
      /** May be answered from the cache. */
      lookup: boolean;
      /** How long its answer is kept, when cacheable; 0 = not kept. */
      ttlMs: number;
      /** The client's Cache-Control max-age, in ms: only an entry younger than this will do. */
      maxAgeMs?: number;
    };

/** Parameters of a GET that carry the GraphQL request itself (normalized apart). */
const GRAPHQL_PARAMS = new Set(['query', 'variables', 'operationName', 'extensions']);

interface CacheControl {
  noStore: boolean;
  noCache: boolean;
  maxAgeMs?: number;
}

function headerText(value: string | string[] | undefined): string {
  return Array.isArray(value) ? value.join(',') : value ?? '';
}

/** The directives of Cache-Control (or HTTP/1.0's `Pragma: no-cache` when there is none) that the saver honours. */
export function requestCacheControl(headers: IncomingHttpHeaders): CacheControl {
  const result: CacheControl = { noStore: false, noCache: false };
  const value = headerText(headers['cache-control']);
  if (value === '') {
    result.noCache = /(^|,)\s*no-cache\s*(,|$)/i.test(headerText(headers.pragma));
    return result;
  }
  for (const part of value.split(',')) {
    const [rawName, rawArg] = part.split('=', 2) as [string, string | undefined];
    const name = rawName.trim().toLowerCase();
    if (name === 'no-store') result.noStore = true;
    else if (name === 'no-cache') result.noCache = true;
    else if (name === 'max-age' && rawArg !== undefined) {
      const arg = rawArg.trim().replace(/^"(.*)"$/, '$1');
      if (!/^\d{1,9}$/.test(arg)) continue;
      const ms = Number(arg) * 1000;
      result.maxAgeMs = Math.min(result.maxAgeMs ?? ms, ms);
    }
  }
  return result;
}

/** A header value as a key part: lower case, no blanks, repeated headers joined. */
function keyHeader(value: string | string[] | undefined): string {
  return headerText(value).toLowerCase().replace(/[ \t]/g, '');
}

function isJsonBody(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  if (type === undefined || type.split(';', 1)[0]!.trim().toLowerCase() !== 'application/json') return false;
  const encoding = headers['content-encoding'];
  return encoding === undefined || encoding.trim().toLowerCase() === 'identity';
}

interface Payload {
  payload: Record<string, unknown>;
  /** The query string's other parameters, sorted, as a key part. */
  rest: string;
}

/** Splits a query string into its GraphQL parameters (for a GET) and the rest; undefined when ambiguous or malformed. */
function splitSearch(search: string, graphqlFromSearch: boolean): Payload | undefined {
  const payload: Record<string, unknown> = {};
  const rest: string[] = [];
  if (search !== '') {
    for (const pair of search.split('&')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      let name: string;
      let value: string;
      try {
        name = decodeURIComponent((eq === -1 ? pair : pair.slice(0, eq)).replace(/\+/g, ' '));
        value = eq === -1 ? '' : decodeURIComponent(pair.slice(eq + 1).replace(/\+/g, ' '));
      } catch {
        return undefined;
      }
      if (name === 'token') continue;
      if (graphqlFromSearch && GRAPHQL_PARAMS.has(name)) {
        if (name in payload) return undefined;
        payload[name] = value;
      } else {
        rest.push(JSON.stringify([name, value]));
      }
    }
  }
  return { payload, rest: rest.sort().join(',') };
}

/** The GraphQL request of a GET: query, operationName, and variables and extensions as JSON text. */
function fromSearch(params: Record<string, unknown>): Record<string, unknown> | undefined {
  const payload: Record<string, unknown> = { query: params.query };
  if (params.operationName !== undefined && params.operationName !== '') payload.operationName = params.operationName;
  for (const name of ['variables', 'extensions']) {
    const text = params[name] as string | undefined;
    if (text === undefined || text === '') continue;
    try {
      payload[name] = JSON.parse(text);
    } catch {
      return undefined;
    }
  }
  return payload;
}

function fromBody(text: string): Record<string, unknown> | undefined {
  try {
    const payload: unknown = JSON.parse(text);
    return payload !== null && typeof payload === 'object' && !Array.isArray(payload) ? (payload as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** What a GraphQL payload comes to: the digest of its identity (a query), or why it is not shared. */
type Parsed = { digest: string; rest: string } | { reason: 'not_graphql' | 'mutation' | 'subscription' };

/** Size of a memo entry: its key and value text, two bytes a character, plus overhead. */
const textSize = (text: string) => text.length * 2 + 128;

/**
 * Parsed payloads by method and text (a POST body, a GET query string): dashboards and retries send
 * byte-identical requests, which then cost one lookup instead of JSON and GraphQL parsing. Pure
 * (text in, result out), so one memo serves every saver in the process.
 */
const parsedTexts = new LRUCache<string, Parsed>({ maxSize: 4 * 1024 * 1024, sizeCalculation: (_value, text) => textSize(text) });

/**
 * Normalized documents by their text and operationName: the same query with other variables
 * (the usual traffic) skips GraphQL parsing and printing. `false`: not a runnable request.
 */
const documents = new LRUCache<string, Omit<GraphqlRequest, 'variables'> | false>({
  maxSize: 4 * 1024 * 1024,
  sizeCalculation: (value, key) => textSize(key) + (value ? textSize(value.document) : 0),
});

function normalized(query: unknown, operationName: unknown): Omit<GraphqlRequest, 'variables'> | false {
  const key = JSON.stringify([query, operationName ?? null]);
  let found = documents.get(key);
  if (found === undefined) {
    const request = graphqlRequest({ query, operationName });
    found = false;
    if (request) {
      // Kept without the variables: they vary per request, the rest per document.
      const { variables: _variables, ...op } = request;
      found = op;
    }
    documents.set(key, found);
  }
  return found;
}

function parsePayload(payload: Record<string, unknown> | undefined, rest: string): Parsed {
  if (!payload) return { reason: 'not_graphql' };
  const { query, operationName, variables, extensions } = payload;
  // graphqlRequest's rule for variables, checked here since the memo holds documents only.
  if (variables !== undefined && variables !== null && (typeof variables !== 'object' || Array.isArray(variables))) return { reason: 'not_graphql' };
  const op = normalized(query, operationName);
  if (!op) return { reason: 'not_graphql' };
  if (op.operation !== 'query') return { reason: op.operation };
  const identity = `${canonicalJson(extensions ?? null)}\n${identityKey({ ...op, variables: canonicalJson(variables ?? {}) })}`;
  return { digest: createHash('sha256').update(identity).digest('base64url'), rest };
}

function memo(text: string, parse: () => Parsed): Parsed {
  let parsed = parsedTexts.get(text);
  if (parsed === undefined) {
    parsed = parse();
    parsedTexts.set(text, parsed);
  }
  return parsed;
}

function parseGet(search: string): Parsed {
  const split = splitSearch(search, true);
  return split ? parsePayload(fromSearch(split.payload), split.rest) : { reason: 'not_graphql' };
}

function bypass(reason: BypassReason): Classification {
  return { kind: 'bypass', reason };
}

export function classify(facts: RequestFacts, options: ClassifyOptions): Classification {
  // Nothing to share at all (COALESCE=false, no cache): no header or body is looked at.
  if (!options.coalesce && !options.cache) return bypass('off');
  const { method, headers, search } = facts;
  const control = requestCacheControl(headers);
  if (control.noStore) return bypass('no_store');
  const ttlMs = options.cache ? facts.cacheTtlMs ?? options.cacheTtlMs : 0;
  if (control.noCache && ttlMs === 0) return bypass('no_cache');
  if (!options.coalesce && ttlMs === 0) return bypass('off');

  let parsed: Parsed;
  if (method === 'GET') {
    if (search.length > options.maxParseBytes) return bypass('too_large');
    parsed = memo(`GET ${search}`, () => parseGet(search));
  } else if (method === 'POST' && facts.body !== undefined && isJsonBody(headers)) {
    if (facts.body.length > options.maxParseBytes) return bypass('too_large');
    const split = search === '' ? { rest: '' } : splitSearch(search, false);
    if (!split) return bypass('not_graphql');
    const text = facts.body.toString('utf8');
    parsed = memo(`POST ${text}`, () => parsePayload(fromBody(text), ''));
    if ('digest' in parsed) parsed = { digest: parsed.digest, rest: split.rest };
  } else {
    return bypass('not_graphql');
  }
  if ('reason' in parsed) return bypass(parsed.reason);

  const identity = [
    facts.credentials,
    method,
    facts.path,
    parsed.rest,
    keyHeader(headers['accept-encoding']),
    keyHeader(headers.accept),
    keyHeader(headers.origin),
    parsed.digest,
  ].join('\n');
  const key = `${facts.credentials}:${createHash('sha256').update(identity).digest('base64url')}`;
  return {
    kind: 'shared',
    key,
    credentials: facts.credentials,
    // A client asking for a fresh answer does not take one already under way for others.
    coalesce: options.coalesce && !control.noCache,
    lookup: ttlMs > 0 && !control.noCache,
    ttlMs,
    ...(control.maxAgeMs !== undefined && { maxAgeMs: control.maxAgeMs }),
  };
}
