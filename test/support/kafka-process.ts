import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN } from './cli.js';
import { tracked } from './tracked.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ChannelConfig {
  databaseUrl: string;
  transformersDir: string;
  brokers: string[];
  topic: string;
  groupId: string;
  maxEvents?: number;
  partitionsConsumedConcurrently?: number;
  sessionTimeoutMs?: number;
}

/** Writes a fhir-rte.yaml for `fhir-rte start` and returns its path. */
export function writeChannelConfig(c: ChannelConfig): string {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-kafka-cfg-'));
  const file = join(dir, 'fhir-rte.yaml');
  writeFileSync(
    file,
    JSON.stringify(
      {
        database: { url: c.databaseUrl, poolSize: 3 },
        transformers: c.transformersDir,
        batch: { maxEvents: c.maxEvents ?? 500 },
        retry: { initialMs: 100, maxMs: 2000 },
        log: { level: 'info' },
        // Every member serves metrics and health; members on one host each take a free port.
        http: { port: 0 },
        kafka: {
          brokers: c.brokers,
          clientId: 'fhir-rte-test',
          groupId: c.groupId,
          topics: [c.topic],
          fromBeginning: true,
          partitionsConsumedConcurrently: c.partitionsConsumedConcurrently ?? 3,
          sessionTimeoutMs: c.sessionTimeoutMs ?? 10_000,
        },
      },
      null,
      2,
    ),
  );
  return file;
}

/** A `fhir-rte start` process: its output is kept for a failing test to show. */
export class ChannelProcess {
  readonly child: ChildProcess;
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  /** `args`: more arguments after `start -c <file>` (e.g. `--only kafka`). */
  constructor(configFile: string, args: string[] = []) {
    const env = { ...process.env };
    // The test runner's own database and broker settings must not override the process's configuration.
    delete env.DATABASE_URL;
    delete env.KAFKA_BROKERS;
    // The built CLI, as users run it (npm test builds first): running the sources through a TypeScript
    // loader once hid a module that only failed under Node's own ESM loader.
    this.child = tracked(spawn(process.execPath, [BIN, 'start', '-c', configFile, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] }));
    const keep = (b: Buffer) => {
      this.output += b.toString();
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((r) => this.child.once('exit', (code, signal) => r({ code, signal })));
  }

  kill(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  /** Sends SIGTERM and waits for the exit; SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Log lines (pino JSON) that carry `msg`. */
  logged(msg: string): number {
    return this.output.split('\n').filter((l) => l.includes(`"msg":"${msg}`)).length;
  }
}
