import type { Command } from 'commander';
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import { authenticator } from '../../fhir-client/auth.js';
import { FhirClient } from '../../fhir-client/fhir-client.js';
import { FhirServerError } from '../../fhir-client/fhir-error.js';
import { RESOURCE_TYPE } from '../../events/from-fhir.js';
import { sleepUnlessAborted } from '../../retry/backoff.js';
import { addOutcome, emptyOutcome, totalsOf, type BatchOutcome } from '../../sink/sink.js';
import { BulkExport, kickOffPath, type ExportParams } from '../../sources/backfill/bulk-export.js';
import { Checkpoints } from '../../sources/backfill/checkpoint.js';
import { SearchSource } from '../../sources/backfill/search-source.js';
import { fhirClient } from '../../sources/resthook/fhir-server-reads.js';
import type { ApplyBatch } from '../../sources/source.js';
import { ExitCode, UsageError } from '../exit-codes.js';
import { openRuntime, type GlobalOptions, type Runtime } from '../runtime.js';
import { fileSourceFor } from './load.js';
import { countsTable, TypeProgress } from '../type-progress.js';

interface BackfillOptions {
  source: string;
  since?: string;
  every?: string;
  types?: string;
  typeFilter: string[];
  elements?: string;
  count?: string;
  parallelFiles: string;
  maxPollInterval: string;
  json?: boolean;
}

/** Where a backfill reads: files, a `$export` at some level of a server, or one search. */
export type BackfillSource =
  | { kind: 'files'; paths: string[] }
  | { kind: 'export'; base: string; level: string }
  | { kind: 'search'; base: string; search: string };

export function register(program: Command): void {
  program
    .command('backfill')
    .description('load what a FHIR server holds (Bulk Data $export or a search) or NDJSON/Bundle files through the transformers')
    .requiredOption(
      '--source <source>',
      'a FHIR base URL (system $export), <base>/Patient/$export, <base>/Group/<id>/$export, a search (<base>/<Type>?…), or files and directories',
    )
    .option('--since <instant|auto>', 'only what changed since then; auto: since the last successful backfill of this source')
    .option('--every <interval>', 'repeat (30s, 15m, 1h) until stopped; with --since auto each run loads the changes since the one before')
    .option('--types <list>', '$export _type: resource types, comma-separated')
    .option('--type-filter <query>', '$export _typeFilter (repeatable), e.g. Observation?status=final', (v: string, all: string[]) => [...all, v], [])
    .option('--elements <list>', '$export _elements, comma-separated')
    .option('--count <n>', 'search _count (page size)')
    // 3: each file has one batch in the sink at a time, and with 2 the process waited on Postgres a quarter
    // of the time (BENCHMARKS.md, backfill); 3 batches in flight are what `load` applies at once.
    .option('--parallel-files <n>', '$export output files downloaded at once', '3')
    .option('--max-poll-interval <duration>', 'longest wait between two polls of the export status, whatever Retry-After says', '30s')
    .option('--json', 'print the final counts as one JSON line on stdout (one line per run with --every)')
    .action(async (opts: BackfillOptions, cmd: Command) => {
      const plan = planOf(opts);
      const runtime = await openRuntime(cmd.optsWithGlobals() as GlobalOptions);
      try {
        for (;;) {
          const totals = await backfillOnce(runtime, plan, opts).catch((err: unknown) => {
            // Repeating, a server that stays away for one run is tried again at the next (the job, if any, resumes).
            if (plan.everyMs === undefined || !(err instanceof FhirServerError) || err.fault !== 'transient') throw err;
            runtime.logger.warn({ err: err.message, nextRunInMs: plan.everyMs }, 'backfill failed; trying again at the next run');
            return undefined;
          });
          if (!totals) {
            await sleepUnlessAborted(plan.everyMs!, runtime.signal).catch(() => undefined);
            if (runtime.signal.aborted) break;
            continue;
          }
          if (runtime.signal.aborted) {
            // Stopped mid-run: what committed stays, and the same command continues from there.
            process.stderr.write('fhir-rte backfill: stopped; run the same command again to continue where it stood\n');
            process.exitCode = ExitCode.failure;
            break;
          }
          if (opts.json) process.stdout.write(`${JSON.stringify(totalsOf(totals))}\n`);
          // As `load`: it finished, but not everything in it was applied.
          if (totals.deadLettered) process.exitCode = ExitCode.deadLettered;
          if (plan.everyMs === undefined) break;
          await sleepUnlessAborted(plan.everyMs, runtime.signal).catch(() => undefined);
          if (runtime.signal.aborted) break;
        }
      } finally {
        await runtime.close();
      }
    });
}

interface Plan {
  source: BackfillSource;
  since?: Date | 'auto';
  everyMs?: number;
  params: Omit<ExportParams, 'since'>;
  count?: number;
  parallelFiles: number;
  maxPollIntervalMs: number;
}

function planOf(opts: BackfillOptions): Plan {
  const source = classifySource(opts.source);
  const since = opts.since === undefined || opts.since === 'auto' ? opts.since : instant(opts.since, '--since');
  if (source.kind === 'files' && since !== undefined) throw new UsageError('--since needs a FHIR server as --source, not files');
  const list = (v: string | undefined) => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const types = list(opts.types);
  for (const t of types) if (!RESOURCE_TYPE.test(t)) throw new UsageError(`--types: ${JSON.stringify(t)} is not a resource type`);
  return {
    source,
    since,
    everyMs: opts.every === undefined ? undefined : duration(opts.every, '--every'),
    params: { types, typeFilters: opts.typeFilter, elements: list(opts.elements) },
    count: opts.count === undefined ? undefined : positive(opts.count, '--count'),
    parallelFiles: positive(opts.parallelFiles, '--parallel-files'),
    maxPollIntervalMs: duration(opts.maxPollInterval, '--max-poll-interval'),
  };
}

/**
 * `http(s)://…/$export` (at any level) is an export, `…/<Type>[?query]` a search, another URL a server's
 * base (a system export); anything else names files.
 */
export function classifySource(value: string): BackfillSource {
  if (!/^https?:\/\//i.test(value)) return { kind: 'files', paths: [value] };
  if (!URL.canParse(value)) throw new UsageError(`--source: ${value} is not a URL`);
  const url = new URL(value);
  if (url.username || url.password) throw new UsageError('--source: put credentials in fhirServer.auth, not in the URL');
  const segments = url.pathname.split('/').filter(Boolean);
  const at = segments.findIndex((s) => s === '$export');
  const baseOf = (n: number) => `${url.origin}/${segments.slice(0, n).join('/')}`.replace(/\/+$/, '');
  if (at >= 0) {
    const level = segments.slice(at - (segments[at - 2] === 'Group' ? 2 : segments[at - 1] === 'Patient' ? 1 : 0), at).join('/');
    const base = baseOf(at - (level ? level.split('/').length : 0));
    return { kind: 'export', base, level };
  }
  const last = segments.at(-1);
  if (last && RESOURCE_TYPE.test(last) && !/^(fhir|baseR4|R4|api)$/i.test(last)) return { kind: 'search', base: baseOf(segments.length - 1), search: `${last}${url.search}` };
  return { kind: 'export', base: baseOf(segments.length), level: '' };
}

async function backfillOnce(runtime: Runtime, plan: Plan, opts: BackfillOptions): Promise<BatchOutcome> {
  const totals = emptyOutcome();
  const progress = new TypeProgress(process.stderr, 'backfill');
  const apply: ApplyBatch = async (batch, signal) => {
    const outcome = await runtime.sink.apply(batch, signal ?? runtime.signal);
    addOutcome(totals, outcome);
    progress.add(outcome);
    return outcome;
  };
  try {
    await backfillFrom(runtime, plan, apply, progress).catch((err: unknown) => {
      if (!runtime.signal.aborted) throw err;
    });
  } finally {
    progress.stop();
  }
  if (!opts.json && !runtime.signal.aborted) process.stderr.write(`${countsTable(totals)}\n`);
  return totals;
}

async function backfillFrom(runtime: Runtime, plan: Plan, apply: ApplyBatch, progress: TypeProgress): Promise<void> {
  if (plan.source.kind !== 'files') return fromServer(runtime, plan, plan.source, apply, progress);
  const files = fileSourceFor(runtime, plan.source.paths);
  files.files();
  await files.run(apply, runtime.signal);
}

async function fromServer(runtime: Runtime, plan: Plan, source: Exclude<BackfillSource, { kind: 'files' }>, apply: ApplyBatch, progress: TypeProgress): Promise<void> {
  const { config, pool, signal } = runtime;
  const logger = runtime.logger.child({ component: 'backfill' });
  const client = clientFor(config, source.base, logger);
  const checkpoints = new Checkpoints(pool);
  const sourceName =
    source.kind === 'export' ? `backfill:${client.resolve(kickOffPath(source.level, plan.params))}` : `backfill:${sourceKeyOfSearch(client.resolve(source.search))}`;
  const since = plan.since === 'auto' ? await lastSince(checkpoints, sourceName, progress) : plan.since;
  if (source.kind === 'search') {
    const search = new SearchSource({ client, search: source.search, count: plan.count, since, logger, report: progress });
    progress.note(`reading ${search.url()}`);
    await search.run(apply, signal);
    if (!signal.aborted) await checkpoints.finish(undefined, sourceName, { since: search.serverTime!.toISOString() });
    return;
  }
  const exp = new BulkExport({
    client,
    checkpoints,
    level: source.level,
    params: { ...plan.params, since },
    maxPollIntervalMs: plan.maxPollIntervalMs,
    pollIntervalMs: Math.min(5000, plan.maxPollIntervalMs),
    parallelFiles: plan.parallelFiles,
    batchSize: config.batch.maxEvents,
    reads: (type) => runtime.sink.flattens(type),
    logger,
    report: progress,
  });
  await exp.run(apply, signal);
  if (signal.aborted) return;
  for (const e of exp.errors) progress.note(`the export reported errors in ${e.url}:\n  ${e.diagnostics.join('\n  ')}`);
  if (exp.errors.some((e) => e.serious)) {
    // Some resources may be missing from the output: the next `--since auto` must not start after them.
    await checkpoints.remove(exp.jobName);
    progress.note('the export reported errors: --since auto will start from the previous backfill again');
    return;
  }
  await checkpoints.finish(exp.jobName, sourceName, { since: exp.manifest!.transactionTime });
}

/** `--since auto`: the start of the last successful backfill of this source, or everything the first time. */
async function lastSince(checkpoints: Checkpoints, sourceName: string, progress: TypeProgress): Promise<Date | undefined> {
  const saved = await checkpoints.read<{ since?: string }>(sourceName);
  if (!saved?.since) {
    progress.note('no earlier backfill of this source: loading everything');
    return undefined;
  }
  progress.note(`loading changes since ${saved.since} (the last backfill of this source)`);
  return new Date(saved.since);
}

/** A search's identity for `--since auto`: its URL without the page size and the time filter backfill adds. */
function sourceKeyOfSearch(url: string): string {
  const u = new URL(url);
  u.searchParams.delete('_count');
  u.searchParams.sort();
  return u.toString();
}

/**
 * The configured server's client (its auth, timeouts, retries) when the source lies under its base URL;
 * another server is read without credentials, so they never go where they were not meant for.
 */
export function clientFor(config: Config, base: string, logger: Logger): FhirClient {
  const server = config.fhirServer;
  if (server && (base === server.baseUrl || base.startsWith(`${server.baseUrl}/`))) return fhirClient(config, server, logger);
  return new FhirClient({
    baseUrl: base,
    auth: authenticator({ type: 'none' }),
    timeoutMs: server?.timeoutMs ?? 30_000,
    maxAttempts: server?.maxAttempts ?? 5,
    retry: config.retry,
    retryAfterMaxMs: server?.retryAfterMaxMs ?? 60_000,
    ...(server ? { limits: { maxConcurrency: server.maxConcurrency, maxRequestsPerSecond: server.maxRequestsPerSecond } } : {}),
    logger,
  });
}

function instant(value: string, option: string): Date {
  const ms = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(ms)) throw new UsageError(`${option}: expected an instant (2026-11-30T02:25:00Z) or auto, got ${JSON.stringify(value)}`);
  return new Date(ms);
}

/** `500ms`, `30s`, `15m`, `1h`, `1d`, or plain milliseconds. */
export function duration(value: string, option: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(value.trim());
  if (!m) throw new UsageError(`${option}: expected a duration such as 30s, 15m or 1h, got ${JSON.stringify(value)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 'ms']!;
  return Number(m[1]) * unit;
}

export function positive(value: string, option: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError(`${option}: expected a positive whole number, got ${JSON.stringify(value)}`);
  return Number(value);
}
