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

/** The caller's requests a minute: its key's `rateLimitPerMinute`, else RATE_LIMIT_PER_MINUTE; 0 = no limit. */
export function rateLimitOf(caller: Caller, config: Pick<Config, 'rateLimitPerMinute'>): number {
  return caller.policy.rateLimitPerMinute ?? config.rateLimitPerMinute;
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

/** What a request (or WebSocket handshake) shows of itself: Node's IncomingMessage fits. */
export interface CallerRequest {
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
}

/** A Host header value: the name (bracketed for IPv6), without the port. */
const HOST_HEADER = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::\d{0,5})?$/i;

/** Whether `host` (a Host header) names this proxy: loopback names always, ALLOWED_HOSTS' too. */
export function hostAllowed(config: Config, host: string): boolean {
  if (config.allowedHosts === '*') return true;
  const name = HOST_HEADER.exec(host)?.[1]?.toLowerCase();
  if (name === undefined) return false;
  return isLoopbackHost(name) || config.allowedHosts.includes(name);
}

/**
 * Whether a web page elsewhere is using this browser to reach the proxy: a DNS-rebinding page
 * (a Host that names the attacker's site), or a request the browser marks cross-site (an `<img>`,
 * a form, a no-cors fetch) whose Origin, if any, is not allowed. Plain clients (curl, SDKs)
 * send no Sec-Fetch-Site and their own Host, and pass. The probes never come here.
 */
export function siteRefusal(config: Config, req: CallerRequest): ProxyError | undefined {
  let hosts = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') hosts += 1;
  }
  if (hosts > 1) return new ProxyError('bad_request', 'the request has more than one Host header');
  const host = req.headers.host;
  if (host !== undefined && !hostAllowed(config, host)) {
    return new ProxyError('misdirected_request', `the Host ${host.slice(0, 100)} is not a name this proxy answers to: add it to ALLOWED_HOSTS (comma-separated names, or *)`);
  }
  // A browser always says where a request comes from when it matters, and only allowed origins
  // get through (`null`, which sandboxed pages send, included).
  const origin = req.headers.origin;
  if (typeof origin === 'string') {
    if (!originAllowed(config, origin)) {
      return new ProxyError('forbidden_origin', `requests from the origin ${origin.slice(0, 100)} are not allowed (CORS_ORIGINS)`);
    }
    return undefined;
  }
  const site = req.headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return new ProxyError('cross_site');
  return undefined;
}

/** The caller, or the refusal to answer (bad_request, misdirected_request, cross_site, forbidden_origin, unauthorized, forbidden). */
export type ResolveCaller = (req: CallerRequest) => Caller | ProxyError;

export function createCallerResolver(config: Config, keys: KeyStore, credentialSets: Map<string, CredentialSet>): ResolveCaller {
  const policyOf = (name?: string): KeyPolicy => (name === undefined ? {} : config.keyPolicies[name] ?? {});
  return (req) => {
    // A web page elsewhere must not spend the user's points through a proxy on localhost.
    const refusal = siteRefusal(config, req);
    if (refusal) return refusal;
    const { headers } = req;
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
