import type { FastifyInstance } from 'fastify';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/**
 * The page shows dead letters' payloads, which are whatever a sender sent: it renders them as text only,
 * and this policy forbids any script or style but its own files, so a payload cannot run in the console.
 */
const HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

/**
 * The failed-message console at /console/: static files (HTML, CSS, ES modules; no build step) read once
 * from src/http/console/, which is where they are both in the source tree and beside dist/ (the compiled
 * code finds the project root and reads them from there). The page itself holds no data; it asks the
 * admin API with the token the operator types in, and says so when the API is off.
 */
export function registerConsole(server: FastifyInstance): void {
  const files = consoleFiles();
  server.get('/console', async (_request, reply) => reply.redirect('/console/'));
  for (const [name, body] of files) {
    const url = name === 'index.html' ? '/console/' : `/console/${name}`;
    server.get(url, async (_request, reply) => reply.headers({ ...HEADERS, 'content-type': TYPES[extname(name)]! }).send(body));
  }
}

/** The console's files, read at start so a broken installation fails then, not at the first visit. */
function consoleFiles(): Map<string, Buffer> {
  const dir = consoleDir();
  const names = readdirSync(dir).filter((f) => TYPES[extname(f)]);
  if (!names.includes('index.html')) throw new Error(`the console's files are missing: no index.html in ${dir}`);
  return new Map(names.map((n) => [n, readFileSync(join(dir, n))]));
}

/** src/http/console below the project root: the nearest directory above this module with a package.json. */
export function consoleDir(): string {
  let d = import.meta.dirname;
  while (!existsSync(join(d, 'package.json')) && d !== dirname(d)) d = dirname(d);
  return join(d, 'src', 'http', 'console');
}
