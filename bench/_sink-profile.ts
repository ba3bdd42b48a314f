/**
 * The sink alone, for profiles and before/after comparisons: the sink benchmark's events applied through
 * PostgresSink (three batches in flight, as `fhir-rte load`), no limit run, so `node --cpu-prof` sees only
 * the sink. Prints wall time, fhir-rte's own CPU and the Postgres server's CPU (its processes in
 * pg_stat_activity, from /proc: Linux only) per round.
 *
 *   node --max-semi-space-size=64 --cpu-prof dist/bench/_sink-profile.js
 *
 * BENCH_EVENTS (default 20,000), BENCH_ROUNDS (default 3), DATABASE_URL (default: an embedded Postgres).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { pino } from 'pino';
import { migrate } from '../src/sink/postgres/migrate.js';
import { createPool } from '../src/sink/postgres/pool.js';
import { PostgresSink } from '../src/sink/postgres/postgres-sink.js';
import { createMissing, planSchema } from '../src/sink/postgres/schema.js';
import { loadTransformers } from '../src/transform/load-transformers.js';
import type { ChangeEvent } from '../src/events/change-event.js';
import { generate } from './sink.js';
import { benchDatabase } from './_database.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BATCH = 1000;
const logger = pino({ level: 'silent' });

const { url, stop } = await benchDatabase('sink_profile');
const pool = createPool(url, 4, logger);
try {
  const transformers = loadTransformers(join(import.meta.dirname, '..', '..', 'transformers'));
  const specs = transformers.flatMap((t) => t.tables);
  await migrate(url);
  const events = generate(EVENTS);
  const batches: ChangeEvent[][] = [];
  for (let i = 0; i < events.length; i += BATCH) batches.push(events.slice(i, i + BATCH));
  for (let round = 0; round < ROUNDS; round++) {
    await pool.query('DROP SCHEMA IF EXISTS bench_rte CASCADE');
    await createMissing(pool, 'bench_rte', await planSchema(pool, 'bench_rte', specs));
    await pool.query('TRUNCATE fhir_rte.resource_state');
    await pool.query('CHECKPOINT');
    const sink = new PostgresSink(pool, { schema: 'bench_rte', transformers, deleteMode: 'logical', storeResources: true, maxEvents: BATCH, retry: { initialMs: 100, maxMs: 5000 }, logger });
    const server = await serverCpu(pool);
    const cpu = process.cpuUsage();
    const start = process.hrtime.bigint();
    let next = 0;
    await Promise.all(Array.from({ length: 3 }, async () => {
      while (next < batches.length) await sink.apply(batches[next++]!);
    }));
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const used = process.cpuUsage(cpu);
    const serverUsed = (await serverCpu(pool)) - server;
    const perEvent = (micros: number) => ((micros / events.length)).toFixed(1);
    console.log(`round ${round}: ${seconds.toFixed(2)} s wall, ${perEvent(used.user + used.system)} µs fhir-rte CPU/event, ${perEvent(serverUsed)} µs Postgres CPU/event, ${Math.round(events.length / seconds)} events/s`);
  }
} finally {
  await pool.end();
  await stop();
}

/** CPU time (µs) of the server's processes so far; the pool's connections live through a round, so their backends count. */
async function serverCpu(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query('SELECT pid FROM pg_stat_activity');
  let ticks = 0;
  for (const { pid } of rows) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
    } catch {
      // a process that ended meanwhile
    }
  }
  return (ticks * 1e6) / 100; // USER_HZ
}
