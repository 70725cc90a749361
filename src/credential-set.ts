// A credential set at run time: its token holder, its keep-alive upstream pool and its readiness.
// Each set has its own, so one team's rejected credentials do not affect another's.
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { Pool, type Dispatcher } from 'undici';
import type { Config, CredentialSetConfig } from './config/index.js';
import type { Events } from './events.js';
import { UpstreamSlots } from './proxy/slots.js';
import { createTokenProvider, type Readiness, type TokenProvider } from './token/index.js';

export interface CredentialSet {
  name: string;
  tokens: TokenProvider;
  /** Keep-alive pool bound to `origin`. */
  upstream: Dispatcher;
  /** Admission to `upstream`: a request takes a slot before it is dispatched. */
  slots: UpstreamSlots;
  origin: URL;
  /**
   * The set's configured secret as it is now (the client secret, or the static token), to be
   * scrubbed from text a third party sends; empty when a secret file cannot be read.
   */
  secrets(): string[];
}

function configuredSecrets(set: CredentialSetConfig): () => string[] {
  const c = set.credentials;
  const source = c.mode === 'client_credentials' ? c.clientSecret : c.token;
  if ('value' in source) return () => [source.value];
  return () => {
    try {
      return [readFileSync(source.file, 'utf8').trim()];
    } catch {
      return [];
    }
  };
}

/** Idle upstream connections are kept this long for the next request. */
const KEEP_ALIVE_MS = 30_000;

/** A token holder and a keep-alive upstream pool for each configured credential set, by name. */
export function createCredentialSets(config: Config, logger: Logger, events: Events): Map<string, CredentialSet> {
  const sets = new Map<string, CredentialSet>();
  const several = config.credentialSets.length > 1;
  for (const set of config.credentialSets) {
    const log = logger.child({ component: 'token', ...(several && { credentials: set.name }) });
    sets.set(set.name, {
      name: set.name,
      origin: set.upstream,
      secrets: configuredSecrets(set),
      tokens: createTokenProvider(set, config, log, events),
      slots: new UpstreamSlots(config.upstreamConnections, config.upstreamTimeoutMs),
      upstream: new Pool(set.upstream.origin, {
        connections: config.upstreamConnections,
        connect: { timeout: config.upstreamConnectTimeoutMs },
        keepAliveTimeout: KEEP_ALIVE_MS,
      }),
    });
  }
  return sets;
}

export type GatewayReadiness = Readiness | { ready: boolean; credentials: Record<string, Readiness> };

/**
 * One credential set: its own readiness. Several: ready while any set holds a valid token (one
 * team's revoked credentials must not take the gateway from the others), with each set's detail.
 */
export function readiness(sets: Map<string, CredentialSet>): GatewayReadiness {
  if (sets.size === 1) return [...sets.values()][0]!.tokens.readiness();
  const credentials = Object.fromEntries([...sets.values()].map((s) => [s.name, s.tokens.readiness()]));
  return { ready: Object.values(credentials).some((r) => r.ready), credentials };
}
