import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { PROJECT_ROOT } from './shared.js';

/**
 * The Chromium the console's browser tests drive, provided as `chromiumPath`: found by
 * scripts/ensure-chromium.js, which on a fresh root machine with apt-get installs Debian's `chromium`
 * (only when this run includes a browser test). When there is none, `chromiumUnavailable` says why and
 * how to install it; the browser tests skip with that note (and under CI=true the skip fails the run).
 */
export function setup(project: TestProject): void {
  const script = join(PROJECT_ROOT, 'scripts', 'ensure-chromium.js');
  const args = runIncludesBrowserTests(project) ? [script] : [script, '--find'];
  const run = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 900_000 });
  const path = run.stdout.trim().split('\n').pop() ?? '';
  project.provide('chromiumPath', path);
  project.provide('chromiumUnavailable', path ? '' : run.stderr.trim() || 'no Chromium found: install it with `sudo apt-get install chromium`, or set CHROMIUM_PATH');
}

function runIncludesBrowserTests(project: TestProject): boolean {
  const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
  return !filters?.length || filters.some((f) => f.includes('browser'));
}

declare module 'vitest' {
  export interface ProvidedContext {
    chromiumPath: string;
    chromiumUnavailable: string;
  }
}
