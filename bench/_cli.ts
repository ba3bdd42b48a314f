import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { ticksOf } from './_proc.js';

export const ROOT = join(import.meta.dirname, '..', '..');

export interface CliRun {
  seconds: number;
  /** The process's VmHWM, read from /proc every 100 ms. */
  peakRssKb: number;
  /** The process's CPU (user + system), and that of the Postgres backends serving its database. */
  cpuSeconds: number;
  postgresCpuSeconds: number;
  /** The counts line (`--json`). */
  counts: { received?: number; applied?: number; skipped?: number; stale?: number; deadLettered?: number };
}

/**
 * `fhir-rte <args>` in its own process, as a user runs it: the node flags of bin/fhir-rte.js's shebang, then
 * BENCH_NODE_FLAGS (the last wins). The clock runs from its start to its exit. BENCH_CHILD_STDOUT keeps its stdout.
 */
export async function runFhirRte(args: string[], databaseUrl: string): Promise<CliRun> {
  const bin = join(ROOT, 'bin', 'fhir-rte.js');
  const flags = [...entryFlags(), ...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)];
  console.log(`  fhir-rte node flags: ${flags.join(' ') || '(none)'}`);
  const postgres = new PostgresCpu(databaseUrl);
  const started = process.hrtime.bigint();
  const child = spawn(process.execPath, [...flags, bin, ...args], { env: { ...process.env, DATABASE_URL: databaseUrl, FHIR_RTE_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  let peakRssKb = 0;
  let cpuTicks = 0;
  const sample = setInterval(() => {
    try {
      const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (hwm) peakRssKb = Math.max(peakRssKb, Number(hwm[1]));
      cpuTicks = ticksOf(child.pid!) ?? cpuTicks;
    } catch {
      // exited between two samples
    }
    void postgres.sample();
  }, 100);
  const [code] = (await once(child, 'exit')) as [number];
  clearInterval(sample);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await postgres.close();
  // The counts line, found among anything a profiling flag (--trace-gc) printed to stdout.
  const counts = JSON.parse([...stdout.split('\n')].reverse().find((l) => l.startsWith('{"received"')) ?? '{}') as CliRun['counts'];
  if (process.env.BENCH_CHILD_STDOUT) writeFileSync(process.env.BENCH_CHILD_STDOUT, stdout);
  if (code !== 0) throw new Error(`fhir-rte ${args[0]} exited ${code} with ${stdout.trim()}`);
  return { seconds, peakRssKb, cpuSeconds: cpuTicks / 100, postgresCpuSeconds: postgres.seconds(), counts };
}


/** The CPU of the Postgres backends connected to one database, each backend's last sample kept (they end with their client). */
class PostgresCpu {
  private readonly client: pg.Client;
  private readonly ticks = new Map<number, number>();
  private busy = false;
  private readonly ready: Promise<void>;

  constructor(url: string) {
    this.client = new pg.Client({ connectionString: url });
    this.ready = this.client.connect().then(() => undefined);
  }

  async sample(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.ready;
      const { rows } = await this.client.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
      for (const { pid } of rows) {
        const ticks = ticksOf(pid);
        if (ticks !== undefined) this.ticks.set(pid, ticks); // else it ended meanwhile: its last sample stays
      }
    } catch {
      // not ready or closing: the next sample counts
    } finally {
      this.busy = false;
    }
  }

  seconds(): number {
    return [...this.ticks.values()].reduce((a, b) => a + b, 0) / 100;
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }
}

/** The Node flags a user's `fhir-rte` runs with: those of bin/fhir-rte.js's shebang (the npm scripts, Dockerfile and README repeat them). */
export function entryFlags(): string[] {
  const first = readFileSync(join(ROOT, 'bin', 'fhir-rte.js'), 'utf8').split('\n')[0] ?? '';
  return /^#!.*\bnode\b(.*)$/.exec(first)?.[1]?.split(' ').filter(Boolean) ?? [];
}
