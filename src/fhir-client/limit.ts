/** Runs at most `concurrency` of the tasks given to it at once; the rest wait their turn in order. */
export function concurrencyLimit(concurrency: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    if (running >= concurrency) await new Promise<void>((resolve) => waiting.push(resolve));
    else running++;
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}

/**
 * A token bucket: `perSecond` starts a second on average, with a burst of at most `max(1, perSecond)` after a
 * quiet spell. `take` resolves when the caller may start; callers are served in the order they asked.
 * The wait is abandoned (rejected with the signal's reason) when the signal aborts.
 */
export function rateLimit(perSecond: number, now: () => number = () => performance.now()): (signal?: AbortSignal) => Promise<void> {
  const capacity = Math.max(1, perSecond);
  let tokens = capacity;
  let at = now();
  let queue: Promise<void> = Promise.resolve();
  const refill = () => {
    const t = now();
    tokens = Math.min(capacity, tokens + ((t - at) / 1000) * perSecond);
    at = t;
  };
  const takeOne = async (signal?: AbortSignal) => {
    for (refill(); tokens < 1; refill()) await pause(((1 - tokens) / perSecond) * 1000, signal);
    tokens -= 1;
  };
  return (signal) => {
    const turn = queue.then(() => takeOne(signal));
    queue = turn.catch(() => {});
    return turn;
  };
}

function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => {
      signal?.removeEventListener('abort', abort);
      resolve();
    };
    const abort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(done, Math.max(1, Math.ceil(ms)));
    signal?.addEventListener('abort', abort, { once: true });
  });
}

/** fhirServer.maxConcurrency and maxRequestsPerSecond when not configured. */
export const DEFAULT_LIMITS: RequestLimits = { maxConcurrency: 4, maxRequestsPerSecond: 50 };

export interface RequestLimits {
  /** Requests in flight at once. */
  maxConcurrency: number;
  /** Requests started a second (on average; a burst of one second's worth after a quiet spell). */
  maxRequestsPerSecond: number;
}

/**
 * Both limits on one kind of call: a task first waits for a slot, then for its turn in the rate, so a task
 * holding a slot never waits long for the rate and one in flight is always one counted by both.
 */
export function requestLimit(limits: RequestLimits): <T>(task: () => Promise<T>, signal?: AbortSignal) => Promise<T> {
  const slot = concurrencyLimit(limits.maxConcurrency);
  const rate = rateLimit(limits.maxRequestsPerSecond);
  return (task, signal) =>
    slot(async () => {
      await rate(signal);
      return task();
    });
}
