// Who is calling, and with which credentials: one decision shared by HTTP requests and WebSocket
// handshakes, taken before anything is sent upstream.
import type { IncomingHttpHeaders } from 'node:http';
import type { Config, KeyPolicy } from '../config/index.js';
import { isLoopbackHost } from '../config/urls.js';
import type { CredentialSet } from '../credential-set.js';
import { ProxyError } from '../errors.js';
import type { KeyStore } from './key-store.js';
import { presentedKey } from './keys.js';

export interface Caller {
  /** The key's name; absent when no keys are configured. */
  keyName?: string;
  credentialSet: CredentialSet;
  policy: KeyPolicy;
}

/** scheme://host[:port] of an http(s) origin, capturing the host. */
const HTTP_ORIGIN = /^https?:\/\/(\[[^\]/]*\]|[^/:]*)(?::\d{1,5})?$/i;

/** Whether a browser page from `origin` may use the proxy (CORS and the Origin check alike). */
export function originAllowed(config: Config, origin: string): boolean {
  if (config.corsOrigins === 'loopback') {
    const host = HTTP_ORIGIN.exec(origin)?.[1];
    return host !== undefined && isLoopbackHost(host);
  }
  return config.corsOrigins.includes('*') || config.corsOrigins.includes(origin);
}

/** The caller, or the refusal to answer (unauthorized, forbidden, forbidden_origin). */
export type ResolveCaller = (headers: IncomingHttpHeaders) => Caller | ProxyError;

export function createCallerResolver(config: Config, keys: KeyStore, credentialSets: Map<string, CredentialSet>): ResolveCaller {
  const policyOf = (name?: string): KeyPolicy => (name === undefined ? {} : config.keyPolicies[name] ?? {});
  return (headers) => {
    // A web page elsewhere must not spend the user's points through a proxy on localhost: a
    // browser always says where a request comes from, and only allowed origins get through
    // (`null`, which sandboxed pages send, included).
    const origin = headers.origin;
    if (typeof origin === 'string' && !originAllowed(config, origin)) {
      return new ProxyError('forbidden_origin', `requests from the origin ${origin.slice(0, 100)} are not allowed (CORS_ORIGINS)`);
    }
    let keyName: string | undefined;
    if (keys.enabled) {
      const presented = presentedKey(headers);
      if (presented === undefined) return new ProxyError('unauthorized');
      const key = keys.find(presented);
      if (!key) return new ProxyError('unauthorized', 'the API key is not valid');
      keyName = key.name;
    }
    const policy = policyOf(keyName);
    const credentialSet = credentialSets.get(policy.credentials ?? config.defaultCredentials ?? '');
    if (!credentialSet) return new ProxyError('forbidden', `the key "${keyName}" maps to no credentials`);
    return { keyName, credentialSet, policy };
  };
}
