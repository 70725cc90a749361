// Share mode end to end: the proxy as users start it (dist/cli.js) against the fake Bitquery,
// whose WebSocket side bills like Bitquery (stop/complete change nothing, only closing a socket
// ends a stream). Helpers for reading the proxy's metrics and the fake's streams.
import type { FakeBitquery } from '../fake-bitquery/index.js';
import type { ProxyProcess } from '../helpers/proxy-process.js';

export const wsUrl = (proxy: ProxyProcess, path = '/graphql') => `${proxy.url.replace(/^http/, 'ws')}${path}`;

/** The admin listener's address, from the start-up line. */
export async function adminOf(proxy: ProxyProcess): Promise<string> {
  const line = await proxy.waitForLog((l) => l.msg.startsWith('admin listening on '));
  return line.url as string;
}

/** One sample of a metric (undefined when absent); `labels` as written in the exposition, e.g. `credentials="default"`. */
export async function metric(admin: string, name: string, labels: string): Promise<number | undefined> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The fake's running `events` streams of `topic`. */
export const streamsOf = (fake: FakeBitquery, topic: string) => fake.activeStreams().filter((s) => s.topic === topic);

export const EVENTS = 'subscription Dex($topic: String) { events(topic: $topic) { seq topic } }';
/** The same subscription written differently: whitespace, a comment. */
export const EVENTS_AGAIN = `# the same, reformatted
subscription Dex($topic: String) {
  events(topic: $topic) { seq   topic }
}`;
