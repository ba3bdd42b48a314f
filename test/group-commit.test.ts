import { expect, it } from 'vitest';
import type { ChangeEvent } from '../src/events/change-event.js';
import { emptyOutcome, type BatchOutcome } from '../src/sink/sink.js';
import { AckTimeout, GroupCommit } from '../src/sources/resthook/group-commit.js';
import { eventually } from './support/wait.js';

/**
 * The grouping alone, with an apply whose commits the test releases by hand: what is gathered into which
 * transaction, and when deliveries are settled. (The receiver tests run it against the real sink.)
 */
function held() {
  const batches: { events: ChangeEvent[]; commit: () => void; signal?: AbortSignal }[] = [];
  const apply = (events: ChangeEvent[], signal?: AbortSignal) =>
    new Promise<BatchOutcome>((resolve, reject) => {
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      batches.push({ events, signal, commit: () => resolve({ ...emptyOutcome(), received: events.length, applied: events.length }) });
    });
  return { batches, apply };
}

const event = (i: number) => ({ op: 'upsert', resourceType: 'Patient', id: String(i) }) as unknown as ChangeEvent;

it('while the groups in flight apply, the next group keeps gathering; it is applied when a slot frees', async () => {
  const { batches, apply } = held();
  const group = new GroupCommit(apply, { windowMs: 1, maxEvents: 1000, maxInFlight: 1, ackTimeoutMs: 10_000 });
  const first = group.submit([event(0)]);
  await eventually(() => batches.length === 1, '1 transaction(s) begun', 10_000, 2);
  const rest = Array.from({ length: 50 }, (_, i) => group.submit([event(i + 1)]));
  await new Promise((r) => setTimeout(r, 20)); // twenty windows pass (not a wait for a condition: nothing may happen)
  expect(batches).toHaveLength(1);
  batches[0]!.commit();
  expect((await first).received).toBe(1);
  await eventually(() => batches.length === 2, '2 transaction(s) begun', 10_000, 2);
  expect(batches[1]!.events).toHaveLength(50);
  batches[1]!.commit();
  for (const r of await Promise.all(rest)) expect(r.received).toBe(50);
});

it('a full group is closed at maxEvents, and groups apply side by side up to maxInFlight', async () => {
  const { batches, apply } = held();
  const group = new GroupCommit(apply, { windowMs: 1000, maxEvents: 3, maxInFlight: 2, ackTimeoutMs: 10_000 });
  const settled = Array.from({ length: 9 }, (_, i) => group.submit([event(i)]));
  await eventually(() => batches.length === 2, '2 transaction(s) begun', 10_000, 2);
  expect(batches.map((b) => b.events.length)).toEqual([3, 3]);
  batches[0]!.commit();
  await eventually(() => batches.length === 3, '3 transaction(s) begun', 10_000, 2);
  batches[1]!.commit();
  batches[2]!.commit();
  expect((await Promise.all(settled)).map((o) => o.received)).toEqual([3, 3, 3, 3, 3, 3, 3, 3, 3]);
});

it('a group that waits for a slot past its ack timeout is rejected with AckTimeout and never applied', async () => {
  // The first transaction does not give way to its abort (a sink still rolling back): it holds the only
  // slot until the test commits it, after the waiting group's own ack timeout has run out.
  const batches: { events: ChangeEvent[]; commit: () => void }[] = [];
  const apply = (events: ChangeEvent[]) =>
    new Promise<BatchOutcome>((resolve) => batches.push({ events, commit: () => resolve({ ...emptyOutcome(), received: events.length, applied: events.length }) }));
  const group = new GroupCommit(apply, { windowMs: 1, maxEvents: 1000, maxInFlight: 1, ackTimeoutMs: 200 });
  const first = group.submit([event(0)]);
  await eventually(() => batches.length === 1, '1 transaction(s) begun', 10_000, 2);
  const submitted = Date.now();
  const waiting = group.submit([event(1)]);
  await eventually(() => Date.now() > submitted + 200, "the waiting group's ack timeout passed", 10_000, 5);
  batches[0]!.commit();
  // Committed late but committed: durable, so its sender is told so.
  expect((await first).received).toBe(1);
  await expect(waiting).rejects.toBeInstanceOf(AckTimeout);
  expect(batches).toHaveLength(1);
});

it('drain applies what is gathered at once and waits for every group', async () => {
  const { batches, apply } = held();
  const group = new GroupCommit(apply, { windowMs: 60_000, maxEvents: 1000, maxInFlight: 1, ackTimeoutMs: 10_000 });
  const settled = [group.submit([event(0)]), group.submit([event(1)])];
  let drained = false;
  const draining = group.drain().then(() => (drained = true));
  await eventually(() => batches.length === 1, '1 transaction(s) begun', 10_000, 2);
  expect(drained).toBe(false);
  batches[0]!.commit();
  await draining;
  expect((await Promise.all(settled)).map((o) => o.received)).toEqual([2, 2]);
});
