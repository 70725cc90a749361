// The keys in force: from PROXY_API_KEYS and PROXY_API_KEYS_FILE, the file re-read when it
// changes. A broken file keeps the previous keys, so a bad edit never locks everyone out.
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { watchFile, type FileWatch } from '../token/watch-file.js';
import { checkUniqueNames, findKey, parseKeyFile, parseKeyList, type ApiKey } from './keys.js';

export interface KeySources {
  list?: string;
  file?: string;
}

/** Reads both sources now; throws KeyFormatError (or the read error) for the start-up check. */
export function loadKeys({ list, file }: KeySources): ApiKey[] {
  const keys = [...(list ? parseKeyList(list) : []), ...(file ? parseKeyFile(readFileSync(file, 'utf8')) : [])];
  checkUniqueNames(keys);
  return keys;
}

export class KeyStore {
  private keys: ApiKey[];
  private watch?: FileWatch;

  constructor(
    private readonly sources: KeySources,
    initial: ApiKey[],
    private readonly logger: Logger,
  ) {
    this.keys = initial;
  }

  /** True when any key is configured: then every proxied request must carry one. */
  get enabled(): boolean {
    return Boolean(this.sources.list || this.sources.file);
  }

  /** Whether a key of this name is in force (metrics fold any other name into `other`). */
  has(name: string): boolean {
    return this.keys.some((k) => k.name === name);
  }

  find(presented: string): ApiKey | undefined {
    return findKey(this.keys, presented);
  }

  start(): void {
    const { file } = this.sources;
    if (!file) return;
    this.watch = watchFile(file, readFileSync(file, 'utf8').trim(), () => this.reload(), (reason) =>
      this.logger.warn(`cannot read PROXY_API_KEYS_FILE (${reason}): keeping the ${this.keys.length} keys in force`),
    );
  }

  stop(): void {
    this.watch?.close();
  }

  private reload(): void {
    try {
      const keys = loadKeys(this.sources);
      this.keys = keys;
      this.logger.info({ keys: keys.map((k) => k.name) }, `PROXY_API_KEYS_FILE changed: ${keys.length} keys in force`);
    } catch (err) {
      this.logger.error(`PROXY_API_KEYS_FILE is not valid (${(err as Error).message}): keeping the ${this.keys.length} keys in force`);
    }
  }
}
