import knex, { type Knex } from 'knex';
import { migrations } from '../../../migrations/index.js';

/** Hands knex the migrations listed in migrations/index.ts. */
const source: Knex.MigrationSource<(typeof migrations)[number]> = {
  getMigrations: async () => migrations,
  getMigrationName: (m) => m.name,
  getMigration: async (m) => m.migration,
};

/** Brings fhir-rte's own tables (schema fhir_rte) up to date. Safe to run from several processes at once. */
export async function migrate(databaseUrl: string): Promise<void> {
  const db = knex({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 1 } });
  try {
    await createSchema(db);
    await db.migrate.latest({ migrationSource: source, schemaName: 'fhir_rte', tableName: 'knex_migrations' });
  } finally {
    await db.destroy();
  }
}

/** Two processes starting together may both try; the loser's unique violation means the schema is there. */
async function createSchema(db: Knex): Promise<void> {
  try {
    await db.raw('CREATE SCHEMA IF NOT EXISTS fhir_rte');
  } catch (err) {
    if ((err as { code?: string }).code !== '23505') throw err;
  }
}
