import type { Logger } from 'pino';
import { arrivalNow, type ChangeEvent } from '../../events/change-event.js';
import { eventsFromText, type ReadsResource } from '../../events/from-fhir.js';
import { instantMicros } from '../../events/instant.js';
import type { FhirClient, FhirResponse } from '../../fhir-client/fhir-client.js';
import { FhirServerError, outcomeDiagnostics, retryAfterMs } from '../../fhir-client/fhir-error.js';
import { concurrencyLimit } from '../../fhir-client/limit.js';
import { ndjsonLines, shownFileUrl, type NdjsonLine } from '../../fhir-client/ndjson-stream.js';
import { sleepUnlessAborted } from '../../retry/backoff.js';
import type { ApplyBatch, Source } from '../source.js';
import type { Checkpoints } from './checkpoint.js';
import { BATCH_CHARS } from './file-source.js';
import type { BackfillReport } from './report.js';

/** The kick-off's parameters, passed through as the Bulk Data Access IG names them. */
export interface ExportParams {
  types: string[];
  since?: Date;
  typeFilters: string[];
  elements: string[];
}

export interface BulkExportOptions {
  client: FhirClient;
  checkpoints: Checkpoints;
  /** `` (system), `Patient` or `Group/{id}`. */
  level: string;
  params: ExportParams;
  /** The longest wait between two polls, whatever Retry-After says (HAPI says 120 s, yet advances each minute). */
  maxPollIntervalMs: number;
  /** The wait between polls when the server names none. */
  pollIntervalMs: number;
  /** Output files downloaded and applied at once. */
  parallelFiles: number;
  /** Events per batch handed to the sink. */
  batchSize: number;
  /** The types the sink reads parsed; a line of another type keeps only its text (see eventsFromText). */
  reads?: ReadsResource;
  logger: Logger;
  report: BackfillReport;
}

interface ManifestFile {
  type?: string;
  url: string;
  count?: number;
}

/** The completion manifest (IG "Response - Complete Status"). */
export interface Manifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  output: ManifestFile[];
  error: ManifestFile[];
  deleted?: ManifestFile[];
}

/** What `fhir_rte.checkpoint` keeps of a job in flight, so a backfill started again resumes it. */
interface JobState {
  statusUrl: string;
  manifest?: Manifest;
  /** Per output file: the lines whose events have committed. */
  files?: Record<string, number>;
  /** Output files applied to the end. */
  done?: Record<string, boolean>;
}

/** An error file's OperationOutcomes, as the server wrote them. */
export interface ExportError {
  url: string;
  diagnostics: string[];
  /** True when an issue has severity error or fatal: some resources may be missing from the output. */
  serious: boolean;
}

/**
 * A FHIR Bulk Data `$export` (https://build.fhir.org/ig/HL7/bulk-data/export.html) as a Source: kick-off
 * with `Prefer: respond-async`, polling the status URL (Content-Location) at Retry-After but never longer
 * than the cap, with X-Progress shown; then the output files streamed line by line into the sink, several
 * at once, `deleted` files applied as deletes, error files read and reported. The job's status URL, its
 * manifest and each file's committed lines are kept in `fhir_rte.checkpoint`, so a backfill stopped at any
 * point and started again continues the same job where it stood (a batch in flight when it stopped is read
 * again, and is stale under the guard). At the end the job is deleted on the server.
 */
export class BulkExport implements Source {
  readonly jobName: string;
  manifest?: Manifest;
  readonly errors: ExportError[] = [];
  /** The job came from an earlier run's checkpoint. */
  private resumed = false;

  constructor(private readonly options: BulkExportOptions) {
    this.jobName = `backfill-export:${options.client.resolve(kickOffPath(options.level, options.params))}`;
  }

  async run(apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    const job = await this.job(signal);
    if (signal.aborted) return;
    const manifest = job.manifest!;
    this.manifest = manifest;
    for (const [type, count] of countsByType(manifest.output)) this.options.report.total(type, count);
    try {
      await this.download(job, apply, signal);
    } catch (err) {
      // A resumed job whose files the server has since removed (the IG lets them expire): export anew, once.
      if (!this.resumed || !gone(err)) throw err;
      this.options.report.note(`the files of export ${job.statusUrl} are gone from the server (${(err as Error).message}); starting a new export`);
      await this.options.checkpoints.remove(this.jobName);
      this.resumed = false;
      return this.run(apply, signal);
    }
    if (signal.aborted) return;
    await this.readErrors(manifest, signal);
    await this.deleteJob(job.statusUrl, signal);
  }

  /** The job to download: the one kept from an earlier run, else a new kick-off; polled to its manifest. */
  private async job(signal: AbortSignal): Promise<JobState> {
    const { checkpoints, report } = this.options;
    const kept = await checkpoints.read<JobState>(this.jobName);
    this.resumed = kept !== undefined;
    if (kept?.manifest) {
      report.note(`resuming export ${kept.statusUrl}: ${Object.keys(kept.done ?? {}).length} of ${filesOf(kept.manifest).length} files done`);
      return kept;
    }
    let statusUrl = kept?.statusUrl;
    if (statusUrl) report.note(`resuming export ${statusUrl}`);
    for (let kickOffs = 0; kickOffs < 2; kickOffs++) {
      statusUrl ??= await this.kickOff(signal);
      const manifest = await this.poll(statusUrl, signal);
      if (signal.aborted) return { statusUrl };
      if (manifest) {
        const job: JobState = { statusUrl, manifest, files: {}, done: {} };
        await checkpoints.write(this.jobName, job);
        return job;
      }
      report.note(`export job ${statusUrl} is gone from the server; starting a new one`);
      statusUrl = undefined;
    }
    throw new FhirServerError('request', this.jobName, 'the FHIR server lost the export job twice');
  }

  /** IG "Bulk Data Kick-off Request": 202 with Content-Location; HAPI refuses it without Prefer (wire doc §6). */
  private async kickOff(signal: AbortSignal): Promise<string> {
    const { client, checkpoints, report, level, params } = this.options;
    const url = client.resolve(kickOffPath(level, params));
    const response = await client.get(url, signal, { prefer: 'respond-async', accept: 'application/fhir+json' });
    const location = response.headers.get('content-location');
    if (response.status !== 202 || !location) {
      throw new FhirServerError('request', url, `expected 202 with Content-Location from the $export kick-off ${url}, got HTTP ${response.status}${location ? '' : ' without Content-Location'}`, response.status);
    }
    const statusUrl = new URL(location, url).toString();
    await checkpoints.write(this.jobName, { statusUrl } satisfies JobState);
    report.note(`export started: ${url} (status ${statusUrl})`);
    return statusUrl;
  }

  /** Polls until the manifest (200); undefined when the job is gone (404, 410). */
  private async poll(statusUrl: string, signal: AbortSignal): Promise<Manifest | undefined> {
    const { client, report, maxPollIntervalMs, pollIntervalMs } = this.options;
    while (!signal.aborted) {
      const response = await client.get(statusUrl, signal);
      if (response.status === 200) return manifestOf(response);
      if (response.status === 404 || response.status === 410) return undefined;
      if (response.status !== 202) throw new FhirServerError('request', statusUrl, `unexpected HTTP ${response.status} from the export status ${statusUrl}`, response.status);
      const waitMs = Math.min(retryAfterMs(response.headers.get('retry-after')) ?? pollIntervalMs, maxPollIntervalMs);
      report.note(`export in progress${progressOf(response)}; next poll in ${Math.round(waitMs / 1000)} s`);
      await sleepUnlessAborted(waitMs, signal).catch(() => undefined);
    }
    return undefined;
  }

  /** Every output and deleted file not yet done, `parallelFiles` at once; the first failure stops the others. */
  private async download(job: JobState, apply: ApplyBatch, outer: AbortSignal): Promise<void> {
    const failed = new AbortController();
    const signal = AbortSignal.any([outer, failed.signal]);
    const limit = concurrencyLimit(this.options.parallelFiles);
    const todo = filesOf(job.manifest!).filter((f) => !job.done?.[f.url]);
    await Promise.all(
      todo.map((f) =>
        limit(async () => {
          if (signal.aborted) return;
          await this.file(f, job, apply, signal).catch((err: unknown) => {
            failed.abort(err);
            throw err;
          });
        }),
      ),
    );
  }

  /**
   * One file, streamed: lines are gathered in batches of `batchSize` and the next batch is read while one
   * is applied; each commit records the file's lines done, so a restart skips them. A batch waiting its
   * turn holds only its lines' text: they are parsed into events when the batch before has committed, so
   * at most one batch per file is held parsed (the parsed resources, not the text, are what fill the heap
   * and what each scavenge has to copy while batches wait on the database).
   */
  private async file(f: ManifestFile & { deleted: boolean }, job: JobState, apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    const { client, checkpoints, batchSize, reads } = this.options;
    const transactionMicros = instantMicros(job.manifest!.transactionTime);
    let lines: NdjsonLine[] = [];
    let pending: Promise<void> = Promise.resolve();
    const flush = async (upTo: number) => {
      const taken = lines;
      lines = [];
      await pending;
      const events: ChangeEvent[] = [];
      for (const { line, text } of taken) {
        for (const e of eventsFromText(text, { kind: 'file', file: shownFileUrl(f.url, job.manifest!.requiresAccessToken), line }, arrivalNow(), reads)) events.push(f.deleted ? datedDelete(e, transactionMicros) : e);
      }
      pending = apply(events, signal).then(() => checkpoints.setMember(this.jobName, 'files', f.url, upTo));
      // Not awaited here: the next batch is read meanwhile. A rejection is awaited below or at the next flush.
      pending.catch(() => {});
    };
    let lastLine = job.files?.[f.url] ?? 0;
    let chars = 0;
    for await (const l of ndjsonLines(client, f.url, { withAuth: job.manifest!.requiresAccessToken, skipLines: lastLine, signal })) {
      lastLine = l.line;
      if (l.text.trim() === '') continue;
      lines.push(l);
      chars += l.text.length;
      // One line is one resource in an export (a Bundle would count as one line here, and be one batch's worth less).
      if (lines.length >= batchSize || chars >= BATCH_CHARS) {
        chars = 0;
        await flush(l.line);
      }
    }
    if (lines.length) await flush(lastLine);
    await pending;
    await checkpoints.setMember(this.jobName, 'done', f.url, true);
  }

  /** IG: error files hold OperationOutcomes, one a line; their diagnostics go to the report. */
  private async readErrors(manifest: Manifest, signal: AbortSignal): Promise<void> {
    for (const f of manifest.error) {
      const found: ExportError = { url: shownFileUrl(f.url, manifest.requiresAccessToken), diagnostics: [], serious: false };
      try {
        for await (const { text } of ndjsonLines(this.options.client, f.url, { withAuth: manifest.requiresAccessToken, signal })) {
          if (text.trim() === '') continue;
          const outcome = parseOrUndefined(text);
          found.diagnostics.push(outcomeDiagnostics(outcome) ?? text);
          const issues = (outcome as { issue?: { severity?: string }[] } | undefined)?.issue ?? [];
          if (issues.some((i) => i?.severity === 'error' || i?.severity === 'fatal')) found.serious = true;
        }
      } catch (err) {
        if (!gone(err)) throw err;
        // Removed with the job (a run stopped after deleting it): what it said cannot be known any more.
        found.diagnostics.push(`the error file is gone from the server (${(err as Error).message})`);
        found.serious = true;
      }
      if (found.diagnostics.length) {
        this.errors.push(found);
        this.options.logger.warn({ url: found.url, diagnostics: found.diagnostics }, 'the export reported errors');
      }
    }
  }

  /** IG "Delete a Bulk Data Request"; HAPI answers 404 for a completed job (wire doc §6), which is fine. */
  private async deleteJob(statusUrl: string, signal: AbortSignal): Promise<void> {
    try {
      const response = await this.options.client.delete(statusUrl, signal);
      this.options.logger.debug({ statusUrl, status: response.status }, 'export job deleted');
    } catch (err) {
      if (signal.aborted) throw err;
      this.options.logger.warn({ statusUrl, err: (err as Error).message }, 'could not delete the export job on the server');
    }
  }
}

/** `$export`, `Patient/$export` or `Group/{id}/$export` with the IG's parameters. */
export function kickOffPath(level: string, params: ExportParams): string {
  const query = new URLSearchParams();
  if (params.types.length) query.set('_type', params.types.join(','));
  if (params.since) query.set('_since', params.since.toISOString());
  for (const filter of params.typeFilters) query.append('_typeFilter', filter);
  if (params.elements.length) query.set('_elements', params.elements.join(','));
  const q = query.toString();
  return `${level ? `${level}/` : ''}$export${q ? `?${q}` : ''}`;
}

function filesOf(manifest: Manifest): (ManifestFile & { deleted: boolean })[] {
  return [...manifest.output.map((f) => ({ ...f, deleted: false })), ...(manifest.deleted ?? []).map((f) => ({ ...f, deleted: true }))];
}

function countsByType(files: ManifestFile[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const f of files) if (f.type && typeof f.count === 'number') counts.set(f.type, (counts.get(f.type) ?? 0) + f.count);
  return counts;
}

/**
 * A `deleted` entry names no version (IG: a transaction Bundle of DELETE entries). The resource was deleted
 * before the export's transactionTime, so that time orders it: an update the live stream applied later
 * wins over it, an older state gives way.
 */
function datedDelete(e: ChangeEvent, transactionMicros: bigint | undefined): ChangeEvent {
  if (e.op !== 'delete' || e.order.versionId !== undefined || e.order.lastUpdatedMicros !== undefined || transactionMicros === undefined) return e;
  return { ...e, order: { ...e.order, lastUpdatedMicros: transactionMicros } };
}

function manifestOf(response: FhirResponse): Manifest {
  // HAPI sends the manifest as application/json;charset=ISO-8859-1 (wire doc §6); its content is ASCII.
  const m = response.body as Partial<Manifest> | undefined;
  if (!m || !Array.isArray(m.output) || typeof m.transactionTime !== 'string') {
    throw new FhirServerError('request', response.url, `the export status ${response.url} answered 200 without a manifest (output, transactionTime)`);
  }
  const files = (list: unknown): ManifestFile[] => (Array.isArray(list) ? list.filter((f): f is ManifestFile => typeof f?.url === 'string') : []);
  return {
    transactionTime: m.transactionTime,
    request: String(m.request ?? ''),
    requiresAccessToken: m.requiresAccessToken === true,
    output: files(m.output),
    error: files(m.error),
    ...(m.deleted ? { deleted: files(m.deleted) } : {}),
  };
}

function progressOf(response: FhirResponse): string {
  const progress = response.headers.get('x-progress');
  return progress ? ` (${progress})` : '';
}

/** A 404 or 410 for a file: the server no longer has it. */
function gone(err: unknown): boolean {
  return err instanceof FhirServerError && (err.status === 404 || err.status === 410);
}

function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
