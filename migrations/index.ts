import type { Knex } from 'knex';
import * as coreTables from './20261123000000_core_tables.js';
import * as orderWatermark from './20261130000000_order_watermark.js';
import * as deadLetterInputIndex from './20261130120000_dead_letter_input_index.js';
import * as resourceStateUncompressed from './20261130180000_resource_state_uncompressed.js';

/**
 * Every migration, in order. Listed here (not discovered by directory scan) so that the same code runs
 * from compiled JS and from TypeScript under the test runner. A new migration is a new file plus a line.
 */
export const migrations: Array<{ name: string; migration: Knex.Migration }> = [
  { name: '20261123000000_core_tables', migration: coreTables },
  { name: '20261130000000_order_watermark', migration: orderWatermark },
  { name: '20261130120000_dead_letter_input_index', migration: deadLetterInputIndex },
  { name: '20261130180000_resource_state_uncompressed', migration: resourceStateUncompressed },
];
