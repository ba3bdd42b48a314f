import pg from 'pg';
import { inject } from 'vitest';
import { randomBytes } from 'node:crypto';

/** A new, empty database on the run's Postgres, so test files never see each other's tables. */
export async function freshDatabase(prefix = 't'): Promise<string> {
  const base = inject('databaseUrl');
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}
