// The one way the proxy reads a query string: split on `&`, names and values decoded as forms
// encode them (`+` is a space, then percent escapes). A malformed escape never throws: the part
// is taken as it is written. Pairs are kept as written, so what is passed on is byte for byte
// what came in.

/** The pairs of a query string (without its `?`), as written. */
export function queryPairs(search: string): string[] {
  return search === '' ? [] : search.split('&');
}

/** The written name of a pair (before its first `=`). */
export function pairName(pair: string): string {
  const eq = pair.indexOf('=');
  return eq === -1 ? pair : pair.slice(0, eq);
}

/** A name or value as meant: `+` as a space, percent escapes decoded; as written if malformed. */
export function decodeParam(text: string): string {
  const spaced = text.includes('+') ? text.replace(/\+/g, ' ') : text;
  if (!spaced.includes('%')) return spaced;
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced;
  }
}

/** The decoded value of the first pair named `name`, or undefined. */
export function queryParam(search: string, name: string): string | undefined {
  for (const pair of queryPairs(search)) {
    if (decodeParam(pairName(pair)) === name) {
      const eq = pair.indexOf('=');
      return eq === -1 ? '' : decodeParam(pair.slice(eq + 1));
    }
  }
  return undefined;
}
