/**
 * resthook: the REST-hook receiver under HAPI FHIR's deliveries, against the HTTP limit and a hand-written one.
 *
 * Clients PUT Observations as HAPI FHIR 8.8 delivers them (../shared/peers/hapi-fhir-8.8-wire.md §2:
 * `PUT {endpoint}/Observation/{id}`, the full resource, `If-Match: W/"<n>"`, `Content-Type:
 * application/fhir+json; charset=UTF-8`) over keep-alive connections, each client waiting for its answer
 * before the next delivery (HAPI's dispatcher threads do). Three receivers, each in its own process:
 *
 * - fhir-rte: `fhir-rte start` from a configuration file (the REST-hook receiver, group commit, the Postgres
 *   sink with the example transformers: observation + observation_component, resource state);
 * - bare fastify: reads the body, answers 200 (the HTTP limit of Node on this machine);
 * - per-request commit: parses, one `INSERT ... ON CONFLICT` of the JSON into one table, commits, answers.
 *
 * Before timing, each receiver is checked: a few hundred deliveries (versions 1 then 2) must answer 200 and
 * land at their last version. Throughput: 32 clients, rounds alternating the three receivers, medians.
 * Latency: deliveries at a steady 500/s, paced open-loop (each is due at its time whether or not earlier ones
 * were answered), latency from the time it was due to its answer. After the run, the tables must hold every
 * Observation at its last version (version, code, effective time, component rows).
 *
 * DATABASE_URL is used when set (a fresh database is made on that server); otherwise Postgres is embedded.
 * BENCH_DELIVERIES (per receiver per round), BENCH_ROUNDS, BENCH_CLIENTS, BENCH_LATENCY_SECONDS override;
 * BENCH_RESTHOOK tries receiver settings, BENCH_PG_SET database settings, BENCH_CPU_PROF profiles fhir-rte.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { entryFlags, ROOT } from './_cli.js';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Pool } from 'undici';
import { random, syntheticObservation } from '../src/cli/demo/synthetic-data.js';
import { freePort } from '../test/support/free-port.js';
import { report } from './report.js';
import { benchDatabase, withClient } from './_database.js';
import { parentOf, ticksOf, treeTicks } from './_proc.js';

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 32);
const DELIVERIES = Number(process.env.BENCH_DELIVERIES ?? 15_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const VERSIONS = 3;
const RATE = 500;
const LATENCY_SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 20);

/** One delivery as HAPI sends it, with what the tables must hold if it is the resource's last version. */
interface Put {
  id: string;
  version: number;
  path: string;
  body: string;
  code: string;
  effective: string;
  components: number;
}

interface Receiver {
  name: string;
  origin: string;
  child: ChildProcess;
}

export async function run(): Promise<void> {
  console.log(`resthook: ${CLIENTS} clients, ${DELIVERIES} deliveries per receiver per round, ${ROUNDS} rounds`);
  const db = await benchDatabase('resthook');
  const receivers: Receiver[] = [];
  const clients: Pool[] = [];
  try {
    const postgres = await postmasterOf(db.url);
    await databaseSettings(db.url, process.env.BENCH_PG_SET);
    const rte = await startFhirRte(db.url);
    const bare = await startPeer('bare', db.url);
    const hand = await startPeer('per-request', db.url);
    receivers.push(rte, bare, hand);
    const client = (r: Receiver) => {
      const pool = new Pool(r.origin, { connections: CLIENTS, pipelining: 1 });
      clients.push(pool);
      return pool;
    };
    const pools = new Map(receivers.map((r) => [r, client(r)]));

    // Checked before anything is timed: what each receiver answers, and what it wrote.
    const check = generate('check', 300, 2);
    for (const r of receivers) await closedLoop(pools.get(r)!, check);
    await verify(db.url, lastVersions(check));

    const rates = new Map<Receiver, number[]>(receivers.map((r) => [r, []]));
    const written: Put[] = [...check];
    for (let round = 0; round < ROUNDS; round++) {
      const puts = generate(`r${round}`, Math.ceil(DELIVERIES / VERSIONS), VERSIONS);
      written.push(...puts);
      for (const r of [bare, hand, rte]) {
        const groups = r === rte ? await groupCommits(rte.origin) : undefined;
        const cpu = cpuNow(r, postgres);
        const seconds = await closedLoop(pools.get(r)!, puts);
        rates.get(r)!.push(puts.length / seconds);
        const used = cpuSince(cpu, cpuNow(r, postgres), puts.length);
        const transactions = groups ? `, ${groupsSince(groups, await groupCommits(rte.origin))}` : r === hand ? ', one transaction per delivery' : '';
        console.log(`  (round ${round + 1}, ${r.name}: ${Math.round(puts.length / seconds)}/s${transactions}; CPU ms per 1000 deliveries: ${used})`);
        await checkpoint(db.url);
      }
    }
    const median = (r: Receiver) => medianOf(rates.get(r)!);
    for (const r of [bare, hand, rte]) {
      console.log(`  ${r.name}, ${CLIENTS} clients: ${rates.get(r)!.map((x) => Math.round(x)).join(', ')} deliveries/s; median ${Math.round(median(r))}`);
    }

    const steady = generate('lat', RATE * LATENCY_SECONDS, 1);
    written.push(...steady);
    for (const r of [bare, hand, rte]) {
      const lat = (await openLoop(pools.get(r)!, steady, RATE)).sort((a, b) => a - b);
      console.log(
        `  ${r.name}, steady ${RATE}/s for ${LATENCY_SECONDS} s (due time to answer): p50 ${percentile(lat, 0.5).toFixed(1)} ms, p99 ${percentile(lat, 0.99).toFixed(1)} ms, max ${lat[lat.length - 1]!.toFixed(1)} ms`,
      );
    }

    const stored = lastVersions(written);
    await verify(db.url, stored);
    console.log(`  verified: fhir-rte's tables and the per-request table hold all ${stored.size} Observations, each at its last version`);
    report('resthook', ['fhir-rte', median(rte), 'deliveries/s'], ['bare fastify', median(bare), 'deliveries/s']);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(receivers.map((r) => stopChild(r.child)));
    await db.stop();
  }
}

/** `count` Observations, each PUT in versions 1..versions; a later version has another code and time. */
function generate(prefix: string, count: number, versions: number): Put[] {
  const rnd = random(prefix.length * 7919 + count);
  const at = Date.UTC(2025, 0, 1);
  const out: Put[] = [];
  for (let version = 1; version <= versions; version++) {
    for (let k = 0; k < count; k++) {
      const id = `${prefix}-${k}`;
      const o = syntheticObservation(rnd, `pat-${k % 1000}`, undefined, new Date(at), id, version) as unknown as Record<string, unknown> & {
        code: { coding: { code: string }[] };
        component?: unknown[];
      };
      const effective = new Date(at + version * 60_000 + k * 1000).toISOString();
      o.effectiveDateTime = effective;
      out.push({ id, version, path: `/resthook/Observation/${id}`, body: JSON.stringify(o), code: o.code.coding[0]!.code, effective, components: o.component?.length ?? 0 });
    }
  }
  return out;
}

const HEADERS = (version: number) => ({
  'content-type': 'application/fhir+json; charset=UTF-8',
  'if-match': `W/"${version}"`,
  'user-agent': 'HAPI-FHIR/8.8.0 (FHIR Client; FHIR 4.0.1/R4; apache)',
  'accept-charset': 'utf-8',
});

async function put(pool: Pool, p: Put): Promise<void> {
  const res = await pool.request({ path: p.path, method: 'PUT', headers: HEADERS(p.version), body: p.body });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`PUT ${p.path} (version ${p.version}): ${res.statusCode} ${text}`);
}

/**
 * CLIENTS senders, each waiting for its answer before its next delivery; a resource's versions always go
 * through the same sender, in order (as HAPI's retries aside, a fast receiver sees them). Returns seconds.
 */
async function closedLoop(pool: Pool, puts: Put[]): Promise<number> {
  const lanes: Put[][] = Array.from({ length: CLIENTS }, () => []);
  const laneOf = new Map<string, number>();
  for (const p of puts) {
    if (!laneOf.has(p.id)) laneOf.set(p.id, laneOf.size % CLIENTS);
    lanes[laneOf.get(p.id)!]!.push(p);
  }
  const start = process.hrtime.bigint();
  await Promise.all(
    lanes.map(async (lane) => {
      for (const p of lane) await put(pool, p);
    }),
  );
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Sends each delivery when it is due (rate per second), answered or not; latency from due time to answer, ms. */
async function openLoop(pool: Pool, puts: Put[], rate: number): Promise<number[]> {
  const latencies: number[] = [];
  const sent: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < puts.length; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    sent.push(put(pool, puts[i]!).then(() => void latencies.push(performance.now() - due)));
  }
  await Promise.all(sent);
  return latencies;
}

function lastVersions(puts: Put[]): Map<string, Put> {
  const last = new Map<string, Put>();
  for (const p of puts) if ((last.get(p.id)?.version ?? 0) < p.version) last.set(p.id, p);
  return last;
}

/** fhir-rte's tables and the per-request table must hold each Observation at its last version, no more, no less. */
async function verify(url: string, expected: Map<string, Put>): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const keys = [...expected.keys()].map((id) => `Observation/${id}`);
    const { rows } = await c.query<{ key: string; version: string; code: string; effective_at: Date; deleted: boolean }>(
      `SELECT source_resource_id AS key, version, code, effective_at, deleted_at IS NOT NULL AS deleted FROM observation WHERE source_resource_id = ANY($1)`,
      [keys],
    );
    const got = new Map(rows.map((r) => [r.key.slice('Observation/'.length), r]));
    for (const [id, p] of expected) {
      const r = got.get(id);
      if (!r || Number(r.version) !== p.version || r.code !== p.code || r.effective_at.toISOString() !== p.effective || r.deleted) {
        throw new Error(`fhir-rte: observation ${id} should be version ${p.version} (${p.code}, ${p.effective}); it is ${JSON.stringify(r ?? 'missing')}`);
      }
    }
    if (rows.length !== expected.size) throw new Error(`fhir-rte: ${rows.length} observation rows for ${expected.size} Observations`);
    const components = [...expected.values()].reduce((n, p) => n + p.components, 0);
    const { rows: cs } = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM observation_component WHERE source_resource_id = ANY($1)`, [keys]);
    if (cs[0]!.n !== components) throw new Error(`fhir-rte: ${cs[0]!.n} observation_component rows, expected ${components}`);

    const { rows: hand } = await c.query<{ id: string; version: string; effective: string }>(
      `SELECT id, version, resource->>'effectiveDateTime' AS effective FROM bench_hand.observation WHERE id = ANY($1)`,
      [[...expected.keys()]],
    );
    const handGot = new Map(hand.map((r) => [r.id, r]));
    for (const [id, p] of expected) {
      const r = handGot.get(id);
      if (!r || Number(r.version) !== p.version || r.effective !== p.effective) throw new Error(`per-request: ${id} should be version ${p.version}; it is ${JSON.stringify(r ?? 'missing')}`);
    }
  } finally {
    await c.end();
  }
}

interface Cpu {
  receiver: number;
  postgres: number;
  clients: number;
}

/** CPU seconds used so far by the receiver's process, the Postgres server's processes (when embedded here) and this one. */
function cpuNow(r: Receiver, postmaster: number | undefined): Cpu {
  const own = process.cpuUsage();
  return { receiver: (ticksOf(r.child.pid!) ?? NaN) / 100, postgres: postmaster ? treeTicks(postmaster) / 100 : NaN, clients: (own.user + own.system) / 1e6 };
}

function cpuSince(a: Cpu, b: Cpu, deliveries: number): string {
  const per = (x: number) => ((x * 1e6) / deliveries).toFixed(0);
  return `receiver ${per(b.receiver - a.receiver)}, Postgres ${per(b.postgres - a.postgres)}, clients ${per(b.clients - a.clients)}`;
}

/** The Postgres server's main process, when it runs on this machine (its backend's parent). */
async function postmasterOf(url: string): Promise<number | undefined> {
  const { rows } = await withClient(url, (c) => c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'));
  return parentOf(rows[0]!.pid);
}

interface Groups {
  count: number;
  events: number;
  applySeconds: number;
}

/**
 * The group commits fhir-rte has applied so far, each one transaction (its /metrics: the batch-size and
 * apply-duration histograms of the resthook source). Not pg_stat_database's xact_commit: a backend
 * reports its counts at most once a second and a busy one later, so a round's difference was off by
 * whole seconds of commits (it once showed more deliveries per transaction than there are senders).
 */
async function groupCommits(origin: string): Promise<Groups> {
  const text = await (await fetch(`${origin}/metrics`)).text();
  const sum = (metric: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${metric}{`) && l.includes('source="resthook"'))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return { count: sum('fhir_rte_batch_events_count'), events: sum('fhir_rte_batch_events_sum'), applySeconds: sum('fhir_rte_apply_duration_seconds_sum') };
}

function groupsSince(a: Groups, b: Groups): string {
  const n = b.count - a.count;
  return `${n} transactions (${((b.events - a.events) / n).toFixed(1)} deliveries and ${(((b.applySeconds - a.applySeconds) * 1000) / n).toFixed(1)} ms each)`;
}

/**
 * BENCH_PG_SET='name=value;...': settings of the bench's database for every session (ALTER DATABASE ... SET),
 * to try a server-side change, e.g. plan_cache_mode=force_custom_plan.
 */
async function databaseSettings(url: string, settings: string | undefined): Promise<void> {
  if (!settings) return;
  await withClient(url, async (c) => {
    for (const setting of settings.split(';').filter(Boolean)) {
      const [, name, value] = /^\s*([a-z_][a-z0-9_.]*)\s*=\s*(.*?)\s*$/i.exec(setting) ?? [];
      if (!name || value === undefined) throw new Error(`BENCH_PG_SET: expected name=value, got ${JSON.stringify(setting)}`);
      await c.query(`ALTER DATABASE ${c.escapeIdentifier(new URL(url).pathname.slice(1))} SET ${name} = ${c.escapeLiteral(value)}`);
      console.log(`  database setting ${name} = ${value}`);
    }
  });
}

/** Each receiver starts its run without the previous one's dirty pages to write. */
async function checkpoint(url: string): Promise<void> {
  await withClient(url, (c) => c.query('CHECKPOINT'));
}

/** `fhir-rte start` as a user runs it, from a configuration file, in its own process. */
async function startFhirRte(databaseUrl: string): Promise<Receiver> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-bench-resthook-'));
  const config = join(dir, 'fhir-rte.yaml');
  // BENCH_RESTHOOK: receiver settings to try, as JSON (e.g. '{"groupsInFlight":1,"groupWindowMs":2}').
  const resthook = JSON.parse(process.env.BENCH_RESTHOOK ?? '{}') as Record<string, unknown>;
  writeFileSync(config, JSON.stringify({ database: { url: databaseUrl }, transformers: join(ROOT, 'transformers'), log: { level: 'warn' }, http: { port }, resthook }));
  const env = { ...process.env };
  for (const k of ['DATABASE_URL', 'KAFKA_BROKERS', 'FHIR_RTE_HTTP_PORT', 'FHIR_RTE_RESTHOOK_SECRET', 'FHIR_RTE_FHIR_SERVER_URL']) delete env[k];
  // BENCH_CPU_PROF=<dir>: a V8 CPU profile of the receiver, written there when it stops.
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const child = spawn(process.execPath, [...entryFlags(), ...prof, join(ROOT, 'bin', 'fhir-rte.js'), 'start', '-c', config], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const origin = `http://127.0.0.1:${port}`;
  for (const until = Date.now() + 120_000; ; ) {
    if (child.exitCode !== null) throw new Error(`fhir-rte start exited (${child.exitCode}) before listening`);
    if (Date.now() > until) throw new Error('fhir-rte start did not listen within 120 s');
    const listening = await fetch(origin).then(
      () => true,
      () => false,
    );
    if (listening) break;
    await sleep(100);
  }
  return { name: 'fhir-rte (group commit)', origin, child };
}

async function startPeer(mode: 'bare' | 'per-request', databaseUrl: string): Promise<Receiver> {
  const port = await freePort();
  const child = fork(join(import.meta.dirname, '_resthook-peers.js'), [mode, String(port), databaseUrl], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`the ${mode} receiver exited (${code}) before listening`)));
  });
  return { name: mode === 'bare' ? 'bare fastify (answers 200)' : 'per-request commit (hand-written)', origin: `http://127.0.0.1:${port}`, child };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(15_000).then(() => child.kill('SIGKILL'))]);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN;
}

function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

