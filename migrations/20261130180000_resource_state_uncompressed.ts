import type { Knex } from 'knex';

/**
 * The stored resource documents are no longer compressed (STORAGE EXTERNAL: a large one still moves out
 * of line, uncompressed). Postgres tried pglz on every document over about 2 KB, and FHIR resources that
 * large mostly hold base64 attachments, which pglz hardly shrinks: `fhir-rte load` of the 204k-resource
 * Synthea benchmark export left resource_state at 305 MB compressed and 309 MB not, for about 1.3 s of the
 * database's CPU (pglz_compress was 2.5-2.9% of all CPU samples during the load). Only rows written from
 * now on are affected.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE fhir_rte.resource_state ALTER COLUMN resource SET STORAGE EXTERNAL');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE fhir_rte.resource_state ALTER COLUMN resource SET STORAGE EXTENDED');
}
