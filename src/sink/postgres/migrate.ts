import knex from 'knex';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The compiled migrations/ folder: dist/migrations beside dist/src. */
const MIGRATIONS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'migrations');

/** Brings fhir-rte's own tables (schema fhir_rte) up to date. Safe to run from several processes at once. */
export async function migrate(databaseUrl: string): Promise<void> {
  const db = knex({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 1 } });
  try {
    await db.raw('CREATE SCHEMA IF NOT EXISTS fhir_rte');
    await db.migrate.latest({
      directory: MIGRATIONS,
      loadExtensions: ['.js'],
      schemaName: 'fhir_rte',
      tableName: 'knex_migrations',
    });
  } finally {
    await db.destroy();
  }
}
