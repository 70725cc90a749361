// Watches a secret file the way it is really replaced: in place by an editor, by a rename over it,
// or (Kubernetes) by swapping the `..data` symlink of the mounted folder. So the folder is watched,
// and the file is re-read on any change there; the callback runs only when the content changed.
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

export interface FileWatch {
  close(): void;
}

/** Calls `onChange(text)` with the trimmed new content; `onError(code)` when it cannot be read. */
export function watchFile(file: string, initial: string, onChange: (text: string) => void, onError: (reason: string) => void): FileWatch {
  let last = initial;
  let reading: Promise<void> | undefined;
  let again = false;
  const name = basename(file);

  const reread = (): void => {
    if (reading) {
      again = true;
      return;
    }
    reading = readFile(file, 'utf8').then(
      (raw) => {
        const text = raw.trim();
        if (!text) return onError('empty');
        if (text !== last) {
          last = text;
          onChange(text);
        }
      },
      (err: NodeJS.ErrnoException) => onError(err.code ?? 'unreadable'),
    ).finally(() => {
      reading = undefined;
      if (again) {
        again = false;
        reread();
      }
    });
  };

  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(file), (_event, changed) => {
      if (changed === null || changed === name || changed.startsWith('..')) reread();
    });
    watcher.on('error', (err) => onError(`watch failed: ${err.message}`));
    watcher.unref();
  } catch (err) {
    onError(`watch failed: ${(err as Error).message}`);
  }
  return { close: () => watcher?.close() };
}
