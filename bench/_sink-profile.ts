/**
 * The sink alone, for profiles and before/after comparisons: the sink benchmark's events applied through
 * PostgresSink (three batches in flight, as `fhir-rte load`), no limit run, so `node --cpu-prof` sees only
 * the sink. Prints wall time, fhir-rte's own CPU and the Postgres server's CPU (its processes in
 * pg_stat_activity, from /proc: Linux only) per round, and how long the event loop was held up (a batch flattened
 * in one go keeps the other batches in flight from sending their next statement).
 *
 *   node --max-semi-space-size=64 --cpu-prof dist/bench/_sink-profile.js
 *
 * BENCH_EVENTS (default 20,000), BENCH_ROUNDS (default 3), DATABASE_URL (default: an embedded Postgres).
 * BENCH_STATEMENTS=1: the embedded server is restarted with pg_stat_statements loaded, and the last round's
 * statements are listed (server time per event, calls, rows, WAL) after the rounds.
 * BENCH_WAITS=1: while the rounds run, the pool's server sessions are sampled every 5 ms from another
 * connection (running, waiting on what, or idle because fhir-rte has not sent the next statement).
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pg from 'pg';
import { pino } from 'pino';
import { migrate } from '../src/sink/postgres/migrate.js';
import { createPool } from '../src/sink/postgres/pool.js';
import { loadTransformers } from '../src/transform/load-transformers.js';
import { chunk, freshSink, generate } from './sink.js';
import { benchDatabase, withClient } from './_database.js';
import { ticksOf } from './_proc.js';
import { startEmbedded } from '../src/sink/postgres/embedded.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BATCH = 1000;
const logger = pino({ level: 'silent' });

const STATEMENTS = process.env.BENCH_STATEMENTS === '1';
const WAITS = process.env.BENCH_WAITS === '1';

const { url, stop } = STATEMENTS ? await withStatementStats() : await benchDatabase('sink_profile');
const pool = createPool(url, 4, logger);
try {
  const transformers = loadTransformers(join(import.meta.dirname, '..', '..', 'transformers'));
  const specs = transformers.flatMap((t) => t.tables);
  await migrate(url);
  const events = generate(EVENTS);
  const batches = chunk(events, BATCH);
  for (let round = 0; round < ROUNDS; round++) {
    const sink = await freshSink(pool, transformers, specs);
    if (STATEMENTS && round === ROUNDS - 1) await pool.query('SELECT pg_stat_statements_reset()');
    const sampler = WAITS ? sampleWaits(url) : undefined;
    const server = await serverCpu(pool);
    const blocked = monitorEventLoopDelay({ resolution: 1 });
    blocked.enable();
    const cpu = process.cpuUsage();
    const start = process.hrtime.bigint();
    let next = 0;
    await Promise.all(Array.from({ length: 3 }, async () => {
      while (next < batches.length) await sink.apply(batches[next++]!);
    }));
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const used = process.cpuUsage(cpu);
    blocked.disable();
    const serverUsed = (await serverCpu(pool)) - server;
    const perEvent = (micros: number) => ((micros / events.length)).toFixed(1);
    console.log(`round ${round}: ${seconds.toFixed(2)} s wall, ${perEvent(used.user + used.system)} µs fhir-rte CPU/event, ${perEvent(serverUsed)} µs Postgres CPU/event, ${Math.round(events.length / seconds)} events/s, event loop delay p50 ${ms(blocked.percentile(50))} p99 ${ms(blocked.percentile(99))} max ${ms(blocked.max)} ms`);
    if (sampler) console.log(`  server sessions of the pool, sampled: ${await sampler.stop()}`);
  }
  if (STATEMENTS) await printStatements(pool, events.length);
} finally {
  await pool.end();
  await stop();
}

/** CPU time (µs) of the server's processes so far; the pool's connections live through a round, so their backends count. */
async function serverCpu(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query('SELECT pid FROM pg_stat_activity');
  const ticks = rows.reduce((sum, { pid }) => sum + (ticksOf(pid) ?? 0), 0); // a process that ended meanwhile counts nothing
  return (ticks * 1e6) / 100; // USER_HZ
}

function ms(nanos: number): string {
  return (nanos / 1e6).toFixed(1);
}

/** An embedded server of its own, restarted with pg_stat_statements loaded (it needs shared_preload_libraries). */
async function withStatementStats(): Promise<{ url: string; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-bench-'));
  chmodSync(dir, 0o755);
  const first = await startEmbedded(dir, 0, logger);
  await withClient(first.url, async (c) => {
    await c.query(`ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`);
    await c.query(`ALTER SYSTEM SET track_io_timing = on`);
  });
  await first.stop();
  const db = await startEmbedded(dir, 0, logger);
  await withClient(db.url, (c) => c.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements'));
  return { url: db.url, stop: async () => (await db.stop(), rmSync(dir, { recursive: true, force: true })) };
}

/** The last round's statements by server time: execution and planning per event, calls, rows, WAL. */
async function printStatements(pool: pg.Pool, events: number): Promise<void> {
  const { rows } = await pool.query(
    `SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls, rows, total_exec_time, total_plan_time, wal_bytes, shared_blks_hit + shared_blks_read AS blocks
       FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat%' ORDER BY total_exec_time + total_plan_time DESC`,
  );
  const all = rows.reduce((n, r) => n + r.total_exec_time + r.total_plan_time, 0);
  console.log(`pg_stat_statements, last round: ${((all * 1000) / events).toFixed(1)} µs server time per event in statements`);
  for (const r of rows.slice(0, 25)) {
    const us = (ms: number) => ((ms * 1000) / events).toFixed(1).padStart(5);
    console.log(`  ${us(r.total_exec_time)} µs exec ${us(r.total_plan_time)} µs plan /event  ${String(r.calls).padStart(5)} calls ${String(r.rows).padStart(7)} rows ${(Number(r.wal_bytes) / events).toFixed(0).padStart(5)} WAL B/event  ${r.query.slice(0, 110)}`);
  }
}

/** Samples what the pool's sessions do, every 5 ms, from a connection of its own, until stopped. */
function sampleWaits(url: string): { stop: () => Promise<string> } {
  const tally = new Map<string, number>();
  let running = true;
  const done = (async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    while (running) {
      const { rows } = await client.query(
        `SELECT coalesce(wait_event_type || ':' || wait_event, state) AS what FROM pg_stat_activity
          WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()`,
      );
      for (const { what } of rows) tally.set(what, (tally.get(what) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, 5));
    }
    await client.end();
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      const total = [...tally.values()].reduce((a, b) => a + b, 0);
      return [...tally].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${((100 * v) / total).toFixed(0)}%`).join(', ');
    },
  };
}
