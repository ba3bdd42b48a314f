import { expect, it } from 'vitest';
import { Backoff } from '../src/retry/backoff.js';

it('doubles its ceiling up to the cap, draws each wait from the upper half, and starts over on reset', () => {
  const backoff = new Backoff({ initialMs: 100, maxMs: 1_000 });
  for (let round = 0; round < 2; round++) {
    const waits = Array.from({ length: 8 }, () => backoff.next());
    const ceilings = [100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000];
    waits.forEach((ms, i) => {
      expect(ms).toBeGreaterThanOrEqual(ceilings[i]! / 2);
      expect(ms).toBeLessThanOrEqual(ceilings[i]!);
    });
    backoff.reset();
  }
});

it('jitters, so members that failed together do not retry in step', () => {
  const waits = new Set(Array.from({ length: 20 }, () => new Backoff({ initialMs: 10_000, maxMs: 10_000 }).next()));
  expect(waits.size).toBeGreaterThan(1);
});

it('ends a wait at once when the signal aborts, rejecting with its reason', async () => {
  const abort = new AbortController();
  const started = Date.now();
  const waiting = new Backoff({ initialMs: 60_000, maxMs: 60_000 }).wait(abort.signal);
  abort.abort(new Error('shutdown'));
  await expect(waiting).rejects.toThrow('shutdown');
  expect(Date.now() - started).toBeLessThan(5_000);
});
