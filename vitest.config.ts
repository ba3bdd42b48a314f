import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/postgres-global.ts', 'test/support/kafka-global.ts', 'test/support/chromium-global.ts'],
    // The closing `N passed, N failed, N skipped` line, skip notes, and CI=true failing on any skip.
    reporters: ['default', './test/support/summary-reporter.ts'],
    // Generous: tests wait on conditions, and a busy shared machine (JVM producers, many CLI runs) is slow;
    // a test that hangs still fails.
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // Two cores: files that start brokers and databases must not all run at once.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
