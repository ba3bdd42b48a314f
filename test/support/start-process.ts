import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from './cli.js';
import { eventually } from './wait.js';
import { tracked } from './tracked.js';

/** A `fhir-rte start` process (the built CLI) in an empty working directory, its output kept for assertions. */
export interface StartedProcess {
  child: ChildProcess;
  /** `http://127.0.0.1:<port>`, as it logged when it began listening. */
  base: string;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then the exit (SIGKILL after 60 s). */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `fhir-rte start` with the given configuration (written to fhir-rte.yaml) and environment; resolves once it listens. */
export async function startProcess(config: Record<string, unknown>, env: Record<string, string>): Promise<StartedProcess> {
  const cwd = mkdtempSync(join(tmpdir(), 'fhir-rte-start-'));
  writeFileSync(join(cwd, 'fhir-rte.yaml'), JSON.stringify(config));
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  // The runner's own settings must not reach the process: only this configuration does.
  for (const name of ['DATABASE_URL', 'KAFKA_BROKERS', 'FHIR_RTE_RESTHOOK_SECRET', 'FHIR_RTE_ADMIN_TOKEN', 'FHIR_RTE_HTTP_PORT', 'FHIR_RTE_LOG_FORMAT']) {
    if (env[name] === undefined) delete childEnv[name];
  }
  const child = tracked(spawn(process.execPath, [BIN, 'start'], { cwd, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] }));
  let output = '';
  const keep = (b: Buffer) => (output += b.toString());
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  let base = '';
  await eventually(
    () => {
      if (child.exitCode !== null) throw new Error(`fhir-rte start exited ${child.exitCode}:\n${output}`);
      const m = /"address":"(http:\/\/[^"]+)".*HTTP server listening/.exec(output);
      if (m) base = m[1]!;
      return !!m;
    },
    'fhir-rte start listening',
    120_000,
    50,
  ).catch((err: Error) => {
    child.kill('SIGKILL');
    throw new Error(`${err.message}\n${output}`);
  });
  return {
    child,
    base,
    output: () => output,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition. */
export async function scrape(base: string): Promise<Sample[]> {
  const res = await fetch(`${base}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  const samples: Sample[] = [];
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of the samples of `name` whose labels include `labels` (0 when none: a counter never incremented has no sample). */
export function sample(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}
