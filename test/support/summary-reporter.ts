import type { Reporter, TestModule } from 'vitest/node';

/**
 * The run's closing lines, after vitest's own summary: why tests were skipped (each distinct `ctx.skip`
 * note once, e.g. where the conformance suite was looked for and how to point at it), then the plain
 * `N passed, N failed, N skipped` line any CI reads. Under CI=true a skipped test fails the run: a
 * missing fixture or broker must not pass unnoticed.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const counts = { passed: 0, failed: 0, skipped: 0, pending: 0 };
    const notes = new Set<string>();
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const result = test.result();
        counts[result.state]++;
        if (result.state === 'skipped' && result.note) notes.add(result.note);
      }
    }
    // A module that failed to load (an import error, a missing fixture under CI) has no tests to count.
    const broken = testModules.filter((m) => m.state() === 'failed' && !m.children.size).length;
    const out: string[] = [...notes].map((n) => `skipped: ${n}`);
    out.push(`${counts.passed} passed, ${counts.failed + broken} failed, ${counts.skipped} skipped`);
    if (process.env.CI === 'true' && counts.skipped > 0) {
      out.push(`CI=true: ${counts.skipped} skipped test(s) fail the run`);
      process.exitCode = 1;
    }
    process.stdout.write(`\n${out.join('\n')}\n`);
  }
}
