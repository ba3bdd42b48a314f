import { defineConfig } from 'vitest/config';

/** `npm run conformance`: the SQL on FHIR suite alone; it needs no database, so no global Postgres. */
export default defineConfig({
  test: {
    include: ['test/viewdef-conformance.test.ts'],
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
