import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { PostgresSink } from '../sink/postgres/postgres-sink.js';
import { loadTransformers, transformerFiles } from '../transform/load-transformers.js';
import { planSchema } from '../sink/postgres/schema.js';
import type { Transformer } from '../transform/transformer.js';
import { DriftError } from './exit-codes.js';
import { prepareTables } from './runtime.js';

export interface ReloadResult {
  /** False when the files on disk were those already in use. */
  reloaded: boolean;
  /** How many transformers are in use after a reload. */
  transformers?: number;
}

/**
 * Puts the transformers on disk into a running process's sink, so that a fixed transformer takes effect
 * without a restart: for the live sources and for dead-letter retries alike (a retry reloads first when
 * the files changed, so it runs through what is on disk, as `fhir-rte dead-letter retry` does).
 *
 * A reload is all or nothing: the files must load (an error names file and JSON pointer) and the tables
 * must match them (drift refused, missing tables created as at start); otherwise the transformers in use
 * stay. Reloads run one at a time.
 */
export class TransformerReload {
  /** Digest of the files in use; unknown until the first reload (the start loaded them without one). */
  private digest: string | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: { config: Config; pool: pg.Pool; sink: PostgresSink; logger: Logger }) {}

  /** Reloads when the files changed since the last reload (or always, with `force`). */
  reload(force = false): Promise<ReloadResult> {
    const next = this.queue.then(() => this.reloadNow(force));
    this.queue = next.catch(() => {});
    return next;
  }

  private async reloadNow(force: boolean): Promise<ReloadResult> {
    const { config, pool, sink, logger } = this.deps;
    // The digest is taken before reading: a file changed while loading differs next time, and loads again.
    const digest = digestOf(config.transformersDir);
    if (!force && digest === this.digest) return { reloaded: false };
    const transformers = loadTransformers(config.transformersDir);
    if (!config.createTables) await refuseMissingTables(pool, config, transformers);
    await prepareTables(pool, config, transformers, config.createTables, logger);
    sink.useTransformers(transformers);
    this.digest = digest;
    logger.info({ dir: config.transformersDir, transformers: transformers.length }, 'transformers reloaded');
    return { reloaded: true, transformers: transformers.length };
  }
}

/**
 * With createTables off, a new table is not made; swapping in transformers that write to it would stop
 * the process at its first batch (a table that is not there is a fault retrying cannot fix).
 */
async function refuseMissingTables(pool: pg.Pool, config: Config, transformers: Transformer[]): Promise<void> {
  const plan = await planSchema(pool, config.database.schema, transformers.flatMap((t) => t.tables));
  if (plan.missing.length) {
    throw new DriftError(`tables ${plan.missing.map((m) => m.table).join(', ')} do not exist and createTables is off: create them (fhir-rte schema --apply), then reload`);
  }
}

/** The transformer files' names and contents, hashed: whether what is on disk changed. */
function digestOf(dir: string): string {
  const hash = createHash('sha256');
  try {
    for (const file of transformerFiles(dir)) hash.update(file).update('\0').update(readFileSync(file)).update('\0');
  } catch {
    // Unreadable now: loading reports why.
    hash.update(`unreadable ${Date.now()}`);
  }
  return hash.digest('hex');
}
