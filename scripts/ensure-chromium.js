#!/usr/bin/env node
// The console's browser tests drive a real headless Chromium (playwright-core, which downloads no
// browser of its own). This finds one, and on a machine without it, when running as root with apt-get
// (a fresh Debian CI machine or container), installs Debian's `chromium` package. Prints the path found
// as its last line of stdout; prints nothing there when there is none, and says on stderr how to install
// it (the browser tests then skip with that note, which fails a CI=true run).
//
//   node scripts/ensure-chromium.js          find, or install when possible
//   node scripts/ensure-chromium.js --find   find only
//
// Plain Node, no dependencies: .ci/run calls it before `npm test`, and the tests' global setup too.
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome-stable', '/usr/bin/google-chrome'];

function executable(path) {
  try {
    accessSync(path, constants.X_OK);
    // Ubuntu's chromium-browser is a stub that asks for snap, which containers lack: it must start.
    return spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 30_000 }).status === 0;
  } catch {
    return false;
  }
}

function find() {
  const wanted = process.env.CHROMIUM_PATH ? [process.env.CHROMIUM_PATH] : CANDIDATES;
  return wanted.find(executable);
}

function install() {
  if (process.env.CHROMIUM_PATH) return 'CHROMIUM_PATH names it, so nothing is installed';
  if (process.getuid?.() !== 0) return 'not root, so it cannot install packages';
  if (spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status !== 0) return 'there is no apt-get on this machine';
  process.stderr.write('ensure-chromium: installing Debian\'s chromium package (apt-get update && apt-get install -y chromium)\n');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // Progress goes to stderr: stdout carries only the path.
  const run = (args) => spawnSync('apt-get', args, { stdio: ['ignore', 2, 2], env, timeout: 900_000 }).status === 0;
  if (!run(['update'])) return 'apt-get update failed';
  if (!run(['install', '-y', '--no-install-recommends', 'chromium'])) return 'apt-get install chromium failed';
  return undefined;
}

let path = find();
if (!path && !process.argv.includes('--find')) {
  const why = install();
  path = find();
  if (!path) {
    process.stderr.write(
      `ensure-chromium: no Chromium found (${process.env.CHROMIUM_PATH ? `CHROMIUM_PATH=${process.env.CHROMIUM_PATH}` : CANDIDATES.join(', ')})` +
        `${why ? ` and ${why}` : ''}. Install it with \`sudo apt-get install chromium\` (Debian), or set CHROMIUM_PATH to a Chromium or Chrome binary.\n`,
    );
  }
}
if (path) process.stdout.write(`${path}\n`);
