// A fake Bitquery and a proxy process pointed at it, torn down with the test. Every proxy started
// here is checked at teardown: no secret the test used may appear in its output, in any encoding
// (test/helpers/secrets.ts).
import type { Test } from 'tap';
import { FakeBitquery, type FakeBitqueryOptions } from '../fake-bitquery/index.js';
import { spawnProxy, type ProxyProcess, type SpawnOptions } from './proxy-process.js';
import { assertNoLeaks } from './secrets.js';

export const SECRET = 'fake-client-secret-4f9c2d7e1b';

export interface Pair {
  fake: FakeBitquery;
  proxy: ProxyProcess;
  /** Strings that must never appear in the proxy's output; a test may add its own. */
  secrets: string[];
}

export interface PairOptions {
  fake?: FakeBitqueryOptions;
  /** Proxy environment on top of the client-credentials defaults pointing at the fake. */
  env?: Record<string, string>;
  spawn?: SpawnOptions;
}

/** Environment for client-credentials mode against `fake`, with quick retries for tests. */
export function fakeEnv(fake: FakeBitquery): Record<string, string> {
  return {
    BITQUERY_CLIENT_ID: fake.clientId,
    BITQUERY_CLIENT_SECRET: fake.clientSecret,
    BITQUERY_TOKEN_URL: fake.tokenUrl,
    BITQUERY_UPSTREAM: fake.url,
    TOKEN_RETRY_MIN_MS: '20',
    TOKEN_RETRY_MAX_MS: '200',
    LOG_LEVEL: 'trace',
  };
}

/** Starts a fake Bitquery for `t`, closed at teardown. */
export async function startFake(t: Test, options: FakeBitqueryOptions = {}): Promise<FakeBitquery> {
  const fake = await FakeBitquery.start({ clientSecret: SECRET, ...options });
  t.teardown(() => fake.close());
  return fake;
}

/**
 * Starts a proxy for `t` with `env` as its whole configuration; at teardown it is stopped and
 * its output checked for `secrets` and every token `fake` issued.
 */
export async function startProxy(t: Test, fake: FakeBitquery, env: Record<string, string>, options: SpawnOptions = {}, secrets: string[] = [SECRET]): Promise<ProxyProcess> {
  const proxy = await spawnProxy(env, options);
  t.teardown(async () => {
    await proxy.stop();
    assertNoLeaks(proxy.output(), [...secrets, ...fake.issuedTokens]);
  });
  return proxy;
}

/** Starts a fake and a proxy in client-credentials mode against it, for `t`. */
export async function startPair(t: Test, options: PairOptions = {}): Promise<Pair> {
  const fake = await startFake(t, options.fake);
  const secrets = [SECRET];
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), ...options.env }, options.spawn, secrets);
  return { fake, proxy, secrets };
}
