// OAuth2 client-credentials grant against Bitquery's token endpoint (Ory Hydra underneath).
import { readFileSync } from 'node:fs';
import { request, type Dispatcher } from 'undici';
import type { ClientCredentials } from '../config/index.js';
import { readCapped } from '../read-capped.js';
import { clip, scrubSecrets } from '../scrub.js';
import { TokenRequestError, type Token } from './types.js';
import { watchFile } from './watch-file.js';

/** A token response is a few hundred bytes; anything much larger is not one. */
const MAX_RESPONSE_BYTES = 64 * 1024;
/** The most of the endpoint's own words (`error`, `error_description`) kept in a message. */
const MAX_ERROR_CHARS = 64;
const MAX_DESCRIPTION_CHARS = 200;

export interface ClientCredentialsOptions {
  credentials: ClientCredentials;
  timeoutMs: number;
  /** Certificates are verified: undici's default. Tests pass their own to reach loopback servers. */
  dispatcher?: Dispatcher;
}

export class ClientCredentialsSource {
  constructor(private readonly options: ClientCredentialsOptions) {}

  /** The secret file is read for every request, so a rotated secret is used without a restart. */
  private secret(): string {
    const { clientSecret } = this.options.credentials;
    if ('value' in clientSecret) return clientSecret.value;
    try {
      return readFileSync(clientSecret.file, 'utf8').trim();
    } catch (err) {
      throw new TokenRequestError(`cannot read BITQUERY_CLIENT_SECRET_FILE (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }

  /** With BITQUERY_CLIENT_SECRET_FILE, `onChange` runs when the secret in it changes. */
  watchCredentials(onChange: () => void): { close(): void } | undefined {
    const { clientSecret } = this.options.credentials;
    if (!('file' in clientSecret)) return undefined;
    // An unreadable file is reported by the next token request, which fails saying so.
    return watchFile(clientSecret.file, this.secret(), onChange, () => undefined);
  }

  async fetch(): Promise<Token> {
    const { clientId, tokenUrl, scope, authMethod } = this.options.credentials;
    const form = new URLSearchParams({ grant_type: 'client_credentials', scope });
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    };
    const secret = this.secret();
    // What the endpoint may echo back: the secret (also inside the Basic value) never leaves in its text.
    const secrets = [secret];
    if (authMethod === 'basic') {
      // RFC 6749 2.3.1: form-urlencode each part before joining them for Basic.
      const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
      const basic = Buffer.from(`${enc(clientId)}:${enc(secret)}`).toString('base64');
      secrets.push(basic);
      headers.authorization = `Basic ${basic}`;
    } else {
      form.set('client_id', clientId);
      form.set('client_secret', secret);
    }

    const obtainedAt = Date.now();
    let status: number;
    let text: string;
    try {
      const res = await request(tokenUrl, {
        method: 'POST',
        headers,
        body: form.toString(),
        dispatcher: this.options.dispatcher,
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
      status = res.statusCode;
      text = (await readCapped(res.body, MAX_RESPONSE_BYTES)).toString('utf8');
    } catch (err) {
      throw new TokenRequestError(`token endpoint unreachable: ${describeNetworkError(err, this.options.timeoutMs)}`);
    }
    return parseTokenResponse(status, text, obtainedAt, secrets);
  }
}

export function describeNetworkError(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; code?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return `no answer within ${timeoutMs} ms`;
  const code = e.code ?? e.cause?.code;
  const message = e.message ?? e.cause?.message ?? 'unknown error';
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

/**
 * Hydra's error bodies are JSON with `error` and `error_description`; echo only those fields,
 * without the secrets (an endpoint that echoes the form it got would quote the client secret),
 * and short.
 */
function oauthError(text: string, secrets: string[]): string {
  const own = (value: string, max: number) => clip(scrubSecrets(value, secrets), max);
  try {
    const body = JSON.parse(text) as { error?: unknown; error_description?: unknown };
    if (typeof body.error === 'string') {
      const description = typeof body.error_description === 'string' ? `: ${own(body.error_description, MAX_DESCRIPTION_CHARS)}` : '';
      return `${own(body.error, MAX_ERROR_CHARS)}${description}`;
    }
  } catch {
    // not JSON: fall through to a generic description
  }
  return 'no OAuth error in the body';
}

function parseTokenResponse(status: number, text: string, obtainedAt: number, secrets: string[]): Token {
  if (status === 400 || status === 401 || status === 403) {
    throw new TokenRequestError(`token endpoint rejected the credentials (HTTP ${status}, ${oauthError(text, secrets)})`, true);
  }
  if (status !== 200) {
    throw new TokenRequestError(`token endpoint answered HTTP ${status} (${oauthError(text, secrets)})`);
  }
  let body: { access_token?: unknown; expires_in?: unknown; token_type?: unknown };
  try {
    body = JSON.parse(text);
  } catch {
    throw new TokenRequestError('token endpoint answered 200 with a body that is not JSON');
  }
  const { access_token: value, expires_in: expiresIn, token_type: type } = body ?? {};
  if (typeof value !== 'string' || value === '') {
    throw new TokenRequestError('token endpoint response has no access_token');
  }
  const seconds = typeof expiresIn === 'string' ? Number(expiresIn) : expiresIn;
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds <= 0) {
    throw new TokenRequestError('token endpoint response has no positive expires_in');
  }
  if (type !== undefined && (typeof type !== 'string' || type.toLowerCase() !== 'bearer')) {
    throw new TokenRequestError(`token endpoint issued a token of type "${clip(scrubSecrets(String(type), [...secrets, value]), 20)}", not bearer`);
  }
  return { value, obtainedAt, expiresAt: obtainedAt + seconds * 1000 };
}
