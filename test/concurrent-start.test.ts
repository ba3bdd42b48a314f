import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { cli, SYNTHEA } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { migrations } from '../migrations/index.js';

const EXAMPLES = join(import.meta.dirname, '..', 'transformers');
const MEMBERS = 3;
const ROUNDS = 5;

/** One small file per member (different patients), so the members race only on creating the schema. */
function memberFiles(): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-start-'));
  const patients = readFileSync(join(SYNTHEA, 'Patient.000.ndjson'), 'utf8').split('\n').filter((l) => l.trim());
  return Array.from({ length: MEMBERS }, (_, i) => {
    const file = join(dir, `member-${i}.ndjson`);
    writeFileSync(file, `${patients[i]}\n`);
    return file;
  });
}

describe('processes that start together on a fresh database', () => {
  it(`${MEMBERS} loads started at once all succeed, ${ROUNDS} rounds in a row`, async () => {
    const files = memberFiles();
    for (let round = 0; round < ROUNDS; round++) {
      const url = await freshDatabase('start');
      const results = await Promise.all(files.map((f) => cli(['load', f, '--json', '--transformers', EXAMPLES], { DATABASE_URL: url })));
      for (const r of results) {
        expect(r.stderr, `round ${round}`).not.toMatch(/duplicate key|already exists/);
        expect(r.code, `round ${round}: ${r.stderr}`).toBe(0);
        expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ received: 1, applied: 1 });
      }
      const db = new pg.Client(url);
      await db.connect();
      try {
        expect(Number((await db.query('SELECT count(*) AS n FROM patient')).rows[0].n)).toBe(MEMBERS);
        expect(Number((await db.query('SELECT count(*) AS n FROM fhir_rte.knex_migrations')).rows[0].n)).toBe(migrations.length);
      } finally {
        await db.end();
      }
    }
  });
});
