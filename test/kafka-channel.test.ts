import { afterAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { freshDatabase } from './support/database.js';
import { startTestPostgres } from './support/embedded-postgres.js';
import { startKafkaBroker } from './support/kafka-broker.js';
import { ChannelProcess, writeChannelConfig } from './support/kafka-process.js';
import { committedOffsets, createTopic, endOffsets, eventually, produce, testKafka, uniqueName } from './support/kafka-topics.js';
import { buildWorkload, checkTables, produceWorkload, workloadTransformers, type Workload, type WorkloadRecord } from './support/kafka-workload.js';
import pg from 'pg';

/**
 * Channel mode end to end: `fhir-rte start` processes against a real Kafka broker and real Postgres.
 * Each test ends with every export table equal to the newest state of every resource, a dead-letter
 * table holding exactly the poison records (topic, partition, offset, cause), and the group's offsets
 * committed at the end of every partition.
 */
const brokersText = inject('kafkaBrokers');
const why = inject('kafkaUnavailable');
const PARTITIONS = 6;

describe.skipIf(!brokersText)(`Kafka channel mode${why ? ` (skipped: ${why})` : ''}`, () => {
  const brokers = brokersText ? brokersText.split(',') : [];
  const kafka = testKafka(brokers);
  const processes: ChannelProcess[] = [];
  const transformersDir = workloadTransformers();
  let firstOfTest = 0;
  beforeEach(() => {
    firstOfTest = processes.length;
  });
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop(5_000)));
  });

  /** `eventually`, and on a timeout the output of this test's fhir-rte processes, to see why. */
  async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs?: number, everyMs?: number): Promise<void> {
    try {
      await eventually(check, what, timeoutMs, everyMs);
    } catch (err) {
      const outputs = processes.slice(firstOfTest).map((p, i) => `--- process ${i + 1} (exit ${p.child.exitCode ?? p.child.signalCode ?? 'running'}) ---\n${p.output.slice(-6000)}`);
      throw new Error(`${(err as Error).message}\n${outputs.join('\n')}`);
    }
  }

  /** The process's exit, or a failure with its output when it is still running after `timeoutMs`. */
  async function exitOf(p: ChannelProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still running after ${timeoutMs} ms; output:\n${p.output.slice(-6000)}`)), timeoutMs);
    });
    try {
      return await Promise.race([p.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  function channel(databaseUrl: string, topic: string, groupId: string): ChannelProcess {
    const p = new ChannelProcess(writeChannelConfig({ databaseUrl, transformersDir, brokers, topic, groupId }));
    processes.push(p);
    return p;
  }

  async function groupMembers(groupId: string): Promise<string[]> {
    const admin = kafka.admin();
    await admin.connect();
    try {
      const { groups } = await admin.describeGroups([groupId]);
      return groups[0]?.members.map((m) => m.memberId) ?? [];
    } finally {
      await admin.disconnect();
    }
  }

  async function committedCount(groupId: string, topic: string): Promise<number> {
    const committed = await committedOffsets(kafka, groupId, topic);
    return [...committed.values()].reduce((n, o) => n + Math.max(0, Number(o)), 0);
  }

  async function allCommitted(groupId: string, topic: string): Promise<boolean> {
    const [ends, committed] = await Promise.all([endOffsets(kafka, topic), committedOffsets(kafka, groupId, topic)]);
    return [...ends].every(([p, end]) => committed.get(p) === end);
  }

  async function expectExact(databaseUrl: string, workload: Workload, topic: string, groupId: string, processesToShow: ChannelProcess[]) {
    const { mismatches, deadLetters, duplicateDeadLetters } = await checkTables(databaseUrl, workload, topic);
    const show = processesToShow.map((p) => p.output.slice(-3000)).join('\n----\n');
    expect(mismatches.slice(0, 10), `table mismatches (${mismatches.length}); output:\n${show}`).toEqual([]);
    expect(duplicateDeadLetters, 'a record dead-lettered twice').toEqual([]);
    expect(deadLetters).toEqual([...workload.poison].sort());
    const ends = await endOffsets(kafka, topic);
    const committed = await committedOffsets(kafka, groupId, topic);
    for (const [partition, end] of ends) expect(committed.get(partition), `partition ${partition}`).toBe(end);
  }

  it('ends with exact tables, exactly the poison dead-lettered with its cause, and offsets at every partition end', async () => {
    const databaseUrl = await freshDatabase('kc');
    const topic = uniqueName('channel');
    const groupId = uniqueName('g');
    const workload = buildWorkload({ patients: 800, observations: 800, partitions: PARTITIONS, seed: 1 });
    await createTopic(kafka, topic, PARTITIONS);
    await produceWorkload(kafka, topic, workload.records);

    const p = channel(databaseUrl, topic, groupId);
    await waitFor(() => allCommitted(groupId, topic), 'every partition committed to its end', 120_000);
    const exit = await p.stop();
    expect(exit, p.output.slice(-3000)).toEqual({ code: 0, signal: null });
    await expectExact(databaseUrl, workload, topic, groupId, [p]);

    // Every dead letter says where it came from and why.
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query(`SELECT source, origin, error_class, error_message, payload, status FROM fhir_rte.dead_letter`);
      for (const row of rows) {
        expect(row.origin).toMatchObject({ kind: 'kafka', topic });
        expect(row.source).toBe(`kafka ${topic}[${row.origin.partition}]@${row.origin.offset}`);
        expect(row.error_class).toMatch(/InvalidJson|NotAFhirResource|UnrecognisedMessage|MissingPayload/);
        expect(row.error_message).not.toBe('');
        expect(row.status).toBe('failed');
      }
      expect(new Set(rows.map((r) => r.error_class)).size).toBeGreaterThanOrEqual(4);
    } finally {
      await client.end();
    }
    // Shutting down said so and left the group.
    expect(p.logged('kafka source stopped')).toBeGreaterThan(0);
  });

  it('recovers from SIGKILL mid-stream: the restarted process ends exact, and the crash dead-letters nothing', async () => {
    const databaseUrl = await freshDatabase('kc');
    const topic = uniqueName('channel-kill');
    const groupId = uniqueName('g');
    const workload = buildWorkload({ patients: 2500, observations: 2500, partitions: PARTITIONS, seed: 2 });
    await createTopic(kafka, topic, PARTITIONS);
    await produceWorkload(kafka, topic, workload.records);

    const first = channel(databaseUrl, topic, groupId);
    const total = workload.records.length;
    await waitFor(async () => (await committedCount(groupId, topic)) > total * 0.2, 'a fifth of the stream committed', 90_000, 50);
    first.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    expect(await committedCount(groupId, topic), 'killed mid-stream, not after the end').toBeLessThan(total);

    const second = channel(databaseUrl, topic, groupId);
    await waitFor(() => allCommitted(groupId, topic), 'every partition committed after the restart', 120_000);
    await second.stop();
    await expectExact(databaseUrl, workload, topic, groupId, [first, second]);
  });

  it('shares the partitions between two processes in one group, and hands them over when one stops', async () => {
    const databaseUrl = await freshDatabase('kc');
    const topic = uniqueName('channel-group');
    const groupId = uniqueName('g');
    const workload = buildWorkload({ patients: 2000, observations: 2000, partitions: PARTITIONS, seed: 3 });
    const [early, rest] = splitPerPartition(workload.records, 0.5);
    const [during, after] = splitPerPartition(rest, 0.6);
    await createTopic(kafka, topic, PARTITIONS);
    await produceWorkload(kafka, topic, early);

    const a = channel(databaseUrl, topic, groupId);
    await waitFor(async () => (await committedCount(groupId, topic)) > 0, 'the first process committing', 60_000, 100);
    const b = channel(databaseUrl, topic, groupId);
    // Both members hold partitions, none twice.
    await waitFor(() => sharing(a, b), 'both processes holding partitions', 60_000, 200);
    const heldByA = latestAssignment(a)!;
    const owned = [...heldByA, ...latestAssignment(b)!].sort((x, y) => x - y);
    expect(owned).toEqual(Array.from({ length: PARTITIONS }, (_, i) => i));

    // Stop one while the stream flows: it finishes or abandons its batch, leaves the group, exits.
    const producing = produceWorkload(kafka, topic, during);
    const endsBefore = await endOffsets(kafka, topic);
    await waitFor(async () => [...(await endOffsets(kafka, topic))].some(([part, end]) => end !== endsBefore.get(part)), 'the stream flowing', 60_000, 50);
    const memberA = latestMemberId(a);
    const exit = await a.stop();
    expect(exit.code, a.output.slice(-3000)).toBe(0);
    // It left the group before exiting: the broker no longer lists it (a member that just vanished would
    // stay listed until its 10 s session ran out, however busy the machine).
    expect(await groupMembers(groupId)).not.toContain(memberA);
    await producing;
    // Records that only the remaining process can apply, on the partitions the stopped one held.
    await produceWorkload(kafka, topic, after);
    expect(after.some((r) => heldByA.includes(r.partition))).toBe(true);
    await waitFor(() => latestAssignment(b)?.length === PARTITIONS, 'the remaining process holding every partition', 60_000, 200);
    await waitFor(() => allCommitted(groupId, topic), 'every partition committed', 120_000);
    await b.stop();
    await expectExact(databaseUrl, workload, topic, groupId, [a, b]);
  });

  it('rides out a broker restart mid-stream: the consumer rejoins, nothing lost, nothing dead-lettered but the poison', async () => {
    const broker = await startKafkaBroker();
    const own = testKafka(broker.brokers);
    try {
      const databaseUrl = await freshDatabase('kc');
      const topic = uniqueName('channel-broker');
      const groupId = uniqueName('g');
      const workload = buildWorkload({ patients: 1500, observations: 1500, partitions: PARTITIONS, seed: 5 });
      const [early, late] = splitPerPartition(workload.records, 0.5);
      await createTopic(own, topic, PARTITIONS);
      await produceWorkload(own, topic, early);
      const p = new ChannelProcess(writeChannelConfig({ databaseUrl, transformersDir, brokers: broker.brokers, topic, groupId }));
      processes.push(p);
      await waitFor(async () => (await committedOffsets(own, groupId, topic)).size > 0, 'progress before the restart', 90_000, 100);
      const complaintsBefore = complaints(p);
      await broker.stop();
      // The broker stays away until the consumer has noticed (it logs the lost connection), however long that takes.
      await waitFor(() => complaints(p) > complaintsBefore, 'the consumer noticing the broker is away', 120_000, 100);
      await broker.start();
      await produceWorkload(own, topic, late);
      await waitFor(async () => {
        const [ends, committed] = await Promise.all([endOffsets(own, topic), committedOffsets(own, groupId, topic)]);
        return [...ends].every(([part, end]) => committed.get(part) === end);
      }, 'every partition committed after the broker restart', 150_000, 500);
      expect(p.child.exitCode, 'the process kept running through the restart').toBeNull();
      await p.stop();
      const { mismatches, deadLetters, duplicateDeadLetters } = await checkTables(databaseUrl, workload, topic);
      expect(mismatches.slice(0, 10), p.output.slice(-3000)).toEqual([]);
      expect(duplicateDeadLetters).toEqual([]);
      expect(deadLetters).toEqual([...workload.poison].sort());
    } finally {
      await broker.destroy();
    }
  });

  it('waits out Postgres stopped mid-stream past the stall limit: nothing lost, nothing dead-lettered but the poison', async () => {
    const db = await startTestPostgres();
    try {
      const topic = uniqueName('channel-pg');
      const groupId = uniqueName('g');
      const workload = buildWorkload({ patients: 1500, observations: 1500, partitions: PARTITIONS, seed: 4 });
      const [early, late] = splitPerPartition(workload.records, 0.5);
      await createTopic(kafka, topic, PARTITIONS);
      await produceWorkload(kafka, topic, early);

      const p = channel(db.url, topic, groupId);
      await waitFor(async () => (await committedCount(groupId, topic)) > early.length * 0.2, 'progress before the outage', 90_000, 50);
      await db.stop();
      // The stream goes on while the database is away.
      await produceWorkload(kafka, topic, late);
      const before = await committedCount(groupId, topic);
      // Backpressure: the database stays away until, past the stall limit, a waiting transaction was let go and its partition paused.
      await waitFor(() => p.logged('sink stalled') > 0, 'a stalled batch let go and its partition paused', 120_000, 200);
      // Nothing can have been committed to Kafka without the database (at most a commit already in flight).
      expect(await committedCount(groupId, topic)).toBeLessThanOrEqual(before + 1000);
      await db.start();

      await waitFor(() => allCommitted(groupId, topic), 'every partition committed after the outage', 120_000);
      expect(p.child.exitCode, 'the process kept running through the outage').toBeNull();
      await p.stop();
      await expectExact(db.url, workload, topic, groupId, [p]);
    } finally {
      await db.destroy();
    }
  });

  it('stops on SIGTERM while the database is away: the stalled batch is abandoned uncommitted, the process exits, a new one ends exact', async () => {
    const db = await startTestPostgres();
    try {
      const topic = uniqueName('channel-term');
      const groupId = uniqueName('g');
      const workload = buildWorkload({ patients: 1500, observations: 1500, partitions: PARTITIONS, seed: 6 });
      await createTopic(kafka, topic, PARTITIONS);
      await produceWorkload(kafka, topic, workload.records);

      const first = channel(db.url, topic, groupId);
      await waitFor(async () => (await committedCount(groupId, topic)) > workload.records.length * 0.2, 'progress before the outage', 90_000, 50);
      await db.stop();
      // SIGTERM only once a batch is waiting for the database.
      await waitFor(() => first.logged('transient database fault') > 0, 'a batch waiting for the stopped database', 120_000, 100);
      const before = await committedCount(groupId, topic);
      const stoppedAt = Date.now();
      const exit = await first.stop(40_000);
      // Within the 10 s grace period and the time to leave the group, not killed.
      expect(exit, first.output.slice(-3000)).toEqual({ code: 0, signal: null });
      expect(Date.now() - stoppedAt).toBeLessThan(30_000);
      expect(await committedCount(groupId, topic), 'nothing committed for the abandoned batch').toBe(before);

      await db.start();
      const second = channel(db.url, topic, groupId);
      await waitFor(() => allCommitted(groupId, topic), 'every partition committed by the new process', 120_000);
      await second.stop();
      await expectExact(db.url, workload, topic, groupId, [first, second]);
    } finally {
      await db.destroy();
    }
  });
  it('dates a tombstone by its record timestamp: consumed as a backlog and replayed by a new group, a resource deleted and then updated again stays live', async () => {
    const databaseUrl = await freshDatabase('kc');
    const topic = uniqueName('channel-tombstone');
    await createTopic(kafka, topic, 1);
    // Two hours ago, a minute apart: version 1, the delete (a tombstone: no version of its own), version 2.
    const t0 = Date.now() - 2 * 3_600_000;
    const at = (minutes: number) => t0 + minutes * 60_000;
    const patient = (id: string, versionId: string, minutes: number) =>
      JSON.stringify({ resourceType: 'Patient', id, meta: { versionId, lastUpdated: new Date(at(minutes)).toISOString() }, gender: 'female', name: [{ family: `${id}-${versionId}` }] });
    const record = (id: string, value: string | null, minutes: number) => ({ key: `Patient/${id}`, value, timestamp: String(at(minutes)) });
    await produce(kafka, topic, [
      record('numeric', patient('numeric', '1', 0), 0),
      record('numeric', null, 1),
      record('numeric', patient('numeric', '2', 2), 2),
      // Medplum's versionIds are UUIDs: only lastUpdated orders its versions.
      record('uuid', patient('uuid', '5f0c1a9e-0000-4000-8000-000000000001', 0), 0),
      record('uuid', null, 1),
      record('uuid', patient('uuid', '5f0c1a9e-0000-4000-8000-000000000002', 2), 2),
      // Deleted for good; a late redelivery of its old version must not bring it back.
      record('gone', patient('gone', '1', 0), 0),
      record('gone', null, 1),
      record('gone', patient('gone', '1', 0), 3),
    ]);

    const expectRows = async (after: string) => {
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      try {
        const { rows } = await client.query<{ source_resource_id: string; version: string | null; deleted_at: Date | null; family: string }>(
          'SELECT source_resource_id, version, deleted_at, family FROM kc_patient ORDER BY source_resource_id',
        );
        expect(rows, after).toMatchObject([
          // The tombstone is dated by its record (minute 1), not by when it was consumed, so the later version 2 applies.
          { source_resource_id: 'Patient/gone', deleted_at: new Date(at(1)), family: 'gone-1' },
          { source_resource_id: 'Patient/numeric', version: '2', deleted_at: null, family: 'numeric-2' },
          { source_resource_id: 'Patient/uuid', version: '5f0c1a9e-0000-4000-8000-000000000002', deleted_at: null, family: 'uuid-5f0c1a9e-0000-4000-8000-000000000002' },
        ]);
      } finally {
        await client.end();
      }
    };

    // A backlog: the consumer starts after everything was produced.
    const firstGroup = uniqueName('g');
    const first = channel(databaseUrl, topic, firstGroup);
    await waitFor(() => allCommitted(firstGroup, topic), 'the backlog committed', 90_000);
    expect(await first.stop(), first.output.slice(-3000)).toEqual({ code: 0, signal: null });
    await expectRows('after the backlog');

    // A replay from offset 0 (a new group), as after a crash before a commit: every event is stale now,
    // the tombstone included, since it is older than version 2.
    const secondGroup = uniqueName('g');
    const second = channel(databaseUrl, topic, secondGroup);
    await waitFor(() => allCommitted(secondGroup, topic), 'the replay committed', 90_000);
    expect(await second.stop(), second.output.slice(-3000)).toEqual({ code: 0, signal: null });
    await expectRows('after the replay');
  });

  it('exits with code 1 when a table is dropped under it: the refused batch stays uncommitted, nothing is dead-lettered, the output names the table', async () => {
    const databaseUrl = await freshDatabase('kc');
    const topic = uniqueName('channel-fatal');
    const groupId = uniqueName('g');
    // No poison, so any dead letter would be one written for the failure.
    const workload = buildWorkload({ patients: 600, observations: 600, partitions: PARTITIONS, seed: 7, poisonEvery: 1_000_000 });
    const [early, late] = splitPerPartition(workload.records, 0.5);
    await createTopic(kafka, topic, PARTITIONS);
    await produceWorkload(kafka, topic, early);

    const p = channel(databaseUrl, topic, groupId);
    await waitFor(() => allCommitted(groupId, topic), 'the first half committed', 90_000);
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      await client.query('DROP TABLE kc_patient CASCADE');
      await produceWorkload(kafka, topic, late);

      // It stops on its own, rather than replaying the refused batch forever.
      const exit = await exitOf(p, 60_000);
      expect(exit, p.output.slice(-3000)).toEqual({ code: 1, signal: null });
      expect(p.output).toContain('kc_patient');
      // One refused batch, reported at error level with where it was, and its offsets left uncommitted.
      const refused = p.output
        .split('\n')
        .filter((l) => l.includes('"msg":"the database refused a batch'))
        .map((l) => JSON.parse(l) as { level: number; topic: string; partition: number; fromOffset: string; toOffset: string; sqlState?: string; error: string });
      expect(refused, p.output.slice(-3000)).toHaveLength(1);
      const [failed] = refused;
      expect(failed).toMatchObject({ level: 50, topic, sqlState: '42P01' });
      expect(failed!.error).toContain('kc_patient');
      const committed = await committedOffsets(kafka, groupId, topic);
      expect(Number(committed.get(failed!.partition)), 'committed past the refused batch').toBeLessThanOrEqual(Number(failed!.fromOffset));
      expect(await allCommitted(groupId, topic)).toBe(false);
      // The process said why it stopped, at error level, and left the group.
      expect(p.logged('fhir-rte start stops')).toBe(1);
      expect(await groupMembers(groupId)).toEqual([]);
      // Nothing dead-lettered for it: the records wait in Kafka for the cause to be fixed.
      const { rows } = await client.query<{ n: string }>('SELECT count(*) AS n FROM fhir_rte.dead_letter');
      expect(rows[0]!.n).toBe('0');
    } finally {
      await client.end();
    }
  });
  // Each test waits at most 120 s for one condition; a slow, shared CI machine gets the rest as headroom.
}, 240_000);

/** The first `fraction` of every partition's records, and the rest: each half keeps per-partition order. */
function splitPerPartition(records: WorkloadRecord[], fraction: number): [WorkloadRecord[], WorkloadRecord[]] {
  const counts = new Map<number, number>();
  for (const r of records) counts.set(r.partition, (counts.get(r.partition) ?? 0) + 1);
  const early: WorkloadRecord[] = [];
  const late: WorkloadRecord[] = [];
  const seen = new Map<number, number>();
  for (const r of records) {
    const i = seen.get(r.partition) ?? 0;
    seen.set(r.partition, i + 1);
    (i < Math.floor(counts.get(r.partition)! * fraction) ? early : late).push(r);
  }
  return [early, late];
}

/** The partitions a process was last assigned, from its 'joined consumer group' log lines. */
function latestAssignment(p: ChannelProcess): number[] | undefined {
  const lines = p.output.split('\n').filter((l) => l.includes('"msg":"joined consumer group"'));
  const last = lines[lines.length - 1];
  if (!last) return undefined;
  const assignment = (JSON.parse(last) as { assignment: Record<string, number[]> }).assignment;
  return Object.values(assignment).flat();
}

/** Warnings and errors a process has logged (pino levels 40 and 50): how a consumer says it lost its broker. */
function complaints(p: ChannelProcess): number {
  return p.output.split('\n').filter((l) => /"level":(40|50)/.test(l)).length;
}

function latestMemberId(p: ChannelProcess): string | undefined {
  const lines = p.output.split('\n').filter((l) => l.includes('"msg":"joined consumer group"'));
  const last = lines[lines.length - 1];
  return last ? (JSON.parse(last) as { memberId: string }).memberId : undefined;
}

function sharing(a: ChannelProcess, b: ChannelProcess): boolean {
  const x = latestAssignment(a);
  const y = latestAssignment(b);
  return Boolean(x?.length && y?.length && x.length + y.length === PARTITIONS);
}
