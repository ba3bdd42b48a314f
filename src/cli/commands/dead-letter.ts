import type { Command } from 'commander';
import { UsageError } from '../exit-codes.js';
import pg from 'pg';
import { loadConfig } from '../../config/config.js';
import { discardDeadLetters, getDeadLetter, listDeadLetters, type DeadLetter, type DeadLetterFilter } from '../../deadletter/dead-letter.js';
import { retryDeadLetters } from '../../deadletter/replay.js';
import { createLogger } from '../logger.js';
import { openDatabase, openRuntime, type GlobalOptions } from '../runtime.js';

interface FilterFlags {
  type?: string;
  errorClass?: string;
  since?: string;
  status?: string;
  limit?: string;
  json?: boolean;
  all?: boolean;
}

export function register(program: Command): void {
  const dl = program.command('dead-letter').description('read, retry and discard failed messages');
  withFilters(dl.command('list').description('list dead letters (failed ones unless --status says otherwise)')).action(async (flags: FilterFlags, cmd: Command) => {
    const filter = filterOf(flags); // a bad flag is reported before any database starts
    await withDatabase(cmd, async (db) => print(await listDeadLetters(db, filter), flags.json));
  });
  dl.command('show')
    .description('show one dead letter with its payload and cause')
    .argument('<id>', 'dead letter id')
    .option('--json', 'as JSON')
    .option('--full', 'the whole payload, however long (on a terminal it is cut after 2,000 characters otherwise)')
    .action(async (id: string, flags: { json?: boolean; full?: boolean }, cmd: Command) => {
      await withDatabase(cmd, async (db) => {
        const found = await getDeadLetter(db, idOf(id));
        if (!found) throw new Error(`no dead letter ${id}`);
        const cut = !flags.full && process.stdout.isTTY ? SHOWN_PAYLOAD : Infinity;
        process.stdout.write(flags.json ? `${JSON.stringify(found)}\n` : detail(found, cut));
      });
    });
  withFilters(dl.command('retry').description('run dead letters through the current transformers again').argument('[ids...]'))
    .action(async (ids: string[], flags: FilterFlags, cmd: Command) => retry(ids, flags, cmd));
  withFilters(dl.command('discard').description('mark dead letters as discarded (kept, never retried)').argument('[ids...]'))
    .action(async (ids: string[], flags: FilterFlags, cmd: Command) => {
      await withDatabase(cmd, async (db) => {
        const chosen = await choose(db, ids, flags);
        const done = await discardDeadLetters(db, chosen.map((d) => d.id));
        process.stdout.write(flags.json ? `${JSON.stringify({ discarded: done })}\n` : `discarded ${done.length} dead letter(s)\n`);
      });
    });
}

function withFilters(cmd: Command): Command {
  return cmd
    .option('--type <resourceType>', 'only this resource type')
    .option('--error-class <class>', 'only this error class (e.g. TransformError, DatabaseRejected, InvalidJson)')
    .option('--since <time>', 'only those created at or after this ISO time, or within a duration like 30m, 6h, 2d')
    .option('--status <status>', 'failed (default), retried, discarded or all')
    .option('--limit <n>', 'at most n (default 100)')
    .option('--all', 'with retry/discard: every dead letter the filters select')
    .option('--json', 'output as JSON (one object per line)');
}

async function retry(ids: string[], flags: FilterFlags, cmd: Command): Promise<void> {
  const runtime = await openRuntime(cmd.optsWithGlobals() as GlobalOptions);
  try {
    const chosen = await choose(runtime.pool, ids, flags);
    const summary = await retryDeadLetters(runtime.sink, runtime.pool, chosen, runtime.signal);
    process.stdout.write(flags.json ? `${JSON.stringify(summary)}\n` : `retried ${summary.selected}: ${summary.retried} now applied or stale, ${summary.stillFailing} still failing\n`);
  } finally {
    await runtime.close();
  }
}

async function choose(db: pg.Pool, ids: string[], flags: FilterFlags): Promise<DeadLetter[]> {
  if (!ids.length && !flags.all) throw new UsageError('name dead letter ids, or pass --all to act on every one the filters select');
  return listDeadLetters(db, { ...filterOf(flags), ids: ids.length ? ids.map(idOf) : undefined, limit: flags.limit ? Number(flags.limit) : 10_000 });
}

async function withDatabase(cmd: Command, work: (db: pg.Pool) => Promise<void>): Promise<void> {
  const globals = cmd.optsWithGlobals() as GlobalOptions;
  const config = loadConfig(globals.config, { transformers: globals.transformers });
  const logger = createLogger(config.log.level);
  const { url, embedded } = await openDatabase(config, logger);
  const db = new pg.Pool({ connectionString: url, max: 1 });
  // pool.end() resolves before its connection has closed; the embedded server stopped right after ends
  // it, and that idle connection's error must not crash the process after the work is done.
  db.on('error', () => {});
  try {
    await work(db);
  } catch (err) {
    if ((err as { code?: string }).code === '42P01') throw new Error('no dead-letter table in this database yet (nothing was loaded here)');
    throw err;
  } finally {
    await db.end();
    await embedded?.stop();
  }
}

function filterOf(f: FilterFlags): DeadLetterFilter {
  const status = f.status ?? 'failed';
  if (!['failed', 'retried', 'discarded', 'all'].includes(status)) throw new UsageError(`--status: expected failed, retried, discarded or all, got ${JSON.stringify(status)}`);
  const limit = f.limit === undefined ? undefined : Number(f.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw new UsageError(`--limit: expected a positive integer, got ${JSON.stringify(f.limit)}`);
  return { status: status as DeadLetterFilter['status'], resourceType: f.type, errorClass: f.errorClass, since: f.since ? sinceOf(f.since) : undefined, limit };
}

export function sinceOf(text: string, now = Date.now()): Date {
  const d = /^(\d+)(s|m|h|d)$/.exec(text);
  if (d) return new Date(now - Number(d[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[d[2] as 's']);
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new UsageError(`--since: expected an ISO time or a duration like 30m, 6h, 2d; got ${JSON.stringify(text)}`);
  return new Date(t);
}

function idOf(s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`expected a dead letter id (a positive integer), got ${JSON.stringify(s)}`);
  return n;
}

function print(rows: DeadLetter[], json?: boolean): void {
  if (json) {
    for (const r of rows) process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  if (!rows.length) {
    process.stdout.write('no dead letters\n');
    return;
  }
  process.stdout.write(`${LIST_HEADER.join('\t')}\n`);
  for (const r of rows) {
    const what = r.resourceType ? `${r.resourceType}/${r.resourceId ?? '?'}${r.versionId ? `@${r.versionId}` : ''}` : '(unknown resource)';
    process.stdout.write(`${r.id}\t${r.createdAt.toISOString()}\t${r.status}\t${r.attempts}\t${r.operation}\t${what}\t${r.errorClass}: ${oneLine(r.errorMessage, 100)}\t${r.source}\n`);
  }
}

/** The columns of `dead-letter list`, tab-separated so that `cut -f` and `awk -F'\t'` can pick them. */
const LIST_HEADER = ['id', 'created', 'status', 'attempts', 'operation', 'resource', 'error', 'source'];

/** A payload of megabytes would scroll a terminal away; the first 2,000 characters say what it was. */
const SHOWN_PAYLOAD = 2000;

function detail(r: DeadLetter, maxPayload: number): string {
  return [
    `id:          ${r.id} (${r.status}, ${r.attempts} attempt${r.attempts === 1 ? '' : 's'})`,
    `created:     ${r.createdAt.toISOString()}`,
    `source:      ${r.source}`,
    `resource:    ${r.resourceType ?? '-'}/${r.resourceId ?? '-'} version ${r.versionId ?? '-'} (${r.operation})`,
    `error:       ${r.errorClass}: ${r.errorMessage}`,
    `detail:      ${r.errorDetail ? JSON.stringify(r.errorDetail) : '-'}`,
    `payload:     ${r.payload === null ? '-' : truncated(r.payload, maxPayload)}`,
    '',
  ].join('\n');
}

function truncated(payload: string, max: number): string {
  if (payload.length <= max) return payload;
  return `${payload.slice(0, max)}\n             ... ${payload.length - max} more characters (--full shows all of it)`;
}

function oneLine(s: string, max: number): string {
  const flat = s.replace(/\s+/g, ' ');
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
}
