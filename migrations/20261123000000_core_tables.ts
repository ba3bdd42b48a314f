import type { Knex } from 'knex';

/**
 * fhir-rte's own tables, in schema fhir_rte:
 * - resource_state: the version guard (newest version seen per resource, tombstones) and the latest
 *   resource JSON, which `fhir-rte rebuild` and dead-letter retry re-run transformers on.
 * - dead_letter: every input that could not be applied, with its cause and where it came from.
 * - checkpoint: named positions (watermarks of gap repair and backfills).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.withSchema('fhir_rte').createTable('resource_state', (t) => {
    t.text('resource_type').notNullable();
    t.text('resource_id').notNullable();
    t.text('version_id');
    // A tombstone whose delete carried no version: the version it deleted, to order version-only updates.
    t.text('prior_version_id');
    t.specificType('last_updated', 'timestamptz');
    t.boolean('deleted').notNullable().defaultTo(false);
    // json, not jsonb: kept byte for byte as received, and cheaper to write (no binary conversion).
    t.json('resource');
    // Optimistic concurrency: a writer changes a state only at the revision it read (compare-and-swap).
    t.bigInteger('revision').notNullable().defaultTo(1);
    t.specificType('applied_at', 'timestamptz').notNullable().defaultTo(knex.fn.now());
    t.primary(['resource_type', 'resource_id']);
  });
  await knex.schema.withSchema('fhir_rte').createTable('dead_letter', (t) => {
    t.bigIncrements('id').primary();
    t.specificType('created_at', 'timestamptz').notNullable().defaultTo(knex.fn.now());
    t.specificType('updated_at', 'timestamptz').notNullable().defaultTo(knex.fn.now());
    t.text('source').notNullable();
    t.jsonb('origin').notNullable();
    t.text('resource_type');
    t.text('resource_id');
    t.text('version_id');
    t.text('operation').notNullable();
    t.text('payload');
    t.text('error_class').notNullable();
    t.text('error_message').notNullable();
    t.jsonb('error_detail');
    t.integer('attempts').notNullable().defaultTo(1);
    t.text('status').notNullable().defaultTo('failed');
    t.check("status in ('failed', 'retried', 'discarded')", [], 'dead_letter_status_check');
    t.index(['status', 'created_at']);
    t.index(['resource_type', 'resource_id']);
    t.index(['error_class']);
    t.index(['source']);
  });
  await knex.schema.withSchema('fhir_rte').createTable('checkpoint', (t) => {
    t.text('name').primary();
    t.jsonb('value').notNullable();
    t.specificType('updated_at', 'timestamptz').notNullable().defaultTo(knex.fn.now());
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.withSchema('fhir_rte').dropTable('checkpoint');
  await knex.schema.withSchema('fhir_rte').dropTable('dead_letter');
  await knex.schema.withSchema('fhir_rte').dropTable('resource_state');
}
