import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { startEmbedded } from '../src/sink/postgres/embedded.js';

/**
 * The database a benchmark writes: with DATABASE_URL, a database of its own on that server (dropped after,
 * so runs never see each other's tables); otherwise an embedded Postgres in a temporary directory.
 */
export async function benchDatabase(bench: string): Promise<{ url: string; stop: () => Promise<void> }> {
  if (process.env.DATABASE_URL) return ownDatabase(process.env.DATABASE_URL, `fhir_rte_bench_${bench}_${randomBytes(4).toString('hex')}`);
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-bench-'));
  // The embedded server may run as another user (as root it does): it must reach its data directory.
  chmodSync(dir, 0o755);
  const db = await startEmbedded(dir, 0, pino({ level: 'silent' }));
  return { url: db.url, stop: async () => (await db.stop(), rmSync(dir, { recursive: true, force: true })) };
}

/** One connection for `work`, closed after it, whatever it does. */
export async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function ownDatabase(serverUrl: string, name: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const admin = (sql: string) => withClient(serverUrl, (c) => c.query(sql)).then(() => {});
  await admin(`CREATE DATABASE ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), stop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}
