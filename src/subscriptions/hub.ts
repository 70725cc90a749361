// The registry of upstream streams: one per distinct subscription (credential set, path,
// normalized document, the operation run, canonical variables), found again by every client that asks
// the same thing, and the per-credential-set stream cap. Also the counts the metrics read.
import type { Logger } from 'pino';
import type { Events } from '../events.js';
import { identityKey, type GraphqlRequest } from '../graphql/identity.js';
import type { Principal, ReconnectReason, SharingStats, StreamCounts, Subscriber, UpstreamSettings } from './types.js';
import { UpstreamStream } from './upstream.js';

export interface HubOptions {
  settings: UpstreamSettings;
  /** WS_MAX_UPSTREAM_STREAMS for a credential set, read at each new distinct subscription; 0 = unlimited. */
  maxUpstreamStreams: (credentials: string) => number;
  log: Logger;
  events?: Events;
}

export class Hub {
  private readonly streams = new Map<string, UpstreamStream>();
  /** Streams held per credential set (what the cap counts). */
  private readonly held = new Map<string, number>();
  private readonly reconnects: SharingStats['reconnects'] = {};
  private readonly capRefusals: SharingStats['capRefusals'] = {};
  private nextId = 1;

  constructor(private readonly options: HubOptions) {}

  /**
   * Adds `subscriber` to the stream for this request, opening it if none runs. A subscription
   * (the operation type) is shared; a query or mutation sent over the socket gets a stream of its
   * own, since its single answer may already have gone by. Over the credential set's cap a new
   * stream is refused; joining a running one never is.
   */
  subscribe(principal: Principal, path: string, request: GraphqlRequest, subscriber: Subscriber): UpstreamStream | { refused: string } {
    const { credentials } = principal;
    const id = this.nextId;
    const key = request.operation === 'subscription' ? `${credentials}\0${path}\0${identityKey(request)}` : `\0${id}`;
    let stream = this.streams.get(key);
    if (!stream) {
      const cap = this.options.maxUpstreamStreams(credentials);
      const held = this.held.get(credentials) ?? 0;
      if (cap > 0 && held >= cap) {
        this.capRefusals[credentials] = (this.capRefusals[credentials] ?? 0) + 1;
        this.options.events?.emit('streamCapRefused', { credentials, scope: 'credentials' });
        return {
          refused: `the credential set "${credentials}" already holds ${held} upstream streams, its cap (WS_MAX_UPSTREAM_STREAMS=${cap}): join a running subscription or try again later`,
        };
      }
      this.nextId += 1;
      this.held.set(credentials, held + 1);
      stream = new UpstreamStream(id, principal, path, request, {
        settings: this.options.settings,
        log: this.options.log,
        ...(this.options.events && { events: this.options.events }),
        onEnd: (s) => this.forget(key, s),
        onReconnect: (s, reason) => this.reconnected(s, reason),
      });
      this.streams.set(key, stream);
    }
    stream.join(subscriber);
    return stream;
  }

  stats(): Pick<SharingStats, 'credentials' | 'reconnects' | 'capRefusals'> {
    const credentials: Record<string, StreamCounts> = {};
    for (const stream of this.streams.values()) {
      const counts = (credentials[stream.principal.credentials] ??= { upstreamStreams: 0, subscriptions: 0 });
      counts.upstreamStreams += 1;
      counts.subscriptions += stream.size;
    }
    return { credentials, reconnects: structuredClone(this.reconnects), capRefusals: { ...this.capRefusals } };
  }

  /** Ends every stream (their subscribers must have been told: the sessions close first). */
  close(): void {
    for (const stream of [...this.streams.values()]) stream.end('shutdown');
  }

  private forget(key: string, stream: UpstreamStream): void {
    this.streams.delete(key);
    const { credentials } = stream.principal;
    const left = this.held.get(credentials)! - 1;
    if (left === 0) this.held.delete(credentials);
    else this.held.set(credentials, left);
  }

  private reconnected(stream: UpstreamStream, reason: ReconnectReason): void {
    const { credentials } = stream.principal;
    const counts = (this.reconnects[credentials] ??= {});
    counts[reason] = (counts[reason] ?? 0) + 1;
    this.options.events?.emit('upstreamReconnect', { credentials, reason });
  }
}
