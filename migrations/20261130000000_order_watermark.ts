import type { Knex } from 'knex';

/**
 * Order as one value (see src/sink/guard.ts):
 * - resource_state keeps a watermark that never goes down: version_id is now the newest version known, also
 *   under a tombstone whose delete had no version; after_version says the state lies after that version
 *   (replacing prior_version_id, which held it apart). arrival is the latest arrival applied, which orders
 *   events that carry neither version nor time. content_digest (SHA-256 of the stored document) makes an
 *   event that would store the same document again stale.
 * - dead_letter keeps the input's arrival, so a retry is ordered by it rather than by the retry's time.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    ALTER TABLE fhir_rte.resource_state
      ADD COLUMN after_version boolean NOT NULL DEFAULT false,
      ADD COLUMN arrival timestamptz,
      ADD COLUMN content_digest bytea`);
  await knex.raw(`UPDATE fhir_rte.resource_state SET version_id = prior_version_id, after_version = true WHERE prior_version_id IS NOT NULL`);
  // The digest of a document is over its text as stored, which json keeps byte for byte.
  await knex.raw(`UPDATE fhir_rte.resource_state SET content_digest = sha256(convert_to(resource::text, 'UTF8')) WHERE resource IS NOT NULL`);
  await knex.raw(`ALTER TABLE fhir_rte.resource_state DROP COLUMN prior_version_id`);
  await knex.raw(`ALTER TABLE fhir_rte.dead_letter ADD COLUMN arrival timestamptz`);
  // Before this, a dead letter's arrival was not kept; its creation followed it closely.
  await knex.raw(`UPDATE fhir_rte.dead_letter SET arrival = created_at`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE fhir_rte.dead_letter DROP COLUMN arrival`);
  await knex.raw(`ALTER TABLE fhir_rte.resource_state ADD COLUMN prior_version_id text`);
  await knex.raw(`UPDATE fhir_rte.resource_state SET prior_version_id = version_id, version_id = NULL WHERE after_version AND deleted`);
  await knex.raw(`ALTER TABLE fhir_rte.resource_state DROP COLUMN after_version, DROP COLUMN arrival, DROP COLUMN content_digest`);
}
