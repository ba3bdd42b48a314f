import { expect, it } from 'vitest';
import type { ChangeEvent } from '../src/events/change-event.js';
import { emptyOutcome, type BatchOutcome } from '../src/sink/sink.js';
import { ChunkGather } from '../src/sources/kafka/chunk-gather.js';
import { OffsetCommits, type TopicOffsets } from '../src/sources/kafka/commit.js';
import { eventually } from './support/wait.js';

/**
 * The grouping alone, with an apply whose commits the test releases by hand: which chunks share a
 * transaction, and what each partition's handler learns. (The Kafka source tests run it against a real
 * broker and the real sink.)
 */
function held() {
  const batches: { events: ChangeEvent[]; signal?: AbortSignal; commit: () => void }[] = [];
  const apply = (events: ChangeEvent[], signal?: AbortSignal) =>
    new Promise<BatchOutcome>((resolve, reject) => {
      signal?.addEventListener('abort', () => reject(new Error('transaction ended uncommitted')), { once: true });
      batches.push({ events, signal, commit: () => resolve({ ...emptyOutcome(), received: events.length, applied: events.length }) });
    });
  return { batches, apply };
}

const events = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ op: 'upsert', resourceType: 'Observation', id: String(from + i) }) as unknown as ChangeEvent);

it('chunks handed over in the same turn share one transaction; its outcome comes once, with the first chunk', async () => {
  const { batches, apply } = held();
  const gather = new ChunkGather(apply, 1000);
  const signal = new AbortController().signal;
  const settled = [gather.submit(events(0, 3), signal), gather.submit(events(3, 2), signal), gather.submit(events(5, 4), signal)];
  await eventually(() => batches.length === 1, 'one transaction begun', 10_000, 2);
  expect(batches[0]!.events.map((e) => e.id)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8']);
  batches[0]!.commit();
  const outcomes = await Promise.all(settled);
  expect(outcomes.map((o) => o.received)).toEqual([9, 0, 0]);
  // A chunk handed over later goes to a transaction of its own.
  const later = gather.submit(events(9, 1), signal);
  await eventually(() => batches.length === 2, 'a second transaction begun', 10_000, 2);
  batches[1]!.commit();
  expect((await later).received).toBe(1);
});

it('a transaction never grows past maxEvents: a chunk that would not fit starts the next one', async () => {
  const { batches, apply } = held();
  const gather = new ChunkGather(apply, 10);
  const signal = new AbortController().signal;
  const settled = [gather.submit(events(0, 6), signal), gather.submit(events(6, 6), signal), gather.submit(events(12, 4), signal), gather.submit(events(16, 12), signal)];
  await eventually(() => batches.length === 3, 'three transactions begun', 10_000, 2);
  expect(batches.map((b) => b.events.length)).toEqual([6, 10, 12]);
  for (const b of batches) b.commit();
  expect((await Promise.all(settled)).map((o) => o.received)).toEqual([6, 10, 0, 12]);
});

it("one chunk's abort ends the shared transaction uncommitted, and every chunk of it learns that reason", async () => {
  const { batches, apply } = held();
  const gather = new ChunkGather(apply, 1000);
  const stalled = new AbortController();
  const first = gather.submit(events(0, 2), stalled.signal);
  const second = gather.submit(events(2, 2), new AbortController().signal);
  await eventually(() => batches.length === 1, 'one transaction begun', 10_000, 2);
  const reason = new Error('the sink did not commit within 15000 ms');
  stalled.abort(reason);
  await expect(first).rejects.toBe(reason);
  await expect(second).rejects.toBe(reason);
  expect(batches[0]!.signal!.aborted).toBe(true);
});

it('offsets committed in the same turn go to Kafka in one request, and each caller learns its outcome', async () => {
  const requests: TopicOffsets[] = [];
  const commit = async (offsets: TopicOffsets) => void requests.push(offsets);
  const offsets = new OffsetCommits();
  await Promise.all([offsets.commit(commit, 'a', 0, '5'), offsets.commit(commit, 'a', 1, '7'), offsets.commit(commit, 'b', 0, '2')]);
  expect(requests).toEqual([
    {
      topics: [
        { topic: 'a', partitions: [{ partition: 0, offset: '5' }, { partition: 1, offset: '7' }] },
        { topic: 'b', partitions: [{ partition: 0, offset: '2' }] },
      ],
    },
  ]);
  const refused = new Error('The coordinator is not aware of this member');
  const failing = async () => {
    throw refused;
  };
  const both = [offsets.commit(failing, 'a', 0, '6'), offsets.commit(failing, 'a', 1, '8')];
  for (const c of both) await expect(c).rejects.toBe(refused);
});
