// The GraphQL operation name of a request, for the access log: from `operationName`, else from
// a named `query Foo` / `subscription Foo` / `mutation Foo`. The body is not parsed: only its
// first bytes are scanned, so a large body costs no more than a small one.
import { queryParam } from '../query-string.js';

const SCAN_BYTES = 4096;
const OPERATION_NAME = /"operationName"\s*:\s*"([_A-Za-z][_0-9A-Za-z]{0,99})"/;
const NAMED_IN_JSON = /"query"\s*:\s*"\s*(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]{0,99})/;
const NAMED = /^\s*(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]{0,99})/;
const NAME = /^[_A-Za-z][_0-9A-Za-z]{0,99}$/;

export function operationName(body: Buffer | undefined, search: string): string | undefined {
  if (body && body.length > 0) {
    const text = body.toString('latin1', 0, Math.min(body.length, SCAN_BYTES));
    return OPERATION_NAME.exec(text)?.[1] ?? NAMED_IN_JSON.exec(text)?.[1] ?? NAMED.exec(text)?.[1];
  }
  if (!search) return undefined;
  const name = queryParam(search, 'operationName');
  if (name !== undefined && NAME.test(name)) return name;
  return NAMED.exec(queryParam(search, 'query') ?? '')?.[1];
}
