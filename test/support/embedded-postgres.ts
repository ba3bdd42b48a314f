import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PostgresServer } from '../../src/sink/postgres/postgres-server.js';
import { freePort } from './free-port.js';

/** A throw-away embedded Postgres for tests that need one of their own (e.g. to stop it mid-batch). */
export interface TestPostgres {
  url: string;
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

/** The same server fhir-rte's embedded default runs (its binaries, as root its user), in a temporary directory. */
export async function startTestPostgres(): Promise<TestPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-pg-'));
  // mkdtemp makes the directory private to its owner; as root the server runs as the postgres user.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const server = new PostgresServer(join(dir, 'data'), port);
  await server.initialise();
  await server.start();
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    port,
    start: () => server.start(),
    stop: () => server.stop(),
    async destroy() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
