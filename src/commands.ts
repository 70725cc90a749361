// `bitquery-proxy token` and `bitquery-proxy check`: one-shot uses of the configured credentials
// for scripts and for setting up. Neither ever prints the client secret; `check` never prints the token.
import { request } from 'undici';
import { readSecretFile, type Config, type CredentialSetConfig } from './config/index.js';
import { describeNetworkError, ClientCredentialsSource } from './token/client-credentials.js';
import { certificateRefused, upstreamFailure } from './errors.js';

/** A failed step, with what to do about it. */
export class CommandError extends Error {
  override name = 'CommandError';
}

/** The credential set the one-shot commands use: the default one, else the first. */
function commandSet(config: Config): CredentialSetConfig {
  return config.credentialSets.find((s) => s.name === config.defaultCredentials) ?? config.credentialSets[0]!;
}

/** One token with the configured credentials (the static token as it is configured). */
export async function fetchToken(config: Config): Promise<{ value: string; expiresInSec?: number }> {
  const { credentials } = commandSet(config);
  if (credentials.mode === 'static') {
    const { token } = credentials;
    return { value: 'value' in token ? token.value : readSecretFile(token.file, 'BITQUERY_TOKEN_FILE') };
  }
  const source = new ClientCredentialsSource({ credentials, timeoutMs: config.tokenTimeoutMs });
  try {
    const token = await source.fetch();
    return { value: token.value, expiresInSec: Math.round((token.expiresAt - token.obtainedAt) / 1000) };
  } catch (err) {
    const hint = (err as { rejected?: boolean }).rejected ? ': check BITQUERY_CLIENT_ID and BITQUERY_CLIENT_SECRET' : '';
    throw new CommandError(`${(err as Error).message}${hint}`);
  }
}

/** What a non-200 answer to the test query most likely means (see the Bitquery facts in the README). */
const UPSTREAM_HINTS: Record<number, string> = {
  401: 'the token was not accepted: for a static token, generate a new one',
  402: 'the account has no active billing period or no points left',
  403: 'the gateway refused the request: check BITQUERY_UPSTREAM and PROXY_PATHS',
  404: 'no GraphQL endpoint at that path: check BITQUERY_UPSTREAM and PROXY_PATHS',
  429: 'rate, session or stream limit reached: wait and try again',
};

/** Validates by doing: a token, then one tiny query upstream. Returns the report lines. */
export async function check(config: Config, say: (line: string) => void): Promise<void> {
  const { credentials, upstream, name } = commandSet(config);
  const mode =
    credentials.mode === 'static'
      ? `static token from ${'file' in credentials.token ? 'BITQUERY_TOKEN_FILE' : 'BITQUERY_TOKEN'}`
      : `client credentials for client id ${credentials.clientId} at ${credentials.tokenUrl.href}`;
  const count = config.credentialSets.length;
  const which = count > 1 ? ` (credential set "${name}" of ${count})` : '';
  say(`configuration  ok: ${mode}, upstream ${upstream.origin}${which}`);

  const token = await fetchToken(config);
  say(`token          ok: ${token.expiresInSec === undefined ? 'static, lifetime unknown' : `expires in ${token.expiresInSec} s`}`);

  const url = `${upstream.origin}${config.paths[0]}`;
  let status: number;
  try {
    const res = await request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token.value}` },
      body: JSON.stringify({ query: '{ __typename }' }),
      headersTimeout: config.upstreamTimeoutMs,
      bodyTimeout: config.upstreamTimeoutMs,
      signal: AbortSignal.timeout(config.upstreamTimeoutMs),
    });
    status = res.statusCode;
    await res.body.dump();
  } catch (err) {
    // A timeout or a refused certificate is said best by the catalogue; other failures by the socket error itself.
    const failure = upstreamFailure(err);
    const detail = failure.status === 502 && !certificateRefused(err) ? describeNetworkError(err, config.upstreamTimeoutMs) : failure.message;
    throw new CommandError(`upstream failed: POST ${url}: ${detail}`);
  }
  if (status !== 200) {
    throw new CommandError(`upstream failed: POST ${url} answered ${status}: ${UPSTREAM_HINTS[status] ?? 'see the upstream status'}`);
  }
  say(`upstream       ok: POST ${url} answered 200`);
}
