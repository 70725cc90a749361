// The points saver: the one entry the HTTP handler calls for a request on a proxied path. It
// decides (classify.ts) whether the request may be shared, answers it from the cache when it can,
// joins it to an identical query already in flight, or sends it upstream through the caller's
// exchange and shares that answer (flight.ts). Every answer carries X-Cache: HIT (with Age),
// MISS, COALESCED or BYPASS.
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { CacheResult } from '../events.js';
import { cacheable } from './cacheable.js';
import { classify, type Classification, type ClassifyOptions, type RequestFacts } from './classify.js';
import { Flight, HeldBudget, type ClientListener, type ClientOutcome, type Exchange, type ResponseHeaders } from './flight.js';
import { SoleAnswer } from './sole-answer.js';
import { MemoryStore, type AnswerStore, type CachedAnswer, type StoreStats } from './store.js';

/** A body or GET query string over this is not parsed (GraphQL queries are a few KiB). */
export const MAX_PARSE_BYTES = 64 * 1024;

/** A compressed answer is decoded to look for `errors` up to this many times the held bound. */
const DECODED_FACTOR = 8;

export interface SaverOptions {
  /** COALESCE */
  coalesce: boolean;
  /** CACHE_TTL_MS: the TTL of keys without their own `cacheTtlMs`; 0 = only keys with their own. */
  cacheTtlMs: number;
  /** The response cache; without one nothing is cached, whatever the TTLs. */
  store?: AnswerStore & StoreStats;
  /** CACHE_MAX_ENTRY_BYTES: the largest body held to share (for joiners and the cache). */
  maxHeldBytes: number;
  /** CACHE_MAX_BYTES: the most that answers in flight may hold together (on top of the cache). */
  maxHeldTotalBytes: number;
  /** COALESCE_MAX_BUFFERED_BYTES: how far one client of a shared answer may fall behind the fastest before it is cut. */
  maxBacklogBytes: number;
  /** Told of an exchange that rejected (its clients were cut) and of a store that failed. */
  onError(error: unknown): void;
  /** The clock, epoch ms (tests); Date.now by default. */
  now?: () => number;
}

/** A request the saver may share. */
type SharedPlan = Extract<Classification, { kind: 'shared' }>;

/** How one request was served. */
export interface SaverOutcome extends ClientOutcome {
  cache: CacheResult;
}

/** The settings of the points saver, as the configuration holds them. */
export interface SavingsSettings {
  /** COALESCE */
  coalesce: boolean;
  /** CACHE_TTL_MS */
  cacheTtlMs: number;
  /** CACHE_MAX_BYTES */
  cacheMaxBytes: number;
  /** CACHE_MAX_ENTRY_BYTES */
  cacheMaxEntryBytes: number;
  /** COALESCE_MAX_BUFFERED_BYTES */
  maxBufferedBytes: number;
}

function backlogProblem(maxHeldBytes: number, maxBacklogBytes: number): string | undefined {
  if (maxBacklogBytes >= 2 * maxHeldBytes) return undefined;
  // A late joiner is given up to maxHeldBytes at once: it must not be cut for that alone.
  return `COALESCE_MAX_BUFFERED_BYTES (${maxBacklogBytes}) must be at least twice CACHE_MAX_ENTRY_BYTES (${maxHeldBytes})`;
}

/** The rules between settings, for the configuration to refuse with exit 2; undefined when they fit. */
export function settingsProblem(settings: SavingsSettings): string | undefined {
  if (settings.cacheMaxEntryBytes > settings.cacheMaxBytes) {
    return `CACHE_MAX_ENTRY_BYTES (${settings.cacheMaxEntryBytes}) must not be above CACHE_MAX_BYTES (${settings.cacheMaxBytes})`;
  }
  return backlogProblem(settings.cacheMaxEntryBytes, settings.maxBufferedBytes);
}

/**
 * The in-process cache tier, when CACHE_TTL_MS or any key's `cacheTtlMs` (`keyTtls`) is above 0;
 * undefined otherwise (coalescing only). The daemon may put another tier in front of it.
 */
export function memoryStoreFor(settings: SavingsSettings, keyTtls: readonly number[]): MemoryStore | undefined {
  if (settings.cacheTtlMs === 0 && !keyTtls.some((ttl) => ttl > 0)) return undefined;
  return new MemoryStore({ maxBytes: settings.cacheMaxBytes, maxEntryBytes: settings.cacheMaxEntryBytes });
}

/** The daemon's saver over `store` (from memoryStoreFor, or a tier built on it); no store: coalescing only. */
export function createPointsSaver(settings: SavingsSettings, store: (AnswerStore & StoreStats) | undefined, onError: (error: unknown) => void): PointsSaver {
  return new PointsSaver({
    coalesce: settings.coalesce,
    cacheTtlMs: settings.cacheTtlMs,
    store,
    maxHeldBytes: settings.cacheMaxEntryBytes,
    maxHeldTotalBytes: settings.cacheMaxBytes,
    maxBacklogBytes: settings.maxBufferedBytes,
    onError,
  });
}

export class PointsSaver {
  /** Requests by how they were served: `bitquery_proxy_cache_requests_total{result}`. */
  readonly requests: Record<CacheResult, number> = { hit: 0, miss: 0, coalesced: 0, bypass: 0 };
  /** Upstream requests saved (hits and coalesced) per credential set: `bitquery_proxy_upstream_requests_saved_total{credentials}`. */
  readonly saved = new Map<string, number>();
  /** Clients cut for being slow while sharing an answer. */
  slowClientsCut = 0;
  private readonly flights = new Map<string, Flight>();
  private readonly budget: HeldBudget;
  private readonly classifyOptions: ClassifyOptions;
  private readonly now: () => number;
  private readonly onCut = () => {
    this.slowClientsCut += 1;
  };

  constructor(private readonly options: SaverOptions) {
    const problem = backlogProblem(options.maxHeldBytes, options.maxBacklogBytes);
    if (problem) throw new RangeError(problem);
    this.now = options.now ?? Date.now;
    this.budget = new HeldBudget(options.maxHeldTotalBytes);
    this.classifyOptions = { coalesce: options.coalesce, cache: options.store !== undefined, cacheTtlMs: options.cacheTtlMs, maxParseBytes: MAX_PARSE_BYTES };
  }

  /** Whether a response cache exists (for the status page). */
  get caching(): boolean {
    return this.options.store !== undefined;
  }

  /** `bitquery_proxy_cache_bytes` */
  get cacheBytes(): number {
    return this.options.store?.bytes ?? 0;
  }

  /** `bitquery_proxy_cache_entries` */
  get cacheEntries(): number {
    return this.options.store?.entries ?? 0;
  }

  /** Bytes held by answers in flight (for joiners and the cache), at most maxHeldTotalBytes. */
  get heldBytes(): number {
    return this.budget.used;
  }

  /** Distinct queries in flight that still take joiners. */
  get inFlight(): number {
    return this.flights.size;
  }

  /**
   * Answers one request on a proxied path into `res`. `exchange` performs one upstream exchange
   * (token, dispatch, 401 retry) into the sink it is given; it is called at most once, and not
   * at all for a hit or a joiner. `base` holds the headers already set for this client (CORS,
   * rate limit); the upstream's own win a clash, as without the saver. `listener` is told how the
   * request is served, and of the proxy's own error when that is the answer (shared by a flight's
   * every client), before anything is written: the request event is built when the answer ends.
   * Resolves once this client's answer is written whole, cut, or the client has gone.
   */
  handle(facts: RequestFacts, exchange: Exchange, res: ServerResponse, base: OutgoingHttpHeaders = {}, listener?: ClientListener): Promise<SaverOutcome> {
    const plan = classify(facts, this.classifyOptions);
    if (plan.kind === 'bypass') return this.bypass(exchange, res, base, listener);
    return this.share(plan, exchange, res, base, listener);
  }

  /** A request not shared: its exchange writes straight into its response. */
  private bypass(exchange: Exchange, res: ServerResponse, base: OutgoingHttpHeaders, listener: ClientListener | undefined): Promise<SaverOutcome> {
    this.requests.bypass += 1;
    listener?.decided('bypass');
    const answer = new SoleAnswer(res, base, listener);
    answer.run(exchange).catch(this.options.onError);
    return answer.done;
  }

  /** A request that may be answered from the cache, join an identical one in flight, or lead one. */
  private async share(plan: SharedPlan, exchange: Exchange, res: ServerResponse, base: OutgoingHttpHeaders, listener: ClientListener | undefined): Promise<SaverOutcome> {
    const { key, credentials } = plan;
    if (plan.lookup) {
      // The in-memory store answers at once: no turn of the event loop for a hit.
      const found = this.options.store!.get(key);
      let entry: CachedAnswer | undefined;
      if (!(found instanceof Promise)) entry = found;
      else {
        entry = await found.catch((err: unknown) => {
          this.options.onError(err);
          return undefined;
        });
        // The client went away while an asynchronous store was asked: nothing is sent, upstream
        // or back, and nothing is counted.
        if (res.closed) return { cache: 'bypass', cut: false };
      }
      const now = this.now();
      if (entry && (plan.maxAgeMs === undefined || now - entry.storedAt < plan.maxAgeMs)) {
        this.count('hit', credentials);
        listener?.decided('hit');
        this.serveHit(res, base, entry, now);
        return { cache: 'hit', cut: false };
      }
    }
    const flight = plan.coalesce ? this.flights.get(key) : undefined;
    if (flight) {
      this.count('coalesced', credentials);
      listener?.decided('coalesced');
      return { cache: 'coalesced', ...(await flight.add(res, base, 'COALESCED', listener)) };
    }
    return this.lead(plan, exchange, res, base, listener);
  }

  private async lead(
    plan: SharedPlan,
    exchange: Exchange,
    res: ServerResponse,
    base: OutgoingHttpHeaders,
    listener: ClientListener | undefined,
  ): Promise<SaverOutcome> {
    this.requests.miss += 1;
    listener?.decided('miss');
    const { maxHeldBytes, maxBacklogBytes } = this.options;
    const flight = new Flight({
      maxHeldBytes,
      budget: this.budget,
      maxBacklogBytes,
      onCut: this.onCut,
      now: this.now,
      onClosed: plan.coalesce ? () => this.flights.delete(plan.key) : undefined,
      onComplete: plan.ttlMs > 0 ? (status, headers, body, startedAt) => void this.fill(plan.key, plan.ttlMs, status, headers, body, startedAt) : undefined,
    });
    if (plan.coalesce) this.flights.set(plan.key, flight);
    const done = flight.add(res, base, 'MISS', listener);
    flight.run(exchange).catch(this.options.onError);
    return { cache: 'miss', ...(await done) };
  }

  private async fill(key: string, ttlMs: number, status: number, headers: ResponseHeaders, body: Buffer, storedAt: number): Promise<void> {
    try {
      if (!(await cacheable(status, headers, body, DECODED_FACTOR * this.options.maxHeldBytes))) return;
      const { 'content-length': _length, ...kept } = headers;
      await this.options.store!.set(key, { status, headers: kept, body, storedAt }, ttlMs);
    } catch (err) {
      this.options.onError(err);
    }
  }

  private serveHit(res: ServerResponse, base: OutgoingHttpHeaders, entry: CachedAnswer, now: number): void {
    const age = String(Math.max(0, Math.floor((now - entry.storedAt) / 1000)));
    res.writeHead(entry.status, { ...base, ...entry.headers, age, 'x-cache': 'HIT', 'content-length': entry.body.length });
    res.end(entry.body);
  }

  private count(result: 'hit' | 'coalesced', credentials: string): void {
    this.requests[result] += 1;
    this.saved.set(credentials, (this.saved.get(credentials) ?? 0) + 1);
  }
}
