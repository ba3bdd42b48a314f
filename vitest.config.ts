import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/postgres-global.ts', 'test/support/kafka-global.ts'],
    // The closing `N passed, N failed, N skipped` line, skip notes, and CI=true failing on any skip.
    reporters: ['default', './test/support/summary-reporter.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Two cores: files that start brokers and databases must not all run at once.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
