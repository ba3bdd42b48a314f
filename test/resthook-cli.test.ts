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

it('`fhir-rte start` with no source configured serves the receiver: a PUT as HAPI sends it lands, SIGTERM exits 0', async () => {
  const url = await freshDatabase('rhcli');
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, FHIR_RTE_HTTP_PORT: String(port), FHIR_RTE_TRANSFORMERS: TRANSFORMERS };
  delete env.KAFKA_BROKERS;
  delete env.FHIR_RTE_RESTHOOK_SECRET;
  // An empty working directory: no fhir-rte.yaml, so nothing but the environment configures it.
  const child = spawn(process.execPath, [BIN, 'start'], { cwd: mkdtempSync(join(tmpdir(), 'fhir-rte-cli-')), env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (b: Buffer) => (output += b));
  child.stderr.on('data', (b: Buffer) => (output += b));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await waitFor(() => output.includes('HTTP server listening'), () => output);
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
  expect(output).toContain('no resthook.secret: the receiver listens on loopback only');
});

async function waitFor(done: () => boolean, show: () => string, timeoutMs = 90_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > until) throw new Error(`timed out; output:\n${show()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
