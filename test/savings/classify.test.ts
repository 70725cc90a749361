// Which requests the points saver shares, and under which key: the pure classification, with
// properties over generated documents, variables and headers.
import t, { type Test } from 'tap';
import fc from 'fast-check';
import type { IncomingHttpHeaders } from 'node:http';
import { classify, requestCacheControl, type ClassifyOptions, type RequestFacts } from '../../src/savings/classify.js';
import { canonicalJson } from '../../src/graphql/identity.js';

const QUERY = '{ EVM(network: eth) { Blocks(limit: {count: 1}) { Block { Number } } } }';
const ON: ClassifyOptions = { coalesce: true, cache: true, cacheTtlMs: 5000, maxParseBytes: 64 * 1024 };

function post(payload: unknown, headers: IncomingHttpHeaders = {}, extra: Partial<RequestFacts> = {}): RequestFacts {
  return {
    method: 'POST',
    path: '/graphql',
    search: '',
    body: Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)),
    headers: { 'content-type': 'application/json', ...headers },
    credentials: 'default',
    ...extra,
  };
}

function getFacts(search: string, headers: IncomingHttpHeaders = {}): RequestFacts {
  return { method: 'GET', path: '/graphql', search, body: undefined, headers, credentials: 'default' };
}

function keyOf(facts: RequestFacts, options = ON): string {
  const c = classify(facts, options);
  if (c.kind !== 'shared') throw new Error(`expected shared, got bypass ${c.reason}`);
  return c.key;
}

function reasonOf(facts: RequestFacts, options = ON): string {
  const c = classify(facts, options);
  return c.kind === 'bypass' ? c.reason : 'shared';
}

t.test('a POST query is shared under a key that names the credential set and holds no query text', async (t) => {
  const c = classify(post({ query: QUERY, variables: { n: 1 } }), ON);
  t.equal(c.kind, 'shared');
  if (c.kind !== 'shared') return;
  t.match(c.key, /^default:[A-Za-z0-9_-]{43}$/);
  t.same({ coalesce: c.coalesce, lookup: c.lookup, ttlMs: c.ttlMs, maxAgeMs: c.maxAgeMs }, { coalesce: true, lookup: true, ttlMs: 5000, maxAgeMs: undefined });
});

t.test('a GET carries query, variables (JSON text) and operationName in the query string', async (t) => {
  const search = new URLSearchParams({ query: QUERY, variables: '{"b":2,"a":1}', operationName: '' }).toString();
  const reordered = new URLSearchParams({ variables: '{"a":1,"b":2}', query: `  ${QUERY} # comment` }).toString();
  t.equal(keyOf(getFacts(search)), keyOf(getFacts(reordered)), 'parameter order, key order, blanks and comments do not count');
  t.not(keyOf(getFacts(search)), keyOf(post({ query: QUERY, variables: { a: 1, b: 2 } })), 'GET and POST are apart');
  t.equal(reasonOf(getFacts('query=%7B%20a%20%7D&variables=%7Bnot-json')), 'not_graphql', 'variables that are not JSON');
  t.equal(reasonOf(getFacts(`query=${encodeURIComponent('{ a }')}&query=${encodeURIComponent('{ b }')}`)), 'not_graphql', 'a repeated GraphQL parameter is ambiguous');
  t.equal(reasonOf(getFacts('query=%E0%A4%A')), 'not_graphql', 'malformed percent-encoding');
  t.equal(reasonOf(getFacts('')), 'not_graphql', 'no query at all');
  t.equal(reasonOf(getFacts(`&query=${encodeURIComponent('{ a }')}&&extensions=`)), 'shared', 'empty pairs and an empty extensions parameter are ignored');
});

t.test('a POST body and a GET query string with the same text are never taken for one another', async (t) => {
  const search = new URLSearchParams({ query: QUERY }).toString();
  t.equal(reasonOf(getFacts(search)), 'shared');
  t.equal(reasonOf(post(search)), 'not_graphql', 'the same text as a POST body is not JSON');
  t.equal(reasonOf(post(search)), 'not_graphql', 'and stays so when asked again');
  const body = JSON.stringify({ query: QUERY });
  t.equal(reasonOf(post(body)), 'shared');
  t.equal(reasonOf(getFacts(body)), 'not_graphql');
});

t.test('the query string: token dropped, other parameters in any order, but their values count', async (t) => {
  const body = { query: QUERY };
  const plain = keyOf(post(body));
  t.equal(keyOf(post(body, {}, { search: 'token=secret' })), plain, 'a client-supplied token is not part of the identity');
  t.equal(keyOf(post(body, {}, { search: 'a=1&b=2' })), keyOf(post(body, {}, { search: 'b=2&a=1&token=x' })));
  t.not(keyOf(post(body, {}, { search: 'a=1' })), keyOf(post(body, {}, { search: 'a=2' })));
  t.not(keyOf(post(body, {}, { search: 'a=1' })), plain);
  t.not(keyOf(post(body, {}, { search: 'a=b%3Dc' })), keyOf(post(body, {}, { search: 'a%3Db=c' })), 'a decoded = or & cannot make two parameters look alike');
  t.not(keyOf(post(body, {}, { path: '/eap' })), plain, 'the path counts');
});

t.test('what is never shared', async (t) => {
  t.equal(reasonOf(post({ query: 'mutation { a }' })), 'mutation');
  t.equal(reasonOf(post({ query: 'subscription { a }' })), 'subscription');
  t.equal(reasonOf(post({ query: 'query A { a } mutation B { b }', operationName: 'B' })), 'mutation', 'the operation that would run decides');
  t.equal(reasonOf(post({ query: 'query A { a } mutation B { b }', operationName: 'A' })), 'shared');
  t.equal(reasonOf(post([{ query: QUERY }])), 'not_graphql', 'a batch');
  t.equal(reasonOf(post({ query: QUERY, variables: [1] })), 'not_graphql', 'variables that are a list');
  t.equal(reasonOf(post({ query: QUERY, variables: 'a' })), 'not_graphql', 'variables that are text');
  t.equal(reasonOf(post({ query: QUERY, variables: null })), 'shared');
  t.equal(reasonOf(post({ query: QUERY, operationName: 5 })), 'not_graphql', 'an operationName that is not text');
  const two = 'query A { a } query B { b }';
  t.not(keyOf(post({ query: two, operationName: 'A' })), keyOf(post({ query: two, operationName: 'B' })), 'one document, two operations: two keys');
  t.equal(reasonOf(post({ query: two })), 'not_graphql', 'two operations and no operationName');
  const one = 'query Latest { a }';
  t.equal(keyOf(post({ query: one, operationName: 'Latest' })), keyOf(post({ query: one })), 'one operation: naming it or leaving the name out is the same query');
  t.equal(reasonOf(post({ query: one, operationName: 'Other' })), 'not_graphql', 'an operationName the document does not hold');
  t.equal(reasonOf(post('{"query":')), 'not_graphql', 'not JSON');
  t.equal(reasonOf(post('null')), 'not_graphql');
  t.equal(reasonOf(post({ query: '{ a ' })), 'not_graphql', 'a syntax error');
  t.equal(reasonOf(post({ extensions: { persistedQuery: { sha256Hash: 'abc' } } })), 'not_graphql', 'a persisted query without its text');
  t.equal(reasonOf(post({ query: QUERY }, { 'content-type': 'text/plain' })), 'not_graphql', 'another content type');
  t.equal(reasonOf(post({ query: QUERY }, { 'content-type': undefined })), 'not_graphql', 'no content type');
  t.equal(reasonOf(post({ query: QUERY }, { 'content-type': 'Application/JSON; charset=utf-8', 'content-encoding': 'identity' })), 'shared');
  t.equal(reasonOf(post({ query: QUERY }, { 'content-encoding': 'gzip' })), 'not_graphql', 'an encoded body is not decoded');
  t.equal(reasonOf({ ...post({ query: QUERY }), method: 'PUT' }), 'not_graphql');
  t.equal(reasonOf({ ...post({ query: QUERY }), body: undefined }), 'not_graphql');
});

t.test('work is bounded: larger bodies and query strings are not parsed', async (t) => {
  const small: ClassifyOptions = { ...ON, maxParseBytes: 100 };
  const big = { query: `{ a${' '.repeat(200)} }` };
  t.equal(reasonOf(post(big), small), 'too_large');
  t.equal(reasonOf(post(big)), 'shared');
  t.equal(reasonOf(getFacts(`query=${'%20'.repeat(40)}%7Ba%7D`), small), 'too_large');
});

t.test('Cache-Control and Pragma', async (t) => {
  const body = { query: QUERY };
  t.equal(reasonOf(post(body, { 'cache-control': 'no-store' })), 'no_store');
  t.equal(reasonOf(post(body, { 'cache-control': 'max-age=5, No-Store' })), 'no_store');
  t.equal(reasonOf(post(body, { 'cache-control': 'no-cache' }), { ...ON, cacheTtlMs: 0 }), 'no_cache', 'nothing to refresh: not shared at all');
  const refresh = classify(post(body, { 'cache-control': 'no-cache' }), ON);
  t.match(refresh, { kind: 'shared', coalesce: false, lookup: false, ttlMs: 5000 }, 'with a cache: not looked up, not coalesced, but stored');
  t.match(classify(post(body, { pragma: 'no-cache' }), ON), { coalesce: false, lookup: false }, 'Pragma: no-cache without Cache-Control');
  t.match(classify(post(body, { pragma: 'no-cache', 'cache-control': 'max-age=9' }), ON), { coalesce: true, lookup: true, maxAgeMs: 9000 }, 'Cache-Control wins over Pragma');
  t.same(requestCacheControl({ 'cache-control': 'max-age=10, max-age="3", max-age=x, max-age, foo=bar' }), { noStore: false, noCache: false, maxAgeMs: 3000 });
  t.same(requestCacheControl({ 'cache-control': ['max-age=0', 'no-cache'] } as unknown as IncomingHttpHeaders), { noStore: false, noCache: true, maxAgeMs: 0 });
  t.same(requestCacheControl({}), { noStore: false, noCache: false });
});

t.test('COALESCE, the cache and per-key TTLs decide what applies', async (t) => {
  const body = post({ query: QUERY });
  const off: ClassifyOptions = { ...ON, coalesce: false, cacheTtlMs: 0 };
  t.equal(reasonOf(body, off), 'off');
  t.equal(reasonOf(body, { ...ON, coalesce: false, cache: false }), 'off', 'no store: TTLs do not matter');
  t.equal(reasonOf(post({ query: QUERY }, { 'cache-control': 'no-store' }), { ...ON, coalesce: false, cache: false }), 'off', 'with nothing to share, no header is read');
  t.match(classify(body, { ...ON, coalesce: false }), { kind: 'shared', coalesce: false, lookup: true, ttlMs: 5000 });
  t.match(classify(body, { ...ON, cacheTtlMs: 0 }), { kind: 'shared', coalesce: true, lookup: false, ttlMs: 0 });
  t.match(classify({ ...body, cacheTtlMs: 0 }, ON), { kind: 'shared', coalesce: true, lookup: false, ttlMs: 0 }, 'a key with cacheTtlMs 0 is never cached');
  t.equal(reasonOf({ ...body, cacheTtlMs: 0 }, { ...ON, coalesce: false }), 'off');
  t.match(classify({ ...body, cacheTtlMs: 700 }, { ...ON, cacheTtlMs: 0 }), { lookup: true, ttlMs: 700 }, "a key's own TTL turns the cache on for it");
  t.match(classify({ ...body, cacheTtlMs: 700 }, { ...ON, cache: false }), { lookup: false, ttlMs: 0 });
});

t.test('answer-changing headers are in the key, normalized', async (t) => {
  const body = { query: QUERY };
  const gzip = keyOf(post(body, { 'accept-encoding': 'gzip, br' }));
  t.equal(keyOf(post(body, { 'accept-encoding': 'GZIP,br' })), gzip);
  t.equal(keyOf(post(body, { 'accept-encoding': ['gzip', 'br'] } as unknown as IncomingHttpHeaders)), gzip, 'repeated header lines');
  t.not(keyOf(post(body, { 'accept-encoding': 'br, gzip' })), gzip, 'a different preference order is another key (never a wrong answer)');
  t.not(keyOf(post(body)), gzip);
  t.not(keyOf(post(body, { accept: 'application/json' })), keyOf(post(body, { accept: 'application/graphql-response+json' })));
  t.not(keyOf(post(body, { origin: 'http://localhost:3000' })), keyOf(post(body, { origin: 'http://localhost:3001' })));
  t.equal(keyOf(post(body, { 'x-request-id': 'a', 'user-agent': 'x' })), keyOf(post(body, { 'x-request-id': 'b' })), 'ids and agents do not count');
  t.not(keyOf(post({ ...body, extensions: { a: 1 } })), keyOf(post(body)), 'extensions count');
});

// ---------------------------------------------------------------------------------------------
// Properties

const name = fc.stringMatching(/^[_a-z][_0-9a-z]{0,6}$/);
interface Field {
  name: string;
  children: Field[];
}
const field: fc.Arbitrary<Field> = fc.letrec<{ field: Field }>((tie) => ({
  field: fc.record({ name, children: fc.oneof({ depthSize: 'small', withCrossShrink: true }, fc.constant<Field[]>([]), fc.array(tie('field'), { minLength: 1, maxLength: 3 })) }),
})).field;
const selection = fc.array(field, { minLength: 1, maxLength: 4 });

function tokens(fields: Field[]): string[] {
  return ['{', ...fields.flatMap((f) => [f.name, ...(f.children.length ? tokens(f.children) : [])]), '}'];
}

/** GraphQL's ignored tokens: blanks, line ends, commas, comments. */
const separator = fc.array(fc.constantFrom(' ', '\n', '\t', ',', '\r\n', ' # a comment, {not} parsed\n'), { minLength: 1, maxLength: 3 }).map((s) => s.join(''));

function spaced(toks: string[], seps: string[]): string {
  return toks.map((tok, i) => tok + (seps[i % seps.length] ?? ' ')).join('');
}

/** The same JSON value with every object's keys in reverse order. */
function reversed(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reversed);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).reverse().map(([k, v]) => [k, reversed(v)]));
  return value;
}

/** Runs the property (100 generated cases) as one assertion, failing with fast-check's counterexample. */
function holds<Ts extends [unknown, ...unknown[]]>(t: Test, what: string, property: fc.IProperty<Ts>): void {
  t.doesNotThrow(() => fc.assert(property), what);
}

const variables = fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 });

t.test('property: blanks, commas, comments, JSON layout and key order never change the key', async (t) => {
  holds(t, 'the same query written differently has one key',
    fc.property(selection, fc.array(separator, { minLength: 1, maxLength: 8 }), fc.array(separator, { minLength: 1, maxLength: 8 }), variables, (fields, a, b, vars) => {
      const toks = tokens(fields);
      const one = post({ query: spaced(toks, a), variables: vars });
      const other = post(JSON.stringify({ variables: reversed(vars), query: spaced(toks, b) }, null, 2));
      return keyOf(one) === keyOf(other);
    }),
  );
});

t.test('property: different variables, credential sets or Accept-Encoding never share a key', async (t) => {
  const toks = tokens([{ name: 'a', children: [] }]);
  holds(t, 'different variables',
    fc.property(variables, variables, (x, y) => {
      fc.pre(canonicalJson(x) !== canonicalJson(y));
      return keyOf(post({ query: spaced(toks, [' ']), variables: x })) !== keyOf(post({ query: spaced(toks, [' ']), variables: y }));
    }),
  );
  const setName = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
  holds(t, 'different credential sets',
    fc.property(setName, setName, variables, (s1, s2, vars) => {
      fc.pre(s1 !== s2);
      const body = { query: QUERY, variables: vars };
      return keyOf(post(body, {}, { credentials: s1 })) !== keyOf(post(body, {}, { credentials: s2 }));
    }),
  );
  const coding = fc.array(fc.constantFrom('gzip', 'br', 'deflate', 'identity', 'zstd', '*', 'gzip;q=0.5'), { maxLength: 3 }).map((l) => l.join(', '));
  holds(t, 'different Accept-Encoding',
    fc.property(coding, coding, (e1, e2) => {
      fc.pre(e1.replace(/ /g, '') !== e2.replace(/ /g, ''));
      const body = { query: QUERY };
      return keyOf(post(body, { 'accept-encoding': e1 })) !== keyOf(post(body, { 'accept-encoding': e2 }));
    }),
  );
});
