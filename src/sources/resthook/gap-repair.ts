import type pg from 'pg';
import type { Logger } from 'pino';
import type { FhirClient } from '../../fhir-client/fhir-client.js';
import { FhirServerError } from '../../fhir-client/fhir-error.js';
import { historyPages } from '../../fhir-client/history.js';
import { classify } from '../../sink/postgres/fault.js';
import { addOutcome, emptyOutcome, type BatchOutcome } from '../../sink/sink.js';
import type { ApplyBatch, Source } from '../source.js';
import type { CatchUp } from './server-reads.js';


export interface GapRepairOptions {
  client: FhirClient;
  /** Holds the watermark (`fhir_rte.checkpoint`) and the advisory lock that lets one member repair at a time. */
  pool: pg.Pool;
  /** Types whose `_history` is read; empty: the system-level `_history`. */
  types: string[];
  pageSize: number;
  repairEveryMs: number;
  /** How far before the watermark a walk starts again: `_history` is by lastUpdated, and deliveries lag it. */
  marginMs: number;
  /** Without a watermark: read all history (`full`, what makes the tables equal the server) or start at now. */
  firstRepair: 'full' | 'now';
  /** How soon a requested walk that found another member walking tries again (default 1 s). */
  lockRetryMs?: number;
  logger: Logger;
}

export type RepairResult =
  | { walked: false; reason: string }
  | { walked: true; since?: Date; watermark: Date; pages: number; outcome: BatchOutcome };

/**
 * Gap repair: HAPI drops a delivery after about a minute of failures and never sends it again (wire doc
 * §4), so fhir-rte reads the server's `_history` itself — at start, every `repairEveryMs`, and on
 * `request` (an empty POST, a detected gap) — from its watermark minus a margin to the end, and feeds every
 * page through the sink like any delivery (duplicates are stale under the guard). The watermark moves only
 * after the last page has committed, to the server's time at the first page: whatever was written during
 * the walk is read again by the next one. Requests are coalesced: any number before a walk starts make
 * that walk, any number during a walk make one more after it.
 */
export class GapRepair implements Source, CatchUp {
  readonly checkpointName: string;
  /** Walks completed since this repairer was made. */
  walks = 0;
  /** True while run() waits for the schedule or a request. */
  waiting = false;
  /** The watermark as last read or saved: for metrics and health, which must not query a database that may be away. */
  knownWatermark?: Date;
  /**
   * Why the last walk failed, when the FHIR server refused it for a reason retrying soon cannot fix (401
   * after a token rotation, `_history` not supported); cleared by the next walk that completes. For /readyz.
   */
  failure?: string;
  /** A walk is due: the one at start, or one requested since the last began. */
  private pending = true;
  private wake?: () => void;

  constructor(private readonly options: GapRepairOptions) {
    const types = options.types.length ? `:${options.types.join(',')}` : '';
    this.checkpointName = `resthook-history:${options.client.baseUrl}${types}`;
  }

  request(reason: string): void {
    this.options.logger.debug({ reason }, 'gap repair requested');
    this.pending = true;
    this.wake?.();
  }

  /**
   * Repairs now, then on schedule and on request, until the signal aborts; stops on a fault of the database
   * or of fhir-rte that retrying cannot fix. A refusal by the FHIR server (FhirServerError) is logged at
   * error level and kept in `failure` for /readyz; the next scheduled walk tries again. A requested walk that finds another member walking is tried again when that walk may have ended:
   * the other walk may have started before the change that prompted the request.
   */
  async run(apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const requested = this.pending;
      this.pending = false;
      const turn = await this.turn(apply, signal);
      // Refused by the server: requests (a burst of empty POSTs) wait for the schedule rather than repeat the refusal.
      if (turn === 'refused') {
        await this.pause(signal, this.options.repairEveryMs, false);
        continue;
      }
      const busy = turn === 'busy' && requested;
      if (busy) this.pending = true;
      if (busy || !this.pending) await this.pause(signal, busy ? this.options.lockRetryMs ?? 1000 : this.options.repairEveryMs);
    }
  }

  private async turn(apply: ApplyBatch, signal: AbortSignal): Promise<'walked' | 'busy' | 'failed' | 'refused'> {
    try {
      return (await this.repairOnce(apply, signal)).walked ? 'walked' : 'busy';
    } catch (err) {
      if (signal.aborted) return 'failed';
      if (isTransient(err)) {
        this.options.logger.warn({ err: (err as Error).message }, 'gap repair failed; the watermark stays, the next repair reads again');
        return 'failed';
      }
      // The database's fatal faults (a SinkFailure) and fhir-rte's own stop the process; the FHIR server's
      // refusals stop only gap repair until they are fixed: the receiver keeps taking deliveries.
      if (!(err instanceof FhirServerError)) throw err;
      this.failure = err.message;
      this.options.logger.error(
        { err: err.message, status: err.status, url: err.url },
        'gap repair failed: the FHIR server refused it (fix fhirServer.auth, or its _history support); the watermark stays, the receiver keeps running, the next scheduled repair tries again',
      );
      return 'refused';
    }
  }

  /** One walk, unless another member holds the repair lock; the watermark moves only when the walk completes. */
  async repairOnce(apply: ApplyBatch, signal?: AbortSignal): Promise<RepairResult> {
    const lock = await this.options.pool.connect();
    let broken: Error | undefined;
    try {
      if (!(await this.tryLock(lock))) return { walked: false, reason: 'another fhir-rte member is repairing' };
      try {
        return await this.walk(apply, signal);
      } finally {
        broken = await lock.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [this.checkpointName]).then(() => undefined, (err: Error) => err);
      }
    } finally {
      // A connection that could not unlock is closed, which ends its session lock too.
      lock.release(broken ?? false);
    }
  }

  private async walk(apply: ApplyBatch, signal?: AbortSignal): Promise<RepairResult> {
    const since = await this.since();
    const startedMs = Date.now();
    let watermarkMs: number | undefined;
    let pages = 0;
    const outcome = emptyOutcome();
    const { client, types, pageSize, logger } = this.options;
    logger.info({ since: since?.toISOString() ?? '(all history)', server: client.baseUrl }, 'gap repair: reading _history');
    for await (const page of historyPages(client, { types, since, pageSize }, signal)) {
      watermarkMs ??= page.serverTimeMs ?? startedMs;
      if (page.events.length) addOutcome(outcome, await apply(page.events, signal));
      pages++;
    }
    const watermark = new Date(watermarkMs ?? startedMs);
    await this.saveWatermark(watermark);
    this.walks++;
    this.failure = undefined;
    logger.info({ pages, received: outcome.received, applied: outcome.applied, stale: outcome.stale, deadLettered: outcome.deadLettered, watermark: watermark.toISOString() }, 'gap repair: done');
    return { walked: true, since, watermark, pages, outcome };
  }

  private async tryLock(client: pg.PoolClient): Promise<boolean> {
    const { rows } = await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS got', [this.checkpointName]);
    return rows[0]!.got;
  }

  /** Where the walk starts: the watermark minus the margin; without one, everything or now minus the margin. */
  private async since(): Promise<Date | undefined> {
    const saved = await this.watermark();
    const { marginMs, firstRepair } = this.options;
    if (saved) return new Date(saved.getTime() - marginMs);
    return firstRepair === 'full' ? undefined : new Date(Date.now() - marginMs);
  }

  async watermark(): Promise<Date | undefined> {
    const { rows } = await this.options.pool.query<{ since: string }>(`SELECT value->>'since' AS since FROM fhir_rte.checkpoint WHERE name = $1`, [this.checkpointName]);
    const at = rows[0] ? new Date(rows[0].since) : undefined;
    if (at) this.knownWatermark = at;
    return at;
  }

  private async saveWatermark(at: Date): Promise<void> {
    await this.options.pool.query(
      `INSERT INTO fhir_rte.checkpoint (name, value, updated_at) VALUES ($1, $2, now())
       ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()`,
      [this.checkpointName, { since: at.toISOString() }],
    );
    this.knownWatermark = at;
  }

  /** Waits `ms`, until a request (when `wakeable`), or until the end. */
  private async pause(signal: AbortSignal, ms: number, wakeable = true): Promise<void> {
    if (signal.aborted) return;
    let end!: () => void;
    const ended = new Promise<void>((resolve) => (end = resolve));
    const timer = setTimeout(end, ms);
    signal.addEventListener('abort', end, { once: true });
    if (wakeable) this.wake = end;
    this.waiting = true;
    await ended;
    this.waiting = false;
    this.wake = undefined;
    clearTimeout(timer);
    signal.removeEventListener('abort', end);
  }
}

function isTransient(err: unknown): boolean {
  return err instanceof FhirServerError ? err.fault === 'transient' : classify(err) === 'transient';
}
