import type { TestProject } from 'vitest/node';
import { startTestPostgres, type TestPostgres } from './embedded-postgres.js';

/** DATABASE_URL when set, otherwise one embedded Postgres for the whole run. */
let embedded: TestPostgres | undefined;

export async function setup(project: TestProject): Promise<void> {
  let url = process.env.DATABASE_URL;
  if (!url) {
    embedded = await startTestPostgres();
    url = embedded.url;
  }
  project.provide('databaseUrl', url);
}

export async function teardown(): Promise<void> {
  await embedded?.destroy();
}

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}
