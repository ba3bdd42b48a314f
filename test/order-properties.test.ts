import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, FhirResource } from '../src/events/change-event.js';
import { arrivalFromMillis } from '../src/events/change-event.js';
import { eventsFromJson, orderOf } from '../src/events/from-fhir.js';
import { freshDatabase } from './support/database.js';
import { openTestSink, transformerDir, type TestSink } from './support/sink.js';

/**
 * Property tests of "order is one value" against the real sink: whatever the batches, duplicates and
 * replays, a sequence of changes ends in one state, and history holds every version delivered, once.
 * Seeded: a failure prints the seed and the shrunk counterexample, and the same seed reproduces it.
 */

const SEED = Number(process.env.FHIR_RTE_PROPERTY_SEED ?? 20_261_130);
const RUNS = Number(process.env.FHIR_RTE_PROPERTY_RUNS ?? 40);

const RULES = `
retainAllHistory: true
transformers:
  - resourceType: Patient
    tableName: patient
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
    childTables:
      - fhirPath: Patient.name
        tableName: patient_name
        columns:
          - { columnName: family, fhirPath: family, columnType: STRING }
`;

const T0 = Date.UTC(2024, 0, 1);
const minute = (m: number) => T0 + m * 60_000;

/** One delivery in the abstract: which resource, what change, and when it arrived (minutes after T0). */
type Change =
  | { kind: 'version'; resource: number; version: Version; gender: string; arrival: number }
  | { kind: 'copy'; resource: number; gender: string; family: string; lastUpdated?: number; arrival: number }
  | { kind: 'delete'; resource: number; version?: Version; arrival: number };

/**
 * A version as a server makes it: numeric (1..8) or not (a word), made at `minute`, delivered with its
 * lastUpdated or without (an etag alone). A resource's versions are all numeric or all not.
 */
interface Version {
  id: string;
  minute: number;
  withTime: boolean;
}

const GENDERS = ['female', 'male', 'other', 'unknown'];

function versionArb(numeric: boolean): fc.Arbitrary<Version> {
  return fc.record({ n: fc.integer({ min: 1, max: 8 }), withTime: fc.boolean() }).map(({ n, withTime }) => ({
    id: numeric ? String(n) : `v-${'abcdefgh'[n - 1]}`,
    minute: n * 2,
    // A version without a number has no order but its time, so it always comes with its time, or (half of
    // them) never: one seen both ways, or an untimed one delivered again later, could not be told from a
    // newer change (it is then ordered by arrival). Untimed ones are delivered once (below).
    withTime: numeric ? withTime : n % 2 === 0,
  }));
}

const changeArb = (numericOf: boolean[]): fc.Arbitrary<Omit<Change, 'arrival'>> =>
  fc.integer({ min: 0, max: numericOf.length - 1 }).chain((resource) =>
    fc.oneof(
      { weight: 5, arbitrary: fc.record({ kind: fc.constant('version' as const), resource: fc.constant(resource), version: versionArb(numericOf[resource]!), gender: fc.constantFrom(...GENDERS) }) },
      {
        weight: 2,
        arbitrary: fc.record(
          { kind: fc.constant('copy' as const), resource: fc.constant(resource), gender: fc.constantFrom(...GENDERS), family: fc.constantFrom('A', 'B'), lastUpdated: fc.integer({ min: 1, max: 17 }) },
          { requiredKeys: ['kind', 'resource', 'gender', 'family'] },
        ),
      },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), resource: fc.constant(resource), version: fc.option(versionArb(numericOf[resource]!), { nil: undefined }) }, { requiredKeys: ['kind', 'resource'] }) },
    ),
  );

/** A sequence of distinct deliveries; each arrives half a minute after the one before (a source's clock). */
const sequenceArb = fc
  .array(fc.boolean(), { minLength: 1, maxLength: 3 })
  .chain((numericOf) => fc.array(changeArb(numericOf), { minLength: 1, maxLength: 18 }))
  .map((changes) => {
    // The same version always carries the same content; an untimed non-numeric version is delivered once;
    // a version is an update or a delete, never both (as on a server).
    const seen = new Set<string>();
    const kindOf = new Map<string, Change['kind']>();
    const out: Change[] = [];
    for (const c of changes) {
      const version = c.kind === 'copy' ? undefined : (c as { version?: Version }).version;
      if (version && (kindOf.get(`${c.resource}/${version.id}`) ?? c.kind) !== c.kind) continue;
      if (version) kindOf.set(`${c.resource}/${version.id}`, c.kind);
      if (version && !version.withTime && !/^\d+$/.test(version.id)) {
        const key = `${c.resource}/${version.id}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      out.push({ ...c, arrival: 0.5 * (out.length + 1) } as Change);
    }
    return out;
  });

/** The ChangeEvent a source would make of a change, for resource ids under `prefix`. */
function eventOf(c: Change, prefix: string): ChangeEvent {
  const id = `${prefix}-r${c.resource}`;
  const origin = { kind: 'kafka' as const, topic: prefix, partition: 0, offset: '0' };
  const arrival = arrivalFromMillis(minute(c.arrival));
  if (c.kind === 'delete') {
    const v = c.version;
    return { op: 'delete', resourceType: 'Patient', id, origin, order: orderOf({ versionId: v?.id, lastUpdated: v?.withTime ? new Date(minute(v.minute)).toISOString() : undefined }, arrival) };
  }
  const resource: FhirResource =
    c.kind === 'version'
      ? {
          resourceType: 'Patient',
          id,
          meta: { versionId: c.version.id, ...(c.version.withTime ? { lastUpdated: new Date(minute(c.version.minute)).toISOString() } : {}) },
          // A version's content follows from the version (a server never serves two contents as one version).
          gender: genderOf(c.version.id),
          name: [{ family: familyOf(c.version.id) }],
        }
      : { resourceType: 'Patient', id, ...(c.lastUpdated ? { meta: { lastUpdated: new Date(minute(c.lastUpdated)).toISOString() } } : {}), gender: c.gender, name: [{ family: c.family }] };
  return eventsFromJson(resource, origin, arrival)[0]!;
}

let t: TestSink;
beforeAll(async () => {
  t = await openTestSink(await freshDatabase('prop'), transformerDir({ 'patient.yaml': RULES }));
});
afterAll(() => t?.close());

async function reset(): Promise<void> {
  await t.pool.query('TRUNCATE patient, patient_name, patient_history, patient_name_history, fhir_rte.resource_state, fhir_rte.dead_letter CASCADE');
}

/** Everything a user could see of the resources under `prefix`, with the prefix taken out. */
async function snapshot(prefix: string): Promise<unknown> {
  const like = `Patient/${prefix}-%`;
  const q = async (sql: string) => JSON.parse(JSON.stringify((await t.pool.query(sql, [like])).rows).replaceAll(`${prefix}-r`, 'r'));
  return {
    patient: await q(`SELECT source_resource_id, version, deleted_at, gender FROM patient WHERE source_resource_id LIKE $1 ORDER BY 1`),
    names: await q(`SELECT source_resource_id, version, deleted_at, family FROM patient_name WHERE source_resource_id LIKE $1 ORDER BY 1, 4`),
    // History as a set of versions: the order rows were recorded in follows delivery (a late version is
    // appended after its batch's own versions), not the versions' order.
    history: await q(`SELECT source_resource_id, version, deleted_at, gender FROM patient_history WHERE source_resource_id LIKE $1 ORDER BY 1, 2, 3, 4`),
    nameHistory: await q(`SELECT source_resource_id, version, deleted_at, family FROM patient_name_history WHERE source_resource_id LIKE $1 ORDER BY 1, 2, 3, 4`),
    state: await q(
      `SELECT resource_type || '/' || resource_id AS key, version_id, last_updated, after_version, arrival, deleted, content_digest = sha256(convert_to(resource::text, 'UTF8')) AS digest_of_doc, resource::text AS doc
         FROM fhir_rte.resource_state WHERE resource_type || '/' || resource_id LIKE $1 ORDER BY 1`,
    ),
  };
}

/** A version's content, as the generators make it: its gender and its one name follow from its id. */
const genderOf = (versionId: string) => GENDERS[versionId.length % GENDERS.length]!;
const familyOf = (versionId: string) => `F-${versionId}`;

/**
 * The reference of "history holds every version delivered, once", for the resources under `prefix`:
 * each resource version is in each history table at most once; every live (not deleted) versioned entry
 * there is an upsert version that was delivered, with that version's content; and every upsert version
 * delivered is there, whatever the order it came in.
 */
async function expectEveryVersionOnce(prefix: string, changes: Change[], label: string): Promise<void> {
  const like = `Patient/${prefix}-r%`;
  const key = (resource: number, version: string) => `Patient/${prefix}-r${resource} ${version}`;
  const delivered = new Set(changes.flatMap((c) => (c.kind === 'version' ? [key(c.resource, c.version.id)] : [])));
  for (const [table, content, expected] of [
    ['patient_history', 'gender', genderOf],
    ['patient_name_history', 'family', familyOf],
  ] as const) {
    const { rows: twice } = await t.pool.query(
      `SELECT source_resource_id, version, count(*)::int AS n FROM ${table} WHERE source_resource_id LIKE $1 AND version IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1`,
      [like],
    );
    expect(twice, `${label}: resource versions in ${table} more than once`).toEqual([]);
    const { rows } = await t.pool.query(
      `SELECT source_resource_id || ' ' || version AS k, version, ${content} AS content FROM ${table} WHERE source_resource_id LIKE $1 AND version IS NOT NULL AND deleted_at IS NULL`,
      [like],
    );
    expect(rows.filter((r) => !delivered.has(r.k) || r.content !== expected(r.version)), `${label}: ${table} entries that are no delivered version`).toEqual([]);
    const present = new Set(rows.map((r) => r.k as string));
    expect([...delivered].filter((k) => !present.has(k)), `${label}: versions delivered but missing from ${table}`).toEqual([]);
  }
}

async function applyInBatches(events: ChangeEvent[], sizes: number[]): Promise<number> {
  let applied = 0;
  for (let i = 0, k = 0; i < events.length; k++) {
    const size = sizes.length ? sizes[k % sizes.length]! : events.length;
    applied += (await t.sink.apply(events.slice(i, i + size))).applied;
    i += size;
  }
  return applied;
}

describe('order as one value, on random histories', () => {
  it('one batch, random batch splits and one by one end in the same state; duplicates and replays change nothing; history holds every version delivered, once', async () => {
    const scenario = fc.record({
      changes: sequenceArb,
      splits: fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 6 }),
      duplicated: fc.array(fc.nat(), { maxLength: 6 }),
      replayFrom: fc.nat(),
    });
    await fc.assert(
      fc.asyncProperty(scenario, async ({ changes, splits, duplicated, replayFrom }) => {
        await reset();
        const of = (prefix: string) => changes.map((c) => eventOf(c, prefix));
        await applyInBatches(of('b'), []);
        await applyInBatches(of('s'), splits);
        await applyInBatches(of('o'), [1]);
        const once = await snapshot('b');
        expect(await snapshot('s'), 'random batch splits').toEqual(once);
        expect(await snapshot('o'), 'one by one').toEqual(once);

        // Duplicates: some deliveries come twice in a row (a redelivered record: the same arrival).
        const dup = of('d').flatMap((e, i) => (duplicated.some((d) => d % changes.length === i) ? [e, e] : [e]));
        await applyInBatches(dup, splits);
        expect(await snapshot('d'), 'with duplicates').toEqual(once);

        // A replay: the stream again from some point on, as after a lost commit, changes nothing.
        const replay = of('b').slice(replayFrom % changes.length);
        expect(await applyInBatches(replay, splits), 'a replay applies nothing').toBe(0);
        expect(await snapshot('b'), 'after a replay').toEqual(once);

        // History holds every version delivered once, late ones too (a version's upsert, and a versioned delete).
        await expectEveryVersionOnce('b', changes, 'in order, then a replay');
        await expectEveryVersionOnce('d', changes, 'with duplicates');
      }),
      { seed: SEED, numRuns: RUNS },
    );
  }, 300_000);

  it('a server history delivered in any order, with duplicates and replays, ends as the server last left each resource, every version in history once', async () => {
    // Per resource, the server's history: updates and deletes, one every two minutes; each change takes
    // the next version (numeric or a word), an update always names it, a delete may not (a tombstone).
    // Each delivery arrives at its change's time (a record timestamp), duplicates at the same time.
    const history = fc.record({
      numeric: fc.boolean(),
      steps: fc.array(fc.record({ del: fc.boolean(), named: fc.boolean(), timed: fc.boolean() }), { minLength: 1, maxLength: 6 }),
    });
    const scenario = fc.record({
      histories: fc.array(history, { minLength: 1, maxLength: 3 }),
      order: fc.array(fc.nat(), { minLength: 30, maxLength: 30 }),
      duplicated: fc.array(fc.nat(), { maxLength: 4 }),
      splits: fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 }),
    });
    await fc.assert(
      fc.asyncProperty(scenario, async ({ histories, order, duplicated, splits }) => {
        await reset();
        const deliveries: Change[] = [];
        const last = new Map<number, Change>();
        histories.forEach((h, resource) => {
          h.steps.forEach((step, i) => {
            const n = i + 1;
            // An update carries its lastUpdated, as servers send them; a delete may carry a version (HAPI's payloadVersion), a time, both or neither.
            const version: Version = { id: h.numeric ? String(n) : `w-${n}`, minute: 2 * n, withTime: true };
            // A server's first change is a create; a deleted resource is re-created, not deleted again.
            const del = step.del && i > 0 && last.get(resource)?.kind !== 'delete';
            const change: Change = del
              ? { kind: 'delete', resource, ...(step.named ? { version: { ...version, withTime: step.timed } } : {}), arrival: 2 * n }
              : { kind: 'version', resource, version, gender: genderOf(version.id), arrival: 2 * n };
            deliveries.push(change);
            last.set(resource, change);
          });
        });
        // Any order (a shuffle by the random keys), and some deliveries twice.
        const shuffled = deliveries.map((d, i) => ({ d, key: order[i % order.length]! * 100 + i })).sort((a, b) => a.key - b.key).map((x) => x.d);
        const withDuplicates = shuffled.flatMap((d, i) => (duplicated.some((k) => k % shuffled.length === i) ? [d, d] : [d]));
        await applyInBatches(withDuplicates.map((c) => eventOf(c, 'm')), splits);
        await expectEveryVersionOnce('m', deliveries, 'any order');
        // Replayed in the reverse order, one by one: nothing changes, history included.
        const before = await snapshot('m');
        await applyInBatches([...withDuplicates].reverse().map((c) => eventOf(c, 'm')), [1]);
        expect(await snapshot('m'), 'after a replay in reverse').toEqual(before);

        const { rows } = await t.pool.query(`SELECT source_resource_id, version, deleted_at IS NOT NULL AS deleted, gender FROM patient WHERE source_resource_id LIKE 'Patient/m-%' ORDER BY 1`);
        for (const [resource, c] of last) {
          const row = rows.find((r) => r.source_resource_id === `Patient/m-r${resource}`);
          if (c.kind === 'version') {
            expect(row, `resource ${resource} lives at its last version`).toEqual({ source_resource_id: `Patient/m-r${resource}`, version: c.version.id, deleted: false, gender: genderOf(c.version.id) });
          } else if (c.kind === 'delete') {
            // Deleted; without rows at all when the tombstone came before any version it would have flagged.
            // (The rows keep the version of the delete that flagged them: a later delete that finds the
            // resource deleted already changes no row.)
            if (row) expect(row, `resource ${resource} is deleted`).toMatchObject({ deleted: true });
          }
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
  }, 300_000);
});
