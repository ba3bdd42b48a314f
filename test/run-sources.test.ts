import { expect, it } from 'vitest';
import { runSources } from '../src/sources/source.js';

/**
 * `fhir-rte start` closes the pool, HTTP server and relay once runSources settles: one source failing must
 * stop the others, and runSources must wait until they have drained before it rejects with that failure.
 */
it('a failing source stops the others; the failure is rethrown only once every source has drained', async () => {
  const stop = new AbortController();
  let finishDrain!: () => void;
  const drained = new Promise<void>((resolve) => (finishDrain = resolve));
  let receiverEnded = false;
  const receiver = async (signal: AbortSignal) => {
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    await drained; // a group commit still in flight after the stop
    receiverEnded = true;
  };
  const failing = async () => {
    throw new Error('the database refused the batch for a reason retrying cannot fix');
  };
  let settled = false;
  const running = runSources([receiver, failing], stop);
  void running.catch(() => {}).finally(() => (settled = true));

  await expect.poll(() => stop.signal.aborted).toBe(true);
  await new Promise((resolve) => setImmediate(resolve));
  expect(settled).toBe(false); // still draining: nothing shared may close yet
  finishDrain();
  await expect(running).rejects.toThrow('the database refused the batch');
  expect(receiverEnded).toBe(true);
});

it('the first failure is the one rethrown, whatever the others did', async () => {
  const stop = new AbortController();
  const later = async (signal: AbortSignal) => {
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    throw new Error('second');
  };
  await expect(runSources([later, async () => Promise.reject(new Error('first'))], stop)).rejects.toThrow('first');
});
