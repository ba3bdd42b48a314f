/**
 * The promise's outcome, or the signal's reason as soon as the signal aborts; `abandon` then lets go of
 * what the promise was using. The promise itself may settle later; that outcome is dropped.
 */
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined, abandon: () => void = () => {}): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      abandon();
      reject(signal.reason);
    };
    if (signal.aborted) {
      promise.catch(() => {}); // its outcome is dropped, a late rejection too
      return onAbort();
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
