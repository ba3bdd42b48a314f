import { expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { BIN } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { freePort } from './support/free-port.js';

const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');

/** `fhir-rte start` in an empty working directory (no fhir-rte.yaml): only the environment configures it. */
async function startCli(extraEnv: Record<string, string>) {
  const url = await freshDatabase('rhcli');
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, FHIR_RTE_HTTP_PORT: String(port), FHIR_RTE_TRANSFORMERS: TRANSFORMERS, ...extraEnv };
  delete env.KAFKA_BROKERS;
  if (!extraEnv.FHIR_RTE_RESTHOOK_SECRET) delete env.FHIR_RTE_RESTHOOK_SECRET;
  const child = spawn(process.execPath, [BIN, 'start'], { cwd: mkdtempSync(join(tmpdir(), 'fhir-rte-cli-')), env, stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { url, port, child, output: '', exited: new Promise<number | null>((r) => child.once('exit', (code) => r(code))) };
  child.stdout.on('data', (b: Buffer) => (run.output += b));
  child.stderr.on('data', (b: Buffer) => (run.output += b));
  await waitFor(() => run.output.includes('HTTP server listening'), () => run.output);
  return run;
}

it('`fhir-rte start` with no source configured serves the receiver: a PUT as HAPI sends it lands, SIGTERM exits 0', async () => {
  const run = await startCli({});
  const { url, port, child, exited } = run;
  try {
    const res = await fetch(`http://127.0.0.1:${port}/resthook/Patient/1002`, {
      method: 'PUT',
      headers: { 'If-Match': 'W/"1"', 'Content-Type': 'application/fhir+json; charset=UTF-8' },
      body: '{"resourceType":"Patient","id":"1002","meta":{"versionId":"1","lastUpdated":"2026-11-30T02:19:58.480+00:00"},"name":[{"family":"Wire","given":["Alice"]}],"gender":"female"}',
    });
    expect(res.status).toBe(200);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query(`SELECT p.gender, n.family FROM patient p JOIN patient_name n USING (source_resource_id) WHERE p.source_resource_id = 'Patient/1002'`);
      expect(rows).toEqual([{ gender: 'female', family: 'Wire' }]);
    } finally {
      await client.end();
    }
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
  expect(run.output).toContain('no resthook.secret: the receiver listens on loopback only');
});

it('with a secret, a wrong Bearer gets 401, and neither the secret nor the wrong one reaches the log', async () => {
  const run = await startCli({ FHIR_RTE_RESTHOOK_SECRET: 'the-real-secret', FHIR_RTE_LOG_LEVEL: 'trace' });
  try {
    const put = (token: string) =>
      fetch(`http://127.0.0.1:${run.port}/resthook/Patient/s1`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/fhir+json', Authorization: `Bearer ${token}` },
        body: '{"resourceType":"Patient","id":"s1","meta":{"versionId":"1"}}',
      });
    expect((await put('a-guessed-secret')).status).toBe(401);
    expect((await put('the-real-secret')).status).toBe(200);
  } finally {
    run.child.kill('SIGTERM');
  }
  expect(await run.exited).toBe(0);
  expect(run.output).toContain('REST-hook delivery refused');
  expect(run.output).not.toContain('the-real-secret');
  expect(run.output).not.toContain('a-guessed-secret');
});

async function waitFor(done: () => boolean, show: () => string, timeoutMs = 90_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > until) throw new Error(`timed out; output:\n${show()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
