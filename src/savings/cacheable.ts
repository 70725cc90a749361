// Whether an upstream answer may be kept and replayed: a 200 whose JSON body has no top-level
// `errors` (Bitquery reports GraphQL errors inside HTTP 200), in a content encoding the proxy
// can read, that the upstream did not mark `no-store`, and that varies on nothing outside the key.
//
// Content encodings: none/identity, gzip, deflate and br are decoded to look inside, off the
// event loop (zlib runs in libuv's thread pool), with the decoded size capped; an answer in any
// other encoding (zstd, a chain of several) is never cached, only shared while in flight.
import { promisify } from 'node:util';
import { brotliDecompress, gunzip, inflate, type ZlibOptions } from 'node:zlib';

type Decoder = (body: Buffer, options: ZlibOptions) => Promise<Buffer>;

const DECODERS: Record<string, Decoder> = {
  gzip: promisify(gunzip),
  'x-gzip': promisify(gunzip),
  deflate: promisify(inflate),
  br: promisify(brotliDecompress),
};

/** Request headers in the key (see classify.ts): a Vary naming only these is safe to cache under it. */
const KEYED = new Set(['accept', 'accept-encoding', 'origin']);

const BACKSLASH_U = Buffer.from('\\u');
const ERRORS = Buffer.from('"errors"');

function header(headers: Record<string, string | string[]>, name: string): string {
  const value = headers[name];
  return (Array.isArray(value) ? value.join(',') : value ?? '').toLowerCase();
}

/** Whether a JSON text's top-level object has no `errors` member. */
function withoutErrors(json: Buffer): boolean {
  // Fast path: a top-level "errors" key must appear as these eight bytes unless it is written
  // with \u escapes; a body holding neither needs no parse.
  if (json.indexOf(ERRORS) === -1 && json.indexOf(BACKSLASH_U) === -1) return /^\s*\{/.test(json.toString('latin1', 0, 64));
  try {
    const value: unknown = JSON.parse(json.toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) && !Object.hasOwn(value, 'errors');
  } catch {
    return false;
  }
}

/**
 * Resolves true when the answer may be cached. `maxDecodedBytes` bounds the work: a compressed
 * body that inflates past it is not cached.
 */
export async function cacheable(status: number, headers: Record<string, string | string[]>, body: Buffer, maxDecodedBytes: number): Promise<boolean> {
  if (status !== 200) return false;
  if (/(^|,)\s*no-store\s*(,|$)/.test(header(headers, 'cache-control'))) return false;
  const vary = header(headers, 'vary');
  if (!vary.split(',').every((name) => name.trim() === '' || KEYED.has(name.trim()))) return false;
  const type = header(headers, 'content-type').split(';', 1)[0]!.trim();
  if (type !== 'application/json' && type !== 'application/graphql-response+json') return false;
  const encoding = header(headers, 'content-encoding').trim();
  if (encoding === '' || encoding === 'identity') return body.length <= maxDecodedBytes && withoutErrors(body);
  const decode = DECODERS[encoding];
  if (!decode) return false;
  try {
    return withoutErrors(await decode(body, { maxOutputLength: maxDecodedBytes }));
  } catch {
    return false;
  }
}
