import type { Knex } from 'knex';

/**
 * Finds the dead letter of an input by where it came from, its cause and a digest of its payload, so the
 * same poison loaded again counts another attempt on its dead letter instead of adding a second one
 * (fhir_rte.dead_letter can grow large, and payloads are too big to index whole).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`CREATE INDEX IF NOT EXISTS dead_letter_input_idx ON fhir_rte.dead_letter (source, error_class, md5(coalesce(payload, '')))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP INDEX IF EXISTS fhir_rte.dead_letter_input_idx`);
}
