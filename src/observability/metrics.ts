// Prometheus metrics of one daemon, in a registry of its own (prom-client's default registry is
// process-global). Everything is driven by the events bus: a request costs its listener a few
// counter increments and two histogram observations; what can be read when Prometheus scrapes
// (token lifetimes, open streams, message counts, the account's usage) is read then, in collect().
// Label values are bounded: paths, credential sets and key names only as configured, anything
// else folded into `other`, an absent one `none`.
import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
  type CounterConfiguration,
  type GaugeConfiguration,
  type HistogramConfiguration,
} from 'prom-client';
import type { AccountUsage, Events } from '../events.js';
import type { KeyTraffic, TrafficSummary } from './status.js';
import { DURATION_BUCKETS, OTHER, LabelBounds, LightHistogram } from './metric-parts.js';
import type { ObservedSet } from './types.js';

/** Bitquery's account statuses; any other is reported as `other`. */
const ACCOUNT_STATUSES = new Set(['active', 'grace', 'blocked', 'expired']);

export interface MetricsOptions {
  events: Events;
  /** The proxied paths (PROXY_PATHS). */
  paths: readonly string[];
  /** The configured credential sets: their names bound the `credentials` label, their tokens feed the expiry gauge. */
  sets: readonly ObservedSet[];
  /** Whether a name is one of the inbound keys configured now (the keys file can change). */
  isKnownKey(name: string): boolean;
}

type Config<C> = Omit<C, 'registers'>;

const sum = (values: { value: number }[]) => values.reduce((total, v) => total + v.value, 0);

function add(map: Map<string, number>, label: string, by: number): void {
  map.set(label, (map.get(label) ?? 0) + by);
}

export class Metrics {
  readonly registry = new Registry();
  readonly labels: LabelBounds;
  private readonly unsubscribe: (() => void)[];
  private readonly openByCredentials = new Map<string, number>();
  private readonly openByKey = new Map<string, number>();
  /** Relayed WebSocket messages since the last scrape: one addition per message, folded into the counter in collect(). */
  private readonly messages = { to_client: 0, to_upstream: 0 };
  private readonly accounts = new Map<string, AccountUsage>();
  private readonly requests;
  private readonly retries;
  private readonly upstreamLimited;
  private readonly rateLimited;

  constructor(options: MetricsOptions) {
    const { events, sets } = options;
    const labels = (this.labels = new LabelBounds(options.paths, sets.map((s) => s.name), options.isKnownKey));
    collectDefaultMetrics({ register: this.registry });

    const requests = (this.requests = this.counter({
      name: 'bitquery_proxy_requests_total',
      help: 'Proxied HTTP requests, by the status the client got',
      labelNames: ['path', 'status', 'key', 'credentials'] as const,
    }));
    const requestDuration = this.lightHistogram(
      new LightHistogram('bitquery_proxy_request_duration_seconds', 'Whole proxied HTTP request at the proxy, in seconds', 'path', DURATION_BUCKETS),
    );
    const upstreamDuration = this.lightHistogram(
      new LightHistogram('bitquery_proxy_upstream_duration_seconds', "Until the upstream's response headers, in seconds", 'credentials', DURATION_BUCKETS),
    );
    const retries = (this.retries = this.counter({
      name: 'bitquery_proxy_upstream_retries_total',
      help: 'Upstream requests and handshakes retried after a 401',
      labelNames: ['credentials'] as const,
    }));
    const upstreamErrors = this.counter({
      name: 'bitquery_proxy_upstream_errors_total',
      help: 'Upstream requests and WebSocket handshakes that got no answer (timeout, refused, reset, unreachable, busy)',
      labelNames: ['credentials', 'error'] as const,
    });
    const upstreamLimited = (this.upstreamLimited = this.counter({
      name: 'bitquery_proxy_upstream_limited_total',
      help: "Bitquery's 402 (points) and 429 (rate) answers, HTTP and WebSocket handshakes",
      labelNames: ['key', 'status'] as const,
    }));
    const rateLimited = (this.rateLimited = this.counter({
      name: 'bitquery_proxy_rate_limited_total',
      help: "The proxy's own 429 answers (RATE_LIMIT_PER_MINUTE and per-key limits)",
      labelNames: ['key'] as const,
    }));
    const tokenRequests = this.counter({
      name: 'bitquery_proxy_token_requests_total',
      help: 'Token requests, by result: ok, failed (network, 5xx) or rejected (bad credentials)',
      labelNames: ['credentials', 'result'] as const,
    });
    this.gauge({
      name: 'bitquery_proxy_token_expires_in_seconds',
      help: 'Seconds the held token stays valid; 0 when there is no valid token, +Inf when unknown (static token)',
      labelNames: ['credentials'] as const,
      collect() {
        for (const set of sets) {
          const state = set.tokens.readiness();
          this.set({ credentials: set.name }, state.ready ? (state.expiresInSec ?? Infinity) : 0);
        }
      },
    });
    const openByCredentials = this.openByCredentials;
    for (const set of sets) openByCredentials.set(set.name, 0);
    this.gauge({
      name: 'bitquery_proxy_ws_streams',
      help: 'Open WebSocket streams',
      labelNames: ['credentials'] as const,
      collect() {
        for (const [name, open] of openByCredentials) this.set({ credentials: name }, open);
      },
    });
    const streamsClosed = this.counter({
      name: 'bitquery_proxy_ws_streams_closed_total',
      help: 'Closed WebSocket streams, by who ended them: client, upstream or proxy',
      labelNames: ['credentials', 'closed_by'] as const,
    });
    const messages = this.messages;
    this.counter({
      name: 'bitquery_proxy_ws_messages_total',
      help: 'Relayed WebSocket messages, by direction: to_client or to_upstream',
      labelNames: ['direction'] as const,
      collect() {
        this.inc({ direction: 'to_client' }, messages.to_client);
        this.inc({ direction: 'to_upstream' }, messages.to_upstream);
        messages.to_client = 0;
        messages.to_upstream = 0;
      },
    });
    const wsRefused = this.counter({
      name: 'bitquery_proxy_ws_refused_total',
      help: 'WebSocket handshakes refused, by error code',
      labelNames: ['reason'] as const,
    });
    this.accountGauges();

    this.unsubscribe = [
      events.on('request', (e) => {
        // Probes and unknown paths are not proxied requests.
        if (e.path === undefined) return;
        const path = labels.path(e.path);
        const key = labels.key(e.key);
        const credentials = labels.credentials(e.credentials);
        requests.inc({ path, status: e.status, key, credentials });
        requestDuration.observe(path, e.ms / 1000);
        if (e.upstreamMs !== undefined) upstreamDuration.observe(credentials, e.upstreamMs / 1000);
        if (e.attempts > 1) retries.inc({ credentials }, e.attempts - 1);
        if (e.upstreamStatus === 402 || e.upstreamStatus === 429) upstreamLimited.inc({ key, status: e.upstreamStatus });
        if (e.error === 'rate_limited') rateLimited.inc({ key });
        else if (e.error?.startsWith('upstream_')) upstreamErrors.inc({ credentials, error: e.error.slice('upstream_'.length) });
      }),
      events.on('token', (e) => tokenRequests.inc({ credentials: labels.credentials(e.credentials), result: e.result })),
      events.on('streamOpened', (e) => {
        const credentials = labels.credentials(e.credentials);
        add(this.openByCredentials, credentials, 1);
        add(this.openByKey, labels.key(e.key), 1);
        if (e.attempts > 1) retries.inc({ credentials }, e.attempts - 1);
      }),
      events.on('streamClosed', (e) => {
        const credentials = labels.credentials(e.credentials);
        add(this.openByCredentials, credentials, -1);
        add(this.openByKey, labels.key(e.key), -1);
        streamsClosed.inc({ credentials, closed_by: e.closedBy });
      }),
      events.on('streamMessage', (e) => {
        messages[e.direction] += 1;
      }),
      // HTTP refusals are counted from their request events; these are the WebSocket handshakes.
      events.on('refused', (e) => {
        if (e.transport !== 'ws') return;
        wsRefused.inc({ reason: e.error });
        const key = labels.key(e.key);
        // The proxy's own 429 is rate_limited; any other 402 or 429 is Bitquery's, passed on.
        if (e.error === 'rate_limited') rateLimited.inc({ key });
        else if (e.status === 402 || e.status === 429) upstreamLimited.inc({ key, status: e.status });
        // A handshake the upstream answered is upstream_rejected; the other upstream_ codes got no answer.
        else if (e.error.startsWith('upstream_') && e.error !== 'upstream_rejected') {
          upstreamErrors.inc({ credentials: labels.credentials(e.credentials), error: e.error.slice('upstream_'.length) });
        }
      }),
      events.on('usage', (e) => {
        this.accounts.set(labels.credentials(e.credentials), e.usage);
      }),
    ];
  }

  /** A counter in this registry (never the process-global one): how issues' own metrics join. */
  counter<T extends string>(config: Config<CounterConfiguration<T>>): Counter<T> {
    return new Counter({ ...config, registers: [this.registry] });
  }

  gauge<T extends string>(config: Config<GaugeConfiguration<T>>): Gauge<T> {
    return new Gauge({ ...config, registers: [this.registry] });
  }

  histogram<T extends string>(config: Config<HistogramConfiguration<T>>): Histogram<T> {
    return new Histogram({ ...config, registers: [this.registry] });
  }

  private lightHistogram(histogram: LightHistogram): LightHistogram {
    // Registered by shape: the registry only calls get() and reset() and reads name, help and type.
    this.registry.registerMetric(histogram as unknown as Histogram);
    return histogram;
  }

  /** The account gauges, set at scrape time from the last Usage API answer of each credential set. */
  private accountGauges(): void {
    const accounts = this.accounts;
    const fields: [string, string, (u: AccountUsage) => number][] = [
      ['bitquery_account_points_limit', "Points the billing period allows (0: no limit)", (u) => u.pointsLimit],
      ['bitquery_account_points_used', 'Points used in the billing period', (u) => u.pointsUsed],
      ['bitquery_account_requests_used', 'Requests made in the billing period', (u) => u.requestsUsed],
      ['bitquery_account_subscription_limit', 'Concurrent streams the plan allows (0: no limit)', (u) => u.subscriptionLimit],
      ['bitquery_account_period_end_timestamp_seconds', 'When the billing period ends, in Unix seconds', (u) => Date.parse(u.periodEnd) / 1000],
    ];
    for (const [name, help, pick] of fields) {
      this.gauge({
        name,
        help: `${help}, from the Bitquery Usage API`,
        labelNames: ['credentials'] as const,
        collect() {
          for (const [credentials, usage] of accounts) this.set({ credentials }, pick(usage));
        },
      });
    }
    this.gauge({
      name: 'bitquery_account_status',
      help: "The account's status from the Bitquery Usage API: 1 for the current one (active, grace, blocked, expired, other)",
      labelNames: ['credentials', 'status'] as const,
      collect() {
        this.reset();
        for (const [credentials, usage] of accounts) {
          this.set({ credentials, status: ACCOUNT_STATUSES.has(usage.status) ? usage.status : OTHER }, 1);
        }
      },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Traffic since start for the status page, folded from the counters. */
  async traffic(): Promise<TrafficSummary> {
    const [requests, retries, limited, rateLimited] = await Promise.all([
      this.requests.get(),
      this.retries.get(),
      this.upstreamLimited.get(),
      this.rateLimited.get(),
    ]);
    const keys = new Map<string, KeyTraffic>();
    const keyOf = (name: string) => {
      let entry = keys.get(name);
      if (!entry) keys.set(name, (entry = { name, requests: 0, upstreamLimited: 0, rateLimited: 0, openStreams: 0 }));
      return entry;
    };
    const byStatus: Record<string, number> = {};
    for (const { labels, value } of requests.values) {
      byStatus[labels.status!] = (byStatus[labels.status!] ?? 0) + value;
      keyOf(String(labels.key)).requests += value;
    }
    for (const { labels, value } of limited.values) keyOf(String(labels.key)).upstreamLimited += value;
    for (const { labels, value } of rateLimited.values) keyOf(String(labels.key)).rateLimited += value;
    for (const [name, open] of this.openByKey) keyOf(name).openStreams = open;
    const limitedBy = (status: number) => sum(limited.values.filter((v) => v.labels.status === status));
    return {
      requests: sum(requests.values),
      byStatus,
      retries: sum(retries.values),
      upstream402: limitedBy(402),
      upstream429: limitedBy(429),
      rateLimited: sum(rateLimited.values),
      openStreams: [...this.openByCredentials.values()].reduce((a, b) => a + b, 0),
      keys: [...keys.values()].sort((a, b) => a.name.localeCompare(b.name)),
    };
  }

  /** Stops listening to the events (the registry stays readable). */
  close(): void {
    for (const off of this.unsubscribe) off();
  }
}
