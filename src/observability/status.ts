// The status page: what an operator wants at a glance (token health, the account's points budget,
// traffic since start), as JSON for tools (/status.json) and as one self-contained HTML page
// (/status) that refreshes itself. It holds names and numbers only: no secret, no query text, and
// everything written into the HTML is escaped.
import type { Events } from '../events.js';
import { percentUsed, type UsageState } from './usage.js';
import type { ObservedSet } from './types.js';

export interface KeyTraffic {
  /** A configured key name, `none` (no key) or `other`. */
  name: string;
  requests: number;
  /** Bitquery's 402 and 429 answers to this key. */
  upstreamLimited: number;
  /** The proxy's own 429 answers to this key. */
  rateLimited: number;
  openStreams: number;
}

/** Traffic since start (or, with shared state, of all replicas). */
export interface TrafficSummary {
  requests: number;
  byStatus: Record<string, number>;
  retries: number;
  upstream402: number;
  upstream429: number;
  rateLimited: number;
  openStreams: number;
  keys: KeyTraffic[];
  /** Requests answered without going upstream (cache hits, coalesced queries), when the points saver runs. */
  requestsSaved?: number;
  /** Client subscriptions and the upstream streams that carry them, when streams are shared. */
  subscriptions?: number;
  upstreamStreams?: number;
}

/** Usage of all replicas together, counted through Redis (REDIS_URL). */
export interface GatewayTotals {
  /** False while Redis is unavailable: the totals are unknown then (all 0, no keys). */
  available: boolean;
  requests: number;
  status402: number;
  status429: number;
  saved: number;
  keys: { name: string; requests: number; status402: number; status429: number; saved: number }[];
}

export interface StatusSources {
  version: string;
  /** Epoch ms the daemon started. */
  startedAt: number;
  sets: readonly ObservedSet[];
  /** Token events give each set's last renewal and last error. */
  events: Events;
  traffic(): Promise<TrafficSummary>;
  /** The Usage API poller; absent when it does not run. */
  usage?: { state(name: string): Readonly<UsageState> | undefined };
  /** BUDGET_WARN_PERCENT: where the points bar turns amber. */
  budgetWarnPercent: number;
  /** The totals of all replicas, with REDIS_URL. */
  gateway?(): Promise<GatewayTotals>;
}

export interface AccountStatus {
  status: string;
  plan: string;
  pointsUsed: number;
  /** 0 means no limit. */
  pointsLimit: number;
  /** Null without a limit. */
  pointsLeft: number | null;
  percentUsed: number | null;
  requestsUsed: number;
  subscriptionLimit: number;
  periodStart: string;
  periodEnd: string;
  polledAt: string;
}

export interface CredentialStatus {
  name: string;
  mode: string;
  token: {
    valid: boolean;
    /** Null when not valid or unknown (static tokens). */
    expiresInSec: number | null;
    /** Why not valid. */
    reason: string | null;
    lastRenewalAt: string | null;
    lastError: string | null;
    lastErrorAt: string | null;
  };
  /** Whether the Usage API is polled for this set. */
  usagePolled: boolean;
  account: AccountStatus | null;
  usageError: string | null;
}

export interface StatusData {
  version: string;
  startedAt: string;
  generatedAt: string;
  uptimeSec: number;
  budgetWarnPercent: number;
  credentials: CredentialStatus[];
  traffic: TrafficSummary;
  /** With REDIS_URL: the usage of all replicas together. */
  gateway?: GatewayTotals;
}

interface TokenHistory {
  lastRenewalAt?: number;
  lastError?: string;
  lastErrorAt?: number;
}

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

export class StatusBoard {
  private readonly tokens = new Map<string, TokenHistory>();
  private readonly unsubscribe: () => void;

  constructor(private readonly sources: StatusSources) {
    this.unsubscribe = sources.events.on('token', (e) => {
      const history = this.tokens.get(e.credentials) ?? {};
      if (e.result === 'ok') history.lastRenewalAt = Date.now();
      else Object.assign(history, { lastError: e.reason ?? e.result, lastErrorAt: Date.now() });
      this.tokens.set(e.credentials, history);
    });
  }

  async data(): Promise<StatusData> {
    const { version, startedAt, sets, usage, budgetWarnPercent } = this.sources;
    const now = Date.now();
    const credentials = sets.map((set): CredentialStatus => {
      const readiness = set.tokens.readiness();
      const history = this.tokens.get(set.name) ?? {};
      const state = usage?.state(set.name);
      const account = state?.usage;
      const percent = account && percentUsed(account);
      return {
        name: set.name,
        mode: set.mode,
        token: {
          valid: readiness.ready,
          expiresInSec: readiness.ready ? (readiness.expiresInSec ?? null) : null,
          reason: readiness.ready ? null : (readiness.reason ?? 'no valid token'),
          lastRenewalAt: iso(history.lastRenewalAt),
          lastError: history.lastError ?? null,
          lastErrorAt: iso(history.lastErrorAt),
        },
        usagePolled: state !== undefined,
        account: account
          ? {
              status: account.status,
              plan: account.plan,
              pointsUsed: account.pointsUsed,
              pointsLimit: account.pointsLimit,
              pointsLeft: account.pointsLimit > 0 ? Math.max(0, account.pointsLimit - account.pointsUsed) : null,
              percentUsed: percent === undefined ? null : Math.round(percent * 10) / 10,
              requestsUsed: account.requestsUsed,
              subscriptionLimit: account.subscriptionLimit,
              periodStart: account.periodStart,
              periodEnd: account.periodEnd,
              polledAt: new Date(account.polledAt).toISOString(),
            }
          : null,
        usageError: state?.lastError ?? null,
      };
    });
    return {
      version,
      startedAt: new Date(startedAt).toISOString(),
      generatedAt: new Date(now).toISOString(),
      uptimeSec: Math.floor((now - startedAt) / 1000),
      budgetWarnPercent,
      credentials,
      traffic: await this.sources.traffic(),
      ...(this.sources.gateway && { gateway: await this.sources.gateway() }),
    };
  }

  close(): void {
    this.unsubscribe();
  }
}
