/**
 * Random faults for soak tests, drawn from a seeded generator: the same seed and rates give the same
 * fault for the n-th token request and the n-th GraphQL HTTP request, whatever the timing. Token
 * requests and GraphQL requests draw from separate sequences. FakeBitquery (index.ts) applies them;
 * the API is documented there.
 */

/** What a fault does; the first two hit the token endpoint, the others GraphQL over HTTP. */
export type FaultKind = 'tokenError' | 'tokenTimeout' | 'http401' | 'http5xx' | 'httpSlow' | 'httpReset';

export const FAULT_KINDS: readonly FaultKind[] = ['tokenError', 'tokenTimeout', 'http401', 'http5xx', 'httpSlow', 'httpReset'];

/** Probabilities (0..1, per request) and parameters of the random faults. */
export interface FaultConfig {
  /** Seed of the generator; omitted: a random one (FakeBitquery.faults.seed tells which). */
  seed?: number;
  /** Token endpoint answers 500 (Hydra's JSON server_error). */
  tokenError?: number;
  /** Token endpoint never answers (the client times out). */
  tokenTimeout?: number;
  /** GraphQL answers 401 `Unauthorized` although the token is valid. */
  http401?: number;
  /** With http401: the token is also revoked, so every later use of it gets 401 too. Default false. */
  http401Revokes?: boolean;
  /** GraphQL answers a 5xx with a plain-text body (FIVE_XX_ANSWERS, one picked at random). */
  http5xx?: number;
  /** GraphQL answers normally after slowMs. */
  httpSlow?: number;
  /** GraphQL sends the status line, headers and half the body, then resets the connection. */
  httpReset?: number;
  /** Delay of httpSlow, default 1000. */
  slowMs?: number;
}

/** The 5xx answers http5xx picks from: Bitquery's database texts and its gateway's. */
export const FIVE_XX_ANSWERS: readonly { status: number; body: string }[] = [
  { status: 500, body: 'Too many simultaneous queries' },
  { status: 500, body: 'Memory limit' },
  { status: 502, body: 'Bad Gateway' },
  { status: 503, body: 'Service Unavailable' },
];

const TOKEN_KINDS = ['tokenError', 'tokenTimeout'] as const;
const HTTP_KINDS = ['http401', 'http5xx', 'httpSlow', 'httpReset'] as const;

/** mulberry32: a small, fast 32-bit generator; numbers in [0, 1). */
export function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Throws a RangeError naming the first bad field. */
function check(config: FaultConfig): void {
  const probability = (name: keyof FaultConfig) => {
    const v = config[name];
    if (v !== undefined && !(typeof v === 'number' && v >= 0 && v <= 1)) {
      throw new RangeError(`fault ${name} must be a probability between 0 and 1, got ${String(v)}`);
    }
    return (v as number | undefined) ?? 0;
  };
  for (const kinds of [TOKEN_KINDS, HTTP_KINDS]) {
    const sum = kinds.reduce((s, k) => s + probability(k), 0);
    if (sum > 1 + 1e-9) throw new RangeError(`fault probabilities ${kinds.join(' + ')} must add up to 1 at most, got ${sum}`);
  }
  const { seed, slowMs } = config;
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw new RangeError(`fault seed must be an integer, got ${seed}`);
  if (slowMs !== undefined && !(Number.isFinite(slowMs) && slowMs >= 0)) {
    throw new RangeError(`fault slowMs must be a number of milliseconds >= 0, got ${slowMs}`);
  }
}

export interface HttpFault {
  kind: (typeof HTTP_KINDS)[number];
  /** http5xx: the answer picked. */
  answer?: { status: number; body: string };
}

export class FaultSchedule {
  /** The configuration in force, with its seed and slowMs. */
  readonly config: Readonly<FaultConfig & { seed: number; slowMs: number }>;
  private readonly tokenDraw: () => number;
  private readonly httpDraw: () => number;
  /** Requests drawn for so far, per sequence. */
  tokenDraws = 0;
  httpDraws = 0;

  constructor(config: FaultConfig) {
    check(config);
    const seed = config.seed ?? Math.floor(Math.random() * 2 ** 31);
    this.config = Object.freeze({ ...config, seed, slowMs: config.slowMs ?? 1000 });
    this.tokenDraw = generator(seed);
    this.httpDraw = generator(seed ^ 0x5bd1e995);
  }

  /** The fault for the next token request, if any. */
  nextToken(): (typeof TOKEN_KINDS)[number] | undefined {
    this.tokenDraws += 1;
    return this.pick(TOKEN_KINDS, this.tokenDraw());
  }

  /** The fault for the next authorized GraphQL HTTP request, if any. */
  nextHttp(): HttpFault | undefined {
    this.httpDraws += 1;
    const kind = this.pick(HTTP_KINDS, this.httpDraw());
    if (kind !== 'http5xx') return kind && { kind };
    return { kind, answer: FIVE_XX_ANSWERS[Math.floor(this.httpDraw() * FIVE_XX_ANSWERS.length)]! };
  }

  private pick<K extends FaultKind>(kinds: readonly K[], r: number): K | undefined {
    let edge = 0;
    for (const k of kinds) {
      edge += this.config[k] ?? 0;
      if (r < edge) return k;
    }
    return undefined;
  }
}
