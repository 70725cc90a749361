// The URL rules of the configuration, and the one loopback rule: plain http, a listen address
// without inbound keys and browser origins allowed by default are all decided by isLoopbackHost.
import { ConfigError } from './errors.js';

const LOOPBACK_HOST = /^(?:localhost|127(?:\.\d{1,3}){3}|::1|\[::1\])$/i;

/** localhost, 127.0.0.0/8 and ::1 (with or without brackets), in any letter case. */
export function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK_HOST.test(hostname);
}

/** Secrets must not cross a network in clear text: plain http is only for loopback (tests, the demo). */
export function secureUrl(value: string, variable: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${variable} must be an absolute URL, got "${value}"`);
  }
  if (url.username || url.password) throw new ConfigError(`${variable} must not hold credentials`);
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:' && isLoopbackHost(url.hostname)) return url;
  throw new ConfigError(`${variable} must use https:// (plain http:// is accepted only for loopback addresses)`);
}

/** An upstream: a secure URL that is an origin only (paths come from PROXY_PATHS). */
export function upstreamOrigin(value: string, variable: string): URL {
  const url = secureUrl(value, variable);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
    throw new ConfigError(`${variable} must be an origin without a path, like https://streaming.bitquery.io (paths come from PROXY_PATHS)`);
  }
  return url;
}
