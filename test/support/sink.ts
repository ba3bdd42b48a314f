import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { pino } from 'pino';
import { migrate } from '../../src/sink/postgres/migrate.js';
import { createPool, type SessionTimeouts } from '../../src/sink/postgres/pool.js';
import { PostgresSink, type PostgresSinkOptions } from '../../src/sink/postgres/postgres-sink.js';
import { createMissing, planSchema } from '../../src/sink/postgres/schema.js';
import { loadTransformers } from '../../src/transform/load-transformers.js';
import type { Transformer } from '../../src/transform/transformer.js';

export const silent = pino({ level: 'silent' });

/** Writes transformer files (name → YAML or JSON text) into a new directory. */
export function transformerDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-tx-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

export interface TestSink {
  sink: PostgresSink;
  pool: pg.Pool;
  transformers: Transformer[];
  rows<T = Record<string, unknown>>(sql: string, values?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

/** The real sink on a real database: migrations run, tables created, as `fhir-rte load` does. */
export async function openTestSink(
  url: string,
  transformersDir: string,
  options: Partial<PostgresSinkOptions> = {},
  timeouts?: SessionTimeouts,
): Promise<TestSink> {
  await migrate(url);
  const transformers = loadTransformers(transformersDir);
  const pool = createPool(url, 3, silent, timeouts);
  const specs = transformers.flatMap((t) => t.tables);
  await createMissing(pool, 'public', await planSchema(pool, 'public', specs));
  const sink = new PostgresSink(pool, {
    schema: 'public',
    transformers,
    deleteMode: 'logical',
    storeResources: true,
    maxEvents: 1000,
    retry: { initialMs: 50, maxMs: 1000 },
    logger: silent,
    ...options,
  });
  return {
    sink,
    pool,
    transformers,
    rows: async (sql, values) => (await pool.query(sql, values)).rows,
    close: () => pool.end(),
  };
}
