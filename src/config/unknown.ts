// Names that look like settings but are none (a typo such as BITQUERY_UPSTREM): each is reported
// with the closest real setting, since an ignored setting is otherwise silent.
import { SETTINGS } from './settings.js';

/** Prefixes of the proxy's settings; other names in the environment are none of its business. */
const PREFIXES = ['BITQUERY_', 'PROXY_', 'TOKEN_', 'UPSTREAM_', 'WS_', 'CACHE_', 'REDIS_', 'ADMIN_', 'USAGE_', 'LOG_'];

/** Levenshtein distance: insertions, deletions and substitutions. */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** The known setting nearest to `name`. */
export function closestSetting(name: string): string {
  let best = SETTINGS[0]!.name;
  let bestDistance = Infinity;
  for (const { name: known } of SETTINGS) {
    const distance = editDistance(name, known);
    if (distance < bestDistance) [best, bestDistance] = [known, distance];
  }
  return best;
}

/** One warning per unknown setting-like name, saying where it was found and what was likely meant. */
export function unknownSettings(sources: [names: Record<string, unknown>, where: string][]): string[] {
  const known = new Set(SETTINGS.map((s) => s.name));
  const warnings: string[] = [];
  for (const [names, where] of sources) {
    for (const name of Object.keys(names)) {
      if (known.has(name) || !PREFIXES.some((p) => name.startsWith(p))) continue;
      warnings.push(`${name} (in ${where}) is not a setting and is ignored: did you mean ${closestSetting(name)}? (see --help)`);
    }
  }
  return warnings;
}
