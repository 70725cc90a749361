// One parser for a credential set's fields, whether they come from the environment (the set
// `default`) or from an entry of PROXY_CONFIG: the same rules, messages that name the fields as
// the user wrote them.
import { readFileSync } from 'node:fs';
import { ConfigError } from './errors.js';
import { secureUrl, upstreamOrigin } from './urls.js';

export type AuthMethod = 'post' | 'basic';

export interface ClientCredentials {
  mode: 'client_credentials';
  clientId: string;
  /** Either the secret itself or a file to read it from at each token request. */
  clientSecret: { value: string } | { file: string };
  tokenUrl: URL;
  scope: string;
  authMethod: AuthMethod;
}

export interface StaticToken {
  mode: 'static';
  token: { value: string } | { file: string };
}

/** A credential set as configured: who to ask for tokens and where to send requests. */
export interface CredentialSetConfig {
  name: string;
  credentials: ClientCredentials | StaticToken;
  upstream: URL;
}

export type CredentialField = 'clientId' | 'clientSecret' | 'clientSecretFile' | 'token' | 'tokenFile' | 'tokenUrl' | 'scope' | 'authMethod' | 'upstream';

export const CREDENTIAL_FIELDS: readonly CredentialField[] = ['clientId', 'clientSecret', 'clientSecretFile', 'token', 'tokenFile', 'tokenUrl', 'scope', 'authMethod', 'upstream'];

/** What an entry may leave out: the environment's settings (which have defaults). */
export type CredentialDefaults = Record<'tokenUrl' | 'scope' | 'authMethod' | 'upstream', string>;

/** How messages name the set and its fields. */
export interface CredentialNaming {
  /** The set as a whole: `the environment`, `PROXY_CONFIG credentials.team-a`. */
  subject: string;
  /** A field as the user wrote it: `BITQUERY_CLIENT_ID`, `clientId`. */
  field(name: CredentialField): string;
  /** A field with where it is: `BITQUERY_CLIENT_ID`, `PROXY_CONFIG credentials.team-a.clientId`. */
  located(name: CredentialField): string;
}

/**
 * A secret goes into an HTTP header or form as it is: a line break (or any control character) in
 * it would fail at the first request, far from the mistake, so it is refused at start-up.
 */
export function checkSecretText(value: string, variable: string): string {
  if (/[\x00-\x1f\x7f]/.test(value)) throw new ConfigError(`${variable} holds a line break or another control character: remove it`);
  return value;
}

/** Reads a secret file now, so a wrong path fails at start-up rather than at the first request. */
export function readSecretFile(file: string, variable: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${variable}=${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}): point it at a readable file`);
  }
  const value = text.trim();
  if (!value) throw new ConfigError(`${variable}=${file} is empty: put the secret in it`);
  return checkSecretText(value, `${variable}=${file}`);
}

/** What a set must hold, for the messages about a set with both modes or none. */
export function modeChoice({ subject, field: f }: CredentialNaming): string {
  return `${subject} needs exactly one of: ${f('clientId')} with ${f('clientSecret')} or ${f('clientSecretFile')} (client credentials); ${f('token')} or ${f('tokenFile')} (static token)`;
}

/**
 * The credential set named `name` from its fields, or undefined when no credential field is set
 * at all (the caller decides whether that is a mistake). Secret files are read once here.
 */
export function parseCredentialSet(
  name: string,
  fields: Partial<Record<CredentialField, string>>,
  defaults: CredentialDefaults,
  naming: CredentialNaming,
): CredentialSetConfig | undefined {
  const { clientId, clientSecret, clientSecretFile, token, tokenFile } = fields;
  const clientMode = Boolean(clientId || clientSecret || clientSecretFile);
  const staticMode = Boolean(token || tokenFile);
  if (!clientMode && !staticMode) return undefined;
  if (clientMode && staticMode) throw new ConfigError(`${modeChoice(naming)}, not both`);
  const credentials = staticMode ? staticToken(fields, naming) : clientCredentials(fields, defaults, naming);
  return { name, credentials, upstream: upstreamOrigin(fields.upstream ?? defaults.upstream, naming.located('upstream')) };
}

function staticToken({ token, tokenFile }: Partial<Record<CredentialField, string>>, naming: CredentialNaming): StaticToken {
  if (token && tokenFile) throw new ConfigError(`${naming.subject}: set ${naming.field('token')} or ${naming.field('tokenFile')}, not both`);
  if (tokenFile) readSecretFile(tokenFile, naming.located('tokenFile'));
  if (token) checkSecretText(token, naming.located('token'));
  return { mode: 'static', token: token ? { value: token } : { file: tokenFile! } };
}

function clientCredentials(fields: Partial<Record<CredentialField, string>>, defaults: CredentialDefaults, naming: CredentialNaming): ClientCredentials {
  const { clientId, clientSecret, clientSecretFile } = fields;
  const { subject, field: f } = naming;
  const needs = `${subject} needs ${f('clientId')} and one of ${f('clientSecret')} or ${f('clientSecretFile')}`;
  if (!clientId) throw new ConfigError(`${f('clientId')} is missing: ${needs}`);
  if (clientSecret && clientSecretFile) throw new ConfigError(`${subject}: set ${f('clientSecret')} or ${f('clientSecretFile')}, not both`);
  if (!clientSecret && !clientSecretFile) throw new ConfigError(`${f('clientSecret')} is missing: ${needs}`);
  if (clientSecretFile) readSecretFile(clientSecretFile, naming.located('clientSecretFile'));
  if (clientSecret) checkSecretText(clientSecret, naming.located('clientSecret'));
  const authMethod = fields.authMethod ?? defaults.authMethod;
  if (authMethod !== 'post' && authMethod !== 'basic') throw new ConfigError(`${naming.located('authMethod')} must be "post" or "basic"`);
  return {
    mode: 'client_credentials',
    clientId,
    clientSecret: clientSecret ? { value: clientSecret } : { file: clientSecretFile! },
    tokenUrl: secureUrl(fields.tokenUrl ?? defaults.tokenUrl, naming.located('tokenUrl')),
    scope: fields.scope ?? defaults.scope,
    authMethod,
  };
}
