// setTimeout holds at most 2^31-1 ms (24.8 days); a longer delay fires at once, which with a
// 30-day Bitquery token would renew in a tight loop. This timer waits any length in steps.
const MAX_STEP_MS = 2 ** 31 - 1;

export interface LongTimer {
  cancel(): void;
}

/** Calls `fn` after `delayMs` (any length); unref'd so it never holds the process open. */
export function setLongTimeout(fn: () => void, delayMs: number): LongTimer {
  let handle: NodeJS.Timeout;
  const due = Date.now() + Math.max(0, delayMs);
  const arm = () => {
    const left = due - Date.now();
    if (left <= 0) return fn();
    handle = setTimeout(arm, Math.min(left, MAX_STEP_MS));
    handle.unref();
  };
  handle = setTimeout(arm, Math.min(Math.max(0, delayMs), MAX_STEP_MS));
  handle.unref();
  return { cancel: () => clearTimeout(handle) };
}
