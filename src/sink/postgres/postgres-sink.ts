import type pg from 'pg';
import type { Logger } from 'pino';
import { markRetried, recordDeadLetters } from '../../deadletter/dead-letter.js';
import { describeOrigin, resourceKey, type ChangeEvent } from '../../events/change-event.js';
import type { TableSpec, Transformer } from '../../transform/transformer.js';
import { microsToIso } from '../guard.js';
import { digestOf, planBatch, type AppliedVersion, type BatchPlan, type Poison, type ResourcePlan, type ResourceState } from '../plan.js';
import { addOutcome, countEvent, emptyOutcome, SinkFailure, type BatchOutcome, type Sink } from '../sink.js';
import { classify, sqlDetail, tooLong } from './fault.js';
import { retryTransient, type RetryPolicy, type Stall } from './retry.js';
import { unlessAborted } from '../../retry/abortable.js';
import { inTransaction } from './transaction.js';
import type { Troubleshoot } from '../troubleshoot.js';
import {
  copyRows,
  deleteRows,
  flagDeleted,
  historyOfDeletes,
  insertAbsentHistory,
  lockStates,
  readStates,
  StatementError,
  writeStates,
  type StateWrite,
  type Tombstone,
  type VersionedRow,
} from './statements.js';

export interface PostgresSinkOptions {
  schema: string;
  transformers: Transformer[];
  deleteMode: 'logical' | 'hard';
  storeResources: boolean;
  maxEvents: number;
  retry: RetryPolicy;
  logger: Logger;
  /** The troubleshooting log of chosen events (`troubleshoot` in the configuration). */
  troubleshoot?: Troubleshoot;
}

/**
 * Applies batches of ChangeEvents to Postgres, one transaction per batch: read the batch's guard states,
 * plan (guard, transform, collapse), swap the states (compare-and-swap on their revision), write rows,
 * history and dead letters.
 * When the database refuses a value, the batch is split in halves until the refused record stands alone;
 * that record is dead-lettered and the rest commits.
 */
export class PostgresSink implements Sink {
  /** The transformers of each resource type; replaced whole by useTransformers, read once per transaction. */
  private byType = new Map<string, Transformer[]>();
  private readonly inFlight = new Set<{ keys: Set<string>; done: Promise<BatchOutcome> }>();
  /** Batches that transient faults keep from committing, each with its own stall. */
  private readonly stalls = new Map<object, Stall>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: PostgresSinkOptions,
  ) {
    this.useTransformers(options.transformers);
  }

  /**
   * Swaps in new transformers (a reload after a fix): batches that start from now on use them; a
   * transaction in flight finishes with the ones it began with.
   */
  useTransformers(transformers: Transformer[]): void {
    const byType = new Map<string, Transformer[]>();
    for (const t of transformers) byType.set(t.resourceType, [...(byType.get(t.resourceType) ?? []), t]);
    this.byType = byType;
  }

  /** Whether a transformer reads resources of this type now: the others are kept as their documents alone. */
  flattens(resourceType: string): boolean {
    return this.byType.has(resourceType);
  }

  /**
   * The longest-running stall, while any batch waits out transient faults: for health checks and metrics.
   * A batch abandoned (its signal aborted) is no longer stalled: its entry goes as its apply rejects.
   */
  get stall(): Stall | undefined {
    return [...this.stalls.values()].sort((a, b) => a.since.getTime() - b.since.getTime())[0];
  }

  /** How many batches wait out transient faults now: for metrics. */
  get batchesRetrying(): number {
    return this.stalls.size;
  }

  /**
   * Batches may arrive concurrently (Kafka partitions, a file load with batches in flight). Those that
   * share no resource run side by side; one that shares a resource with an earlier batch waits for it,
   * so every resource sees its changes in call order, which matters for input without versions.
   * Aborting the signal abandons the batch at once, also while it waits for an earlier one: its
   * transaction rolls back and the batches after it no longer wait for it.
   */
  async apply(batch: ChangeEvent[], signal?: AbortSignal): Promise<BatchOutcome> {
    this.options.troubleshoot?.received(batch);
    const keys = new Set<string>();
    for (const e of batch) if (e.op !== 'unreadable') keys.add(resourceKey(e));
    const earlier = [...this.inFlight].filter((f) => overlaps(f.keys, keys)).map((f) => f.done);
    const turn = unlessAborted(Promise.allSettled(earlier), signal);
    const entry = { keys, done: turn.then(() => this.applyChunks(batch, signal)) };
    this.inFlight.add(entry);
    try {
      return await entry.done;
    } finally {
      this.inFlight.delete(entry);
    }
  }

  private async applyChunks(batch: ChangeEvent[], signal?: AbortSignal): Promise<BatchOutcome> {
    const total = emptyOutcome();
    for (let i = 0; i < batch.length; i += this.options.maxEvents) {
      signal?.throwIfAborted();
      addOutcome(total, await this.applyIsolating(batch.slice(i, i + this.options.maxEvents), signal));
    }
    return total;
  }

  /**
   * Applies the events in one transaction, or in halves when that cannot be: the database refused a value
   * (poison: halved until the refused record stands alone and is dead-lettered), or a statement ran past
   * statement_timeout (halved until the parts run in time; a single event is retried as any transient fault).
   */
  private async applyIsolating(events: ChangeEvent[], signal?: AbortSignal): Promise<BatchOutcome> {
    try {
      return await this.retrying(() => this.transaction(events, signal), signal, (err) => events.length > 1 && tooLong(err));
    } catch (err) {
      if (signal?.aborted) throw err;
      const fault = classify(err);
      if (fault === 'fatal') throw err instanceof SinkFailure ? err : new SinkFailure(err);
      if (fault === 'poison' && events.length === 1) return this.retrying(() => this.deadLetterAlone(events[0]!, err, signal), signal);
      if (fault === 'transient') {
        this.options.logger.warn({ events: events.length, err: (err as Error).message }, 'a statement ran past statement_timeout; applying the batch in halves');
      }
      const mid = Math.ceil(events.length / 2);
      const first = await this.applyIsolating(events.slice(0, mid), signal);
      return addOutcome(first, await this.applyIsolating(events.slice(mid), signal));
    }
  }

  private async retrying<T>(attempt: () => Promise<T>, signal?: AbortSignal, handOver?: (err: unknown) => boolean): Promise<T> {
    const call = {};
    const onStall = (s: Stall | undefined) => (s ? this.stalls.set(call, s) : this.stalls.delete(call));
    try {
      return await retryTransient(attempt, { policy: this.options.retry, logger: this.options.logger, onStall, signal, handOver });
    } finally {
      this.stalls.delete(call);
    }
  }

  private async transaction(events: ChangeEvent[], signal?: AbortSignal): Promise<BatchOutcome> {
    const { plan, states } = await inTransaction(this.pool, async (client) => {
      const keyed = events.filter((e): e is Exclude<ChangeEvent, { op: 'unreadable' }> => e.op !== 'unreadable');
      const unique = new Map(keyed.map((e) => [resourceKey(e), e]));
      const states: Map<string, ResourceState> = unique.size
        ? await readStates(client, [...unique.values()].map((e) => e.resourceType), [...unique.values()].map((e) => e.id))
        : new Map();
      const byType = this.byType;
      const plan = planBatch(events, states, (type) => byType.get(type) ?? []);
      await this.write(client, plan, byType);
      await recordDeadLetters(client, plan.poison);
      await markRetried(client, replaysTaken(plan));
      return { plan, states };
    }, signal);
    // After the commit: the troubleshooting log tells what happened, not what a rolled-back attempt planned.
    this.options.troubleshoot?.committed(plan, states);
    return outcomeOf(plan);
  }

  private async deadLetterAlone(event: ChangeEvent, err: unknown, signal?: AbortSignal): Promise<BatchOutcome> {
    const table = err instanceof StatementError ? err.table : undefined;
    const cause = err instanceof StatementError ? err.cause : err;
    const poison: Poison = {
      event,
      errorClass: 'DatabaseRejected',
      message: `the database refused the record${table ? ` in table ${table}` : ''}: ${(cause as Error).message}`,
      detail: { ...sqlDetail(cause), ...(table ? { table } : {}) },
    };
    await inTransaction(this.pool, (client) => recordDeadLetters(client, [poison]), signal);
    this.options.troubleshoot?.deadLettered([poison]);
    // Postgres quotes the refused value in its message, which may be patient data: the log names only
    // where it came from and why; the dead letter holds the rest.
    const { sqlState, column, constraint } = poison.detail ?? {};
    this.options.logger.warn({ source: describeOrigin(event.origin), sqlState, table, column, constraint }, 'record dead-lettered: the database refused a value');
    return countEvent(emptyOutcome(), event, 'deadLettered');
  }

  private async write(client: pg.ClientBase, plan: BatchPlan, byType: Map<string, Transformer[]>): Promise<void> {
    const { schema, deleteMode } = this.options;
    const w = collectWrites(plan, deleteMode, (type) => (byType.get(type) ?? []).flatMap((t) => t.tables));
    const states = plan.resources.map((r) => stateOf(r, this.options.storeResources));
    // Late versions change no state, so no swap serializes them: their resources' state rows are locked
    // (with those the swap writes, in one sorted statement, so writers still lock in one order) until the
    // commit, and an anti-join after the lock sees what any other writer committed to history.
    if (w.late.size) await lockStates(client, [...states, ...plan.late]);
    // The state swap first: it is what serializes concurrent writers of the same resource.
    await writeStates(client, states);
    for (const [spec, tombstones] of w.historyOfDeletes) await historyOfDeletes(client, schema, spec, tombstones);
    for (const [spec, keys] of [...w.clear].reverse()) await deleteRows(client, schema, spec, keys);
    for (const [spec, rows] of w.insert) await copyRows(client, schema, spec, rows);
    for (const [spec, tombstones] of w.flag) await flagDeleted(client, schema, spec, tombstones);
    for (const [spec, rows] of w.history) await copyRows(client, schema, spec, rows, true);
    // After this batch's own history, so the anti-join also sees the versions it applied.
    for (const [spec, rows] of w.late) await insertAbsentHistory(client, schema, spec, rows);
  }
}

function overlaps(a: Set<string>, b: Set<string>): boolean {
  const [small, large] = a.size < b.size ? [a, b] : [b, a];
  for (const k of small) if (large.has(k)) return true;
  return false;
}

/** Every event of the plan counted once: applied, skipped (no transformer covers its type), stale or dead-lettered. */
function outcomeOf(plan: BatchPlan): BatchOutcome {
  const outcome = emptyOutcome();
  for (const r of plan.resources) for (const v of r.versions) countEvent(outcome, v.event, r.covered ? 'applied' : 'skipped');
  for (const e of plan.stale) countEvent(outcome, e, 'stale');
  for (const p of plan.poison) countEvent(outcome, p.event, 'deadLettered');
  return outcome;
}

/** Replayed dead letters that applied or were stale: retried, no longer failed. (Not copied out for every batch: most hold no replay.) */
function replaysTaken(plan: BatchPlan): ChangeEvent[] {
  const replays: ChangeEvent[] = [];
  for (const e of plan.stale) if (e.origin.kind === 'replay') replays.push(e);
  for (const r of plan.resources) for (const v of r.versions) if (v.event.origin.kind === 'replay') replays.push(v.event);
  return replays;
}

/** The statements one batch needs, grouped per table so each runs once for the whole batch. */
interface Writes {
  historyOfDeletes: Map<TableSpec, Tombstone[]>;
  clear: Map<TableSpec, string[]>;
  insert: Map<TableSpec, VersionedRow[]>;
  flag: Map<TableSpec, Tombstone[]>;
  history: Map<TableSpec, VersionedRow[]>;
  /** Late versions' rows (and those of versions that may have come late before), for history tables that lack them. */
  late: Map<TableSpec, VersionedRow[]>;
}

function collectWrites(plan: BatchPlan, deleteMode: 'logical' | 'hard', tablesOf: (type: string) => TableSpec[]): Writes {
  const w: Writes = { historyOfDeletes: new Map(), clear: new Map(), insert: new Map(), flag: new Map(), history: new Map(), late: new Map() };
  for (const l of plan.late) {
    for (const t of tablesOf(l.resourceType)) if (t.history) push(w.late, t, ...versionedRows(l.version, t, l.key));
  }
  for (const r of plan.resources) {
    const tables = tablesOf(r.resourceType);
    if (!tables.length || !r.versions.length) continue;
    const final = r.versions[r.versions.length - 1]!;
    const live = lastUpsert(r);
    const tombstone = final.event.op === 'delete' ? tombstoneOf(r.key, final) : undefined;
    const replace = live && !(tombstone && deleteMode === 'hard');
    if (r.existed && (replace || (tombstone && deleteMode === 'hard'))) for (const t of tables) push(w.clear, t, r.key);
    for (const t of tables) {
      if (replace) push(w.insert, t, ...versionedRows(live, t, r.key, tombstone));
      else if (tombstone && deleteMode === 'logical') push(w.flag, t, tombstone);
      if (t.history) collectHistory(w, t, r);
    }
  }
  return w;
}

/** Every applied version's rows, in order; a delete repeats the last live rows, marked deleted. */
function collectHistory(w: Writes, table: TableSpec, r: ResourcePlan): void {
  let live: AppliedVersion | undefined;
  for (const v of r.versions) {
    if (v.rows) {
      live = v;
      if (v.history !== 'skip') push(v.history === 'ifAbsent' ? w.late : w.history, table, ...versionedRows(v, table, r.key));
      continue;
    }
    const tombstone = tombstoneOf(r.key, v);
    if (live) push(w.history, table, ...versionedRows(live, table, r.key, tombstone));
    else if (r.existed) push(w.historyOfDeletes, table, tombstone);
  }
}

function versionedRows(v: AppliedVersion, table: TableSpec, key: string, tombstone?: Tombstone): VersionedRow[] {
  const rows = v.rows?.get(table.name) ?? [];
  const version = tombstone ? tombstone.version : v.versionId;
  const deletedAt = tombstone?.deletedAt ?? null;
  return rows.map((row) => ({ row, key, version, deletedAt }));
}

function tombstoneOf(key: string, v: AppliedVersion): Tombstone {
  // A delete always has a time: its lastUpdated, or its arrival (see guard.ts positionOf).
  return { key, version: v.versionId, deletedAt: microsToIso(v.timeMicros!) };
}

function stateOf(r: ResourcePlan, storeResources: boolean): StateWrite {
  const live = lastUpsert(r);
  return {
    resourceType: r.resourceType,
    id: r.id,
    versionId: r.state.versionId,
    lastUpdatedMicros: r.state.lastUpdatedMicros,
    afterVersion: r.state.afterVersion,
    arrivalMicros: r.state.arrivalMicros,
    deleted: r.state.deleted,
    // The last live document; none applied in this batch keeps the stored one (a tombstone's too). A
    // digest the planner left to the database is computed here when the document is not sent.
    digest: live ? (live.digest ?? (storeResources ? null : digestOf(live.document!))) : null,
    resourceJson: live && storeResources ? live.document! : null,
    revision: r.revision + 1,
    existed: r.existed,
  };
}

function lastUpsert(r: ResourcePlan): AppliedVersion | undefined {
  for (let i = r.versions.length - 1; i >= 0; i--) if (r.versions[i]!.event.op === 'upsert') return r.versions[i];
  return undefined;
}

function push<K, V>(map: Map<K, V[]>, key: K, ...values: V[]): void {
  const list = map.get(key);
  if (list) list.push(...values);
  else map.set(key, [...values]);
}
