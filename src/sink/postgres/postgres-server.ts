import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { postgresBinaries, type PostgresBinaries } from './postgres-binaries.js';

/** The user the server runs as when fhir-rte is root: Postgres refuses to run as root. */
const SERVER_USER = 'postgres';

/**
 * One Postgres server on a data directory, run from the embedded binaries (postgres-binaries.ts):
 * initdb on first use, then a child process on 127.0.0.1 with trust authentication. As root the server
 * runs as the postgres user, created when missing.
 */
export class PostgresServer {
  private child: ChildProcess | undefined;
  private readonly output: string[] = [];

  constructor(
    readonly pgdata: string,
    readonly port: number,
    private readonly binaries: PostgresBinaries = postgresBinaries(),
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Creates the cluster unless the data directory already holds one. */
  async initialise(): Promise<void> {
    if (existsSync(join(this.pgdata, 'PG_VERSION'))) return;
    const owner = serverUser();
    mkdirSync(this.pgdata, { recursive: true, mode: 0o700 });
    if (owner.uid !== undefined && owner.gid !== undefined) chownSync(this.pgdata, owner.uid, owner.gid);
    // UTF-8 and the C collation from Postgres' own provider: the same on every machine, no OS locale needed.
    const flags = ['-D', this.pgdata, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--locale-provider=builtin', '--builtin-locale=C.UTF-8'];
    const initdb = spawn(this.binaries.initdb, flags, { ...owner, env: { ...process.env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.remember(initdb);
    const [code] = (await once(initdb, 'close')) as [number | null];
    if (code !== 0) throw new Error(`initdb ${this.pgdata} failed (exit ${code}): ${this.lastOutput()}`);
  }

  /** Starts the server (unless it runs) and resolves once it accepts connections; rejects with its output if it exits first. */
  async start(): Promise<void> {
    if (this.child) return;
    const owner = serverUser();
    const args = ['-D', this.pgdata, '-p', String(this.port), '-c', 'listen_addresses=127.0.0.1'];
    const child = spawn(this.binaries.postgres, args, { ...owner, env: { ...process.env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.remember(child);
    let exited: string | undefined;
    child.once('exit', (code, signal) => {
      exited = `exit ${code ?? signal}`;
      if (this.child === child) this.child = undefined;
    });
    child.once('error', (err) => (exited = err.message));
    // postmaster.pid's eighth line reads "ready" once the server accepts connections (any language, any load).
    while (!exited && !this.ready(child.pid)) await sleep(100);
    if (exited) throw new Error(`Postgres on ${this.pgdata} stopped during start-up (${exited}): ${this.lastOutput()}`);
  }

  /** Fast shutdown (SIGINT): open transactions roll back, the data directory is left clean. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exit = once(child, 'exit');
    child.kill('SIGINT');
    await exit;
  }

  private ready(pid: number | undefined): boolean {
    try {
      const lines = readFileSync(join(this.pgdata, 'postmaster.pid'), 'utf8').split('\n');
      return Number(lines[0]) === pid && lines[7]?.trim() === 'ready';
    } catch {
      return false;
    }
  }

  /** Keeps the last lines a process wrote; reading also keeps a chatty server from blocking on a full pipe. */
  private remember(child: ChildProcess): void {
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() && this.output.push(line.trim()) > 20) this.output.shift();
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
  }

  private lastOutput(): string {
    return this.output.join('\n') || 'no output';
  }
}

function once(child: ChildProcess, event: 'close' | 'exit'): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    child.once(event, (...args: unknown[]) => resolve(args));
    child.once('error', reject);
  });
}

/** As root: the postgres user's ids, the user created when missing. Otherwise: run as oneself. */
export function serverUser(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  const ids = () => {
    try {
      const id = (flag: string) => Number(execFileSync('id', [flag, SERVER_USER], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
      return { uid: id('-u'), gid: id('-g') };
    } catch {
      return undefined;
    }
  };
  const existing = ids();
  if (existing) return existing;
  try {
    execFileSync('groupadd', ['-f', '--system', SERVER_USER], { stdio: 'ignore' });
    execFileSync('useradd', ['--system', '--no-create-home', '-g', SERVER_USER, SERVER_USER], { stdio: 'ignore' });
  } catch (err) {
    throw new Error(`as root the embedded Postgres runs as the ${SERVER_USER} user, which does not exist and could not be created (${(err as Error).message}); create it, run fhir-rte as another user, or set DATABASE_URL`);
  }
  const created = ids();
  if (!created) throw new Error(`the ${SERVER_USER} user was created but id cannot find it`);
  return created;
}
