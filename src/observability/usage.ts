// The account's points budget, from Bitquery's Usage API: each credential set's account is polled
// with its own token, the last answer is kept for the metrics and the status page (and published
// as a `usage` event), and crossing the budget thresholds is logged once per billing period.
// A failing poll backs off on its own timer and never touches proxying; the token is never logged.
import type { Logger } from 'pino';
import { request, type Dispatcher } from 'undici';
import type { AccountUsage, Events } from '../events.js';
import { readCapped } from '../read-capped.js';
import { describeNetworkError } from '../token/client-credentials.js';
import { backoffMs } from '../token/refresher.js';
import type { ObservedSet } from './types.js';

/** A usage answer is about 600 bytes; anything much larger is not one. */
const MAX_RESPONSE_BYTES = 64 * 1024;
const DEFAULT_TIMEOUT_MS = 10_000;
/** First retry after a failed poll (or the poll interval when shorter); doubles up to an hour or the interval. */
const RETRY_MIN_MS = 5_000;
const RETRY_MAX_MS = 3_600_000;
/** The Usage API answers for client-credentials and static tokens alike. */
const POLLED_MODES = new Set(['client_credentials', 'static']);
/** Statuses that stop queries: logged as warnings. */
const BAD_STATUSES = new Set(['blocked', 'expired']);

/** The answer was not the documented shape. */
export class UsageFormatError extends Error {
  override name = 'UsageFormatError';
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function object(parent: Json, field: string, where: string): Json {
  const v = parent[field];
  if (!isObject(v)) throw new UsageFormatError(`${where}${field} is not an object`);
  return v;
}

function count(parent: Json, field: string, where: string): number {
  const v = parent[field];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new UsageFormatError(`${where}${field} is not a number >= 0`);
  return v;
}

function instant(parent: Json, field: string, where: string): string {
  const v = parent[field];
  const ms = typeof v === 'string' ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms)) throw new UsageFormatError(`${where}${field} is not a timestamp`);
  return new Date(ms).toISOString();
}

/** Validates a Usage API body (shape in the README and shared/bitquery-api.md). */
export function parseUsage(text: string, polledAt: number): AccountUsage {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new UsageFormatError('the body is not JSON');
  }
  if (!isObject(body)) throw new UsageFormatError('the body is not a JSON object');
  const { status } = body;
  if (typeof status !== 'string' || !/^[A-Za-z_-]{1,32}$/.test(status)) throw new UsageFormatError('status is not a word');
  const period = object(body, 'billing_period', '');
  const limits = object(period, 'limits', 'billing_period.');
  const usage = object(period, 'usage', 'billing_period.');
  const plan = period.plan_name;
  return {
    status,
    plan: typeof plan === 'string' ? plan.slice(0, 100) : '',
    periodStart: instant(period, 'started_at', 'billing_period.'),
    periodEnd: instant(period, 'ended_at', 'billing_period.'),
    pointsLimit: count(limits, 'points_limit', 'billing_period.limits.'),
    subscriptionLimit: count(limits, 'subscription_limit', 'billing_period.limits.'),
    pointsUsed: count(usage, 'points_usage', 'billing_period.usage.'),
    requestsUsed: count(usage, 'requests_usage', 'billing_period.usage.'),
    polledAt,
  };
}

/** Percent of the points limit used; undefined when there is no limit (0). */
export function percentUsed(usage: AccountUsage): number | undefined {
  return usage.pointsLimit > 0 ? (usage.pointsUsed / usage.pointsLimit) * 100 : undefined;
}

/** The thresholds warned about: BUDGET_WARN_PERCENT, then 95 and 100 (those above it). */
export function budgetThresholds(warnPercent: number): number[] {
  return [...new Set([warnPercent, 95, 100])].filter((t) => t >= warnPercent).sort((a, b) => a - b);
}

export interface BudgetWarning {
  msg: string;
  fields: Record<string, unknown>;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

/**
 * Which warnings an answer calls for: each threshold and each bad status once per billing period
 * (keyed by its start). A jump past several thresholds at once is one warning, for the highest.
 */
export class BudgetWatch {
  private period?: string;
  private warnedPercent = 0;
  private readonly warnedStatuses = new Set<string>();

  constructor(private readonly thresholds: readonly number[]) {}

  check(usage: AccountUsage): BudgetWarning[] {
    if (usage.periodStart !== this.period) {
      this.period = usage.periodStart;
      this.warnedPercent = 0;
      this.warnedStatuses.clear();
    }
    const warnings: BudgetWarning[] = [];
    if (BAD_STATUSES.has(usage.status) && !this.warnedStatuses.has(usage.status)) {
      this.warnedStatuses.add(usage.status);
      warnings.push({
        msg: `the Bitquery account is ${usage.status}: Bitquery refuses queries until it is settled in the account (the period ends ${usage.periodEnd})`,
        fields: { status: usage.status, periodEnd: usage.periodEnd },
      });
    }
    const percent = percentUsed(usage);
    if (percent !== undefined) {
      const crossed = this.thresholds.filter((t) => percent >= t).pop();
      if (crossed !== undefined && crossed > this.warnedPercent) {
        this.warnedPercent = crossed;
        const left = Math.max(0, usage.pointsLimit - usage.pointsUsed);
        const used = `${fmt(usage.pointsUsed)} of ${fmt(usage.pointsLimit)} points used`;
        warnings.push({
          msg:
            crossed >= 100
              ? `points budget used up (${used}): Bitquery answers 402 until the period ends ${usage.periodEnd}`
              : `points budget ${Math.floor(percent)}% used (${used}, ${fmt(left)} left): the period ends ${usage.periodEnd}`,
          fields: { threshold: crossed, percent: Math.floor(percent), pointsUsed: usage.pointsUsed, pointsLimit: usage.pointsLimit, pointsLeft: left, periodEnd: usage.periodEnd },
        });
      }
    }
    return warnings;
  }
}

/** What is known of one credential set's account. */
export interface UsageState {
  /** The last valid answer. */
  usage?: AccountUsage;
  /** The last failure (cleared by a success), in words that hold no secret. */
  lastError?: string;
  lastErrorAt?: number;
  /** Failures in a row. */
  failures: number;
}

export interface UsageOptions {
  sets: readonly ObservedSet[];
  /** BITQUERY_USAGE_URL. */
  url: string;
  /** USAGE_POLL_MS; 0 turns polling off. */
  intervalMs: number;
  /** BUDGET_WARN_PERCENT. */
  warnPercent: number;
  events: Events;
  logger: Logger;
  /** One poll: the wait for the answer, and for a token when none is valid. */
  timeoutMs?: number;
  /** Certificates are verified: undici's default. Tests pass their own to reach loopback servers. */
  dispatcher?: Dispatcher;
  /** Random source in [0, 1) for the backoff jitter. */
  random?: () => number;
}

interface Poll {
  set: ObservedSet;
  watch: BudgetWatch;
  state: UsageState;
  timer?: NodeJS.Timeout;
}

export class UsagePoller {
  private readonly polls = new Map<string, Poll>();
  private readonly abort = new AbortController();
  private readonly timeoutMs: number;
  private readonly random: () => number;

  constructor(private readonly options: UsageOptions) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.random = options.random ?? Math.random;
    if (options.intervalMs === 0) return;
    const thresholds = budgetThresholds(options.warnPercent);
    for (const set of options.sets) {
      if (POLLED_MODES.has(set.mode)) this.polls.set(set.name, { set, watch: new BudgetWatch(thresholds), state: { failures: 0 } });
    }
  }

  /** Polls every set now, then every USAGE_POLL_MS. */
  start(): void {
    for (const poll of this.polls.values()) void this.run(poll);
  }

  stop(): void {
    this.abort.abort();
    for (const poll of this.polls.values()) clearTimeout(poll.timer);
  }

  /** Undefined for a set that is not polled (polling off, or a mode without an account). */
  state(name: string): Readonly<UsageState> | undefined {
    return this.polls.get(name)?.state;
  }

  private async run(poll: Poll): Promise<void> {
    const { intervalMs, logger, events } = this.options;
    const { set, state } = poll;
    const log = logger.child({ credentials: set.name });
    let delay = intervalMs;
    try {
      const usage = await this.fetch(set);
      if (state.failures > 0) log.info({ failures: state.failures }, 'usage poll succeeded again');
      poll.state = { usage, failures: 0 };
      log.debug({ status: usage.status, pointsUsed: usage.pointsUsed, pointsLimit: usage.pointsLimit }, 'account usage');
      for (const warning of poll.watch.check(usage)) log.warn(warning.fields, warning.msg);
      events.emit('usage', { credentials: set.name, usage });
    } catch (err) {
      if (this.abort.signal.aborted) return;
      const message = (err as Error).message;
      const failures = state.failures + 1;
      delay = backoffMs(failures, Math.min(RETRY_MIN_MS, intervalMs), Math.max(RETRY_MAX_MS, intervalMs), this.random);
      // A lasting failure is a warning once, then debug lines until it changes or clears.
      const level = message === state.lastError ? 'debug' : 'warn';
      log[level]({ failures, retryInMs: Math.round(delay) }, `usage poll failed: ${message}`);
      poll.state = { ...state, lastError: message, lastErrorAt: Date.now(), failures };
    }
    if (this.abort.signal.aborted) return;
    poll.timer = setTimeout(() => void this.run(poll), delay).unref();
  }

  private async fetch(set: ObservedSet): Promise<AccountUsage> {
    let token: string;
    try {
      token = await set.tokens.getToken(this.timeoutMs);
    } catch (err) {
      throw new Error(`no token to ask with (${(err as Error).message})`);
    }
    let status: number;
    let text: string;
    try {
      const res = await request(this.options.url, {
        method: 'GET',
        headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
        dispatcher: this.options.dispatcher,
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.timeoutMs)]),
      });
      status = res.statusCode;
      text = (await readCapped(res.body, MAX_RESPONSE_BYTES)).toString('utf8');
    } catch (err) {
      throw new Error(`the Usage API is unreachable: ${describeNetworkError(err, this.timeoutMs)}`);
    }
    if (status === 401 || status === 403) throw new Error(`the Usage API refused the token (HTTP ${status})`);
    if (status !== 200) throw new Error(`the Usage API answered HTTP ${status}`);
    try {
      return parseUsage(text, Date.now());
    } catch (err) {
      throw new Error(`the Usage API answer is not the documented shape: ${(err as Error).message}`);
    }
  }
}
