import knex, { type Knex } from 'knex';
import { migrations } from '../../../migrations/index.js';
import { withSchemaLock } from './schema-lock.js';

/** Hands knex the migrations listed in migrations/index.ts. */
const source: Knex.MigrationSource<(typeof migrations)[number]> = {
  getMigrations: async () => migrations,
  getMigrationName: (m) => m.name,
  getMigration: async (m) => m.migration,
};

/**
 * Brings fhir-rte's own tables (schema fhir_rte) up to date. Safe to run from several processes at once:
 * they take turns under the schema lock (knex's own lock table cannot be created safely by two at once).
 */
export async function migrate(databaseUrl: string): Promise<void> {
  await withSchemaLock(databaseUrl, async () => {
    const db = knex({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 1 } });
    try {
      await db.raw('CREATE SCHEMA IF NOT EXISTS fhir_rte');
      await db.migrate.latest({ migrationSource: source, schemaName: 'fhir_rte', tableName: 'knex_migrations' });
    } finally {
      await db.destroy();
    }
  });
}
