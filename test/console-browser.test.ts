import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { BIN } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { freePort } from './support/free-port.js';
import { openTestSink, silent, transformerDir } from './support/sink.js';
import { eventually } from './support/wait.js';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { createHttpServer } from '../src/http/server.js';
import { registerConsole } from '../src/http/console-page.js';
import { registerDeadLetterApi } from '../src/http/dead-letter-api.js';
import { eventsFromText } from '../src/events/from-fhir.js';
import { tracked } from './support/tracked.js';

/**
 * The failed-message console in a real headless Chromium, against `fhir-rte start` run as an operator runs
 * it (the built CLI, serving the console's files as the installed package does). A transformer that cannot
 * flatten a patient with two given names makes the dead letters; the test fixes the file on disk and
 * retries from the page, as an operator would.
 *
 * CONSOLE_SCREENSHOT=docs/console.png also saves the picture README shows.
 */

const TOKEN = 'browser-test-admin-token-42';
const CHROMIUM = inject('chromiumPath');
const UNAVAILABLE = inject('chromiumUnavailable');

const BROKEN = `transformers:
  - resourceType: Patient
    tableName: console_patient
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
      - { columnName: given, fhirPath: Patient.name.given, columnType: STRING }
      - { columnName: birth_date, fhirPath: Patient.birthDate, columnType: DATE }
`;
const FIXED = BROKEN.replace('fhirPath: Patient.name.given, columnType: STRING }', 'fhirPath: Patient.name.given, columnType: STRING, multiplePrimitiveStrategy: CONCAT }');

interface Running {
  base: string;
  url: string;
  dir: string;
  child: ChildProcess;
  output: string;
  exited: Promise<number | null>;
}

const running: Running[] = [];
let browser: Browser | undefined;

beforeAll(async () => {
  if (CHROMIUM) browser = await chromium.launch({ executablePath: CHROMIUM });
});

afterAll(async () => {
  await browser?.close();
  for (const r of running) r.child.kill('SIGTERM');
  await Promise.all(running.map((r) => r.exited));
});

/** `fhir-rte start` in an empty directory: the receiver (no other source), configured by the environment alone. */
async function start(env: Record<string, string>): Promise<Running> {
  const url = await freshDatabase('console');
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-console-'));
  mkdirSync(join(dir, 'transformers'));
  writeFileSync(join(dir, 'transformers', 'patient.yaml'), BROKEN);
  const childEnv: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, FHIR_RTE_HTTP_PORT: String(port), FHIR_RTE_TRANSFORMERS: join(dir, 'transformers'), ...env };
  for (const k of ['KAFKA_BROKERS', 'FHIR_RTE_RESTHOOK_SECRET', 'FHIR_RTE_FHIR_SERVER_URL', ...(env.FHIR_RTE_ADMIN_TOKEN ? [] : ['FHIR_RTE_ADMIN_TOKEN'])]) delete childEnv[k];
  const child = tracked(spawn(process.execPath, [BIN, 'start'], { cwd: dir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] }));
  const run: Running = { base: `http://127.0.0.1:${port}`, url, dir, child, output: '', exited: new Promise((r) => child.once('exit', (code) => r(code))) };
  child.stdout!.on('data', (b: Buffer) => (run.output += b));
  child.stderr!.on('data', (b: Buffer) => (run.output += b));
  running.push(run);
  await eventually(() => run.output.includes('HTTP server listening') || child.exitCode !== null, 'fhir-rte start to listen', 120_000, 100);
  if (child.exitCode !== null) throw new Error(`fhir-rte start exited:\n${run.output}`);
  return run;
}

/** A patient as HAPI FHIR 8.8 delivers it to a REST-hook endpoint (wire doc §1: PUT {endpoint}/{Type}/{id}, If-Match with the version). */
async function deliver(run: Running, id: string, resource: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${run.base}/resthook/Patient/${id}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/fhir+json; charset=UTF-8', 'If-Match': 'W/"1"' },
    body: JSON.stringify({ resourceType: 'Patient', id, meta: { versionId: '1', lastUpdated: '2026-11-30T06:00:00.000+00:00' }, ...resource }),
  });
  expect(res.status).toBe(200);
}

async function query<T = Record<string, unknown>>(url: string, sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql, values)).rows as T[];
  } finally {
    await client.end();
  }
}

const row = (page: Page, resource: string) => page.locator('#rows tr', { hasText: `${resource} v1` });

it('lists the dead letters a broken transformer made, with their cause; after the file is fixed a retry from the page puts the row in its table; a discard removes one from the list', async (ctx) => {
  if (!CHROMIUM) ctx.skip(`the console's browser tests need Chromium: ${UNAVAILABLE}`);
  const run = await start({ FHIR_RTE_ADMIN_TOKEN: TOKEN, FHIR_RTE_LOG_LEVEL: 'trace' });
  for (const n of [1, 2, 3]) await deliver(run, `p${n}`, { gender: 'female', name: [{ family: `Lovelace${n}`, given: ['Ada', `Marie${n}`] }] });
  // A large one (a narrative of 40,000 characters), which the page folds.
  await deliver(run, 'p7', { text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(40_000)}</div>` }, name: [{ given: ['Big', 'Narrative'] }] });
  // A FHIR date by its pattern, which Postgres refuses: DatabaseRejected.
  await deliver(run, 'p9', { gender: 'male', birthDate: '1815-13-45', name: [{ given: ['Charles'] }] });

  const page = await browser!.newPage({ viewport: { width: 1280, height: 900 } });
  const urls: string[] = [];
  const authorized: string[] = [];
  page.on('request', (r) => {
    urls.push(r.url());
    if (r.headers().authorization === `Bearer ${TOKEN}`) authorized.push(new URL(r.url()).pathname);
  });
  page.on('dialog', (d) => void d.accept());
  await page.goto(`${run.base}/console/`);

  // Without a token: the login prompt, nothing else.
  await expect.poll(() => page.getByLabel('Admin token').isVisible()).toBe(true);
  expect(await page.locator('#app').isVisible()).toBe(false);

  // A wrong token is refused and the prompt stays.
  await page.getByLabel('Admin token').fill('not-the-admin-token-at-all');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/refused.*wrong admin token/);
  expect(await page.getByLabel('Admin token').isVisible()).toBe(true);

  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect.poll(() => page.locator('#rows tr').count()).toBe(5);
  expect(await row(page, 'Patient/p1').textContent()).toMatch(/TransformError.*console_patient\.given: the path gave 2 values/);
  expect(await page.locator('#rows tr', { hasText: 'Patient/p9' }).textContent()).toMatch(/DatabaseRejected.*console_patient.*1815-13-45/);
  // Grouped by cause.
  expect(await page.locator('#cause-list').textContent()).toMatch(/TransformError 4\s*Patient 4\s*DatabaseRejected 1\s*Patient 1/);

  // The live counters: from /metrics when fhir-rte serves it, otherwise the page says they are unavailable.
  const metrics = await fetch(`${run.base}/metrics`);
  if (metrics.status === 404) await expect.poll(() => page.locator('#metrics-note').textContent()).toMatch(/Metrics unavailable \(\/metrics answered 404\)/);
  else await expect.poll(() => page.locator('#counters').textContent()).toMatch(/Events received/);
  expect(await page.locator('#counters').textContent()).toMatch(/Failed dead letters\s*5/);

  // The cause beside the payload, pretty-printed.
  await row(page, 'Patient/p1').getByRole('button').click();
  await expect.poll(() => page.locator('#detail-cause').textContent()).toMatch(/Patient\.name\.given/);
  expect(await page.locator('#detail-payload pre').textContent()).toContain('"given": [\n        "Ada",\n        "Marie1"\n      ]');
  if (process.env.CONSOLE_SCREENSHOT) await page.screenshot({ path: process.env.CONSOLE_SCREENSHOT, fullPage: true });
  await page.getByRole('button', { name: 'Close' }).click();

  // A large payload starts folded, its size said; opened, it is all there.
  await row(page, 'Patient/p7').getByRole('button').click();
  await expect.poll(() => page.locator('#detail-payload summary').textContent()).toMatch(/^Large payload: \d+ K characters\. Show it$/);
  expect(await page.locator('#detail-payload pre').count()).toBe(0);
  await page.locator('#detail-payload summary').click();
  expect((await page.locator('#detail-payload pre').textContent())!.length).toBeGreaterThan(40_000);
  await page.getByRole('button', { name: 'Close' }).click();

  // The fix, on disk; the retry from the page runs through it (the server reloads the changed file first).
  writeFileSync(join(run.dir, 'transformers', 'patient.yaml'), FIXED);
  await row(page, 'Patient/p1').getByRole('checkbox').check();
  await page.getByRole('button', { name: 'Retry 1 selected' }).click();
  await expect.poll(() => page.getByRole('status').textContent()).toMatch(/Retried 1: 1 now applied or stale, 0 still failing \(transformers reloaded from disk first\)/);
  expect(await query(run.url, `SELECT gender, given FROM console_patient WHERE source_resource_id = 'Patient/p1'`)).toEqual([{ gender: 'female', given: 'Ada, Marie1' }]);
  await expect.poll(() => page.locator('#rows tr').count()).toBe(4);
  expect(await row(page, 'Patient/p1').count()).toBe(0);

  // A discard, by keyboard from the dead letter's own view, removes it from the default list (failed
  // ones); it is kept as discarded.
  await page.locator('#rows tr', { hasText: 'Patient/p9' }).getByRole('button').focus();
  await page.keyboard.press('Enter');
  await expect.poll(() => page.locator('#detail-title').textContent()).toMatch(/\(failed\)/);
  await page.getByRole('button', { name: 'Discard', exact: true }).focus();
  await page.keyboard.press('Enter');
  // The result is announced once the page shows it.
  await expect.poll(() => page.getByRole('status').textContent()).toMatch(/^Discarded dead letter \d+\.$/);
  expect(await page.locator('#detail-title').textContent()).toMatch(/\(discarded\)/);
  expect(await page.getByRole('button', { name: 'Discard', exact: true }).isDisabled()).toBe(true);
  expect(await page.getByRole('button', { name: 'Retry all matching…' }).isDisabled()).toBe(false);
  expect(await page.locator('#rows tr').count()).toBe(3);
  await page.keyboard.press('Escape');
  expect(await page.locator('#detail').isVisible()).toBe(false);
  expect(await page.locator('#rows tr', { hasText: 'Patient/p9' }).count()).toBe(0);
  expect(await query(run.url, `SELECT status FROM fhir_rte.dead_letter WHERE resource_id = 'p9'`)).toEqual([{ status: 'discarded' }]);

  // Everything that matches a filter at once: the cause chosen from its group, then "Retry all matching…" (confirmed).
  await page.locator('#cause-list').getByRole('button', { name: /TransformError/ }).click();
  await page.getByRole('button', { name: 'Retry all matching…' }).click();
  await expect.poll(() => page.getByRole('status').textContent()).toMatch(/Retried 3: 3 now applied or stale/);
  expect(await query(run.url, `SELECT source_resource_id AS id, given FROM console_patient ORDER BY 1`)).toEqual([
    { id: 'Patient/p1', given: 'Ada, Marie1' },
    { id: 'Patient/p2', given: 'Ada, Marie2' },
    { id: 'Patient/p3', given: 'Ada, Marie3' },
    { id: 'Patient/p7', given: 'Big, Narrative' },
  ]);
  await expect.poll(() => page.locator('#empty').isVisible()).toBe(true);

  // The token went as a header on every API call, never in a URL; the tab keeps it until signing out.
  expect(urls.filter((u) => u.includes(TOKEN))).toEqual([]);
  expect(authorized.filter((p) => p.startsWith('/api/dead-letters/retry'))).toHaveLength(2);
  await page.reload();
  await expect.poll(() => page.locator('#app').isVisible()).toBe(true);
  await page.getByRole('button', { name: 'Sign out' }).click();
  expect(await page.getByLabel('Admin token').isVisible()).toBe(true);
  await page.close();
  // Neither the token nor the wrong one reaches the log, even at trace level.
  expect(run.output).toContain('dead letters retried from the admin API');
  expect(run.output).not.toContain(TOKEN);
  expect(run.output).not.toContain('not-the-admin-token-at-all');
});

it('without an admin token configured, the page says the console is off and how to turn it on', async (ctx) => {
  if (!CHROMIUM) ctx.skip(`the console's browser tests need Chromium: ${UNAVAILABLE}`);
  const run = await start({});
  const page = await browser!.newPage();
  await page.goto(`${run.base}/console/`);
  await expect.poll(() => page.getByRole('heading', { name: 'The console is off' }).isVisible()).toBe(true);
  expect(await page.locator('#off').textContent()).toMatch(/FHIR_RTE_ADMIN_TOKEN/);
  expect(await page.getByLabel('Admin token').isVisible()).toBe(false);
  const api = await fetch(`${run.base}/api/dead-letters`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  expect(api.status).toBe(404);
  expect(((await api.json()) as { error: string }).error).toMatch(/off/);
  await page.close();
});


it('shows the live counters and lag that /metrics reports, as prom-client writes them, and updates them', async (ctx) => {
  if (!CHROMIUM) ctx.skip(`the console's browser tests need Chromium: ${UNAVAILABLE}`);
  // In-process: fhir-rte's console and API beside a /metrics with the series fhir-rte's metrics carry.
  const url = await freshDatabase('console');
  const t = await openTestSink(url, transformerDir({ 'patient.yaml': BROKEN }));
  await t.sink.apply(eventsFromText('{"resourceType":"Patient","id":"m1","name":[{"given":["A","B"]}]}', { kind: 'kafka', topic: 'fhir', partition: 0, offset: '1' }));
  const registry = new Registry();
  const events = new Counter({ name: 'fhir_rte_events_total', help: 'events', labelNames: ['source', 'resource_type', 'outcome'], registers: [registry] });
  const lag = new Histogram({ name: 'fhir_rte_end_to_end_lag_seconds', help: 'lag', buckets: [0.1, 0.5, 1, 5], registers: [registry] });
  const kafkaLag = new Gauge({ name: 'fhir_rte_kafka_consumer_lag', help: 'lag', labelNames: ['topic', 'partition'], registers: [registry] });
  events.inc({ source: 'kafka', resource_type: 'Patient', outcome: 'received' }, 1200);
  events.inc({ source: 'kafka', resource_type: 'Patient', outcome: 'applied' }, 1150);
  events.inc({ source: 'kafka', resource_type: 'Patient', outcome: 'dead_lettered' }, 1);
  for (let i = 0; i < 100; i++) lag.observe(i < 90 ? 0.3 : 3);
  kafkaLag.set({ topic: 'fhir', partition: '0' }, 40);
  kafkaLag.set({ topic: 'fhir', partition: '1' }, 2);

  const server = createHttpServer({ host: '127.0.0.1', port: 0 });
  registerDeadLetterApi(server, { token: TOKEN, pool: t.pool, sink: t.sink, reloadTransformers: async () => ({ reloaded: false }), logger: silent });
  registerConsole(server);
  server.get('/metrics', async (_req, reply) => reply.header('content-type', registry.contentType).send(await registry.metrics()));
  const base = await server.listen({ host: '127.0.0.1', port: 0 });
  const page = await browser!.newPage();
  try {
    await page.goto(`${base}/console/`);
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const counters = () => page.locator('#counters').textContent();
    await expect.poll(counters).toMatch(/Events received\s*1,200/);
    const text = (await counters())!;
    expect(text).toMatch(/Applied\s*1,150/);
    expect(text).toMatch(/Dead-lettered\s*1/);
    expect(text).toMatch(/Failed dead letters\s*1/);
    expect(text).toMatch(/Lag, mean \(since start\)\s*570 ms/);
    expect(text).toMatch(/Lag, p95 ≤ \(since start\)\s*5\.00 s/);
    expect(text).toMatch(/Kafka lag\s*42 records \(max 40 on one partition\)/);
    expect(await page.locator('#metrics-note').textContent()).toMatch(/From \/metrics/);
    // The next reading: rates since the last one, and the lag of what was observed in between.
    events.inc({ source: 'kafka', resource_type: 'Patient', outcome: 'received' }, 500);
    for (let i = 0; i < 10; i++) lag.observe(0.05);
    await expect.poll(counters, { timeout: 30_000 }).toMatch(/Events received\s*1,700 \([\d.,]+\/s\).*Lag, mean \(last 5 s\)\s*50 ms/);
  } finally {
    await page.close();
    await server.close();
    await t.close();
  }
});
