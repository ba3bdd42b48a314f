import { Readable } from 'node:stream';
import { Backoff, sleepUnlessAborted } from '../retry/backoff.js';
import { lineChunks } from '../events/ndjson-lines.js';
import type { FhirClient } from './fhir-client.js';
import { faultOfStatus, FhirServerError, retryAfterMs, statusError } from './fhir-error.js';

export const FHIR_NDJSON = 'application/fhir+ndjson';

export interface NdjsonLine {
  /** 1-based line number in the file (blank lines count). */
  line: number;
  text: string;
}

export interface NdjsonOptions {
  /** Send the client's Authorization (a manifest's `requiresAccessToken: true`); else the URL is fetched bare. */
  withAuth: boolean;
  /** Lines already taken on an earlier run: not yielded again. */
  skipLines?: number;
  signal?: AbortSignal;
}

/**
 * Streams a Bulk Data output file line by line, never holding it whole. `Accept: application/fhir+ndjson`
 * is sent because HAPI answers a Binary resource to `application/fhir+json` (wire doc §6). A connection
 * that fails before or during the body (429, 5xx, reset, a stall longer than the client's timeout) is
 * opened again with the client's backoff, honouring Retry-After, and the lines already yielded are skipped
 * (an export file does not change). With `withAuth` the URL must lie under the client's base, so the
 * credentials never go to another host; without it any http(s) URL (pre-signed storage) is fetched bare.
 */
export async function* ndjsonLines(client: FhirClient, url: string, options: NdjsonOptions): AsyncGenerator<NdjsonLine> {
  const target = options.withAuth ? client.resolve(url) : url;
  const shown = shownFileUrl(target, options.withAuth);
  const backoff = new Backoff(client.options.retry);
  let taken = options.skipLines ?? 0;
  let reauthorized = false;
  for (let attempt = 1; ; attempt++) {
    try {
      for await (const line of linesOnce(client, { target, shown }, options, taken)) {
        taken = line.line;
        yield line;
        attempt = 1;
      }
      return;
    } catch (err) {
      const fault = err instanceof FhirServerError ? err : undefined;
      // A SMART token that expired during a long download: one more try with a fresh one, as FhirClient does.
      if (fault?.fault === 'auth' && options.withAuth && !reauthorized && client.options.auth.rejected?.()) {
        reauthorized = true;
        continue;
      }
      if (!fault || fault.fault !== 'transient' || attempt >= client.options.maxAttempts) throw err;
      const ms = Math.min((fault as DownloadError).waitMs ?? backoff.next(), client.options.retryAfterMaxMs);
      client.options.logger.warn({ url: shown, attempt, status: fault.status, retryInMs: ms, afterLine: taken, err: fault.message }, 'bulk data file download failed; retrying');
      await sleepUnlessAborted(ms, options.signal);
    }
  }
}

class DownloadError extends FhirServerError {
  waitMs?: number;
}

/**
 * How a file URL appears in logs, errors and dead letters. Fetched without fhir-rte's credentials, it is
 * typically a pre-signed storage URL whose query string is itself a credential: shown without it.
 */
export function shownFileUrl(url: string, withAuth: boolean): string {
  if (withAuth || !URL.canParse(url)) return url;
  const u = new URL(url);
  return u.search ? `${u.origin}${u.pathname}?…` : url;
}

async function* linesOnce(client: FhirClient, { target, shown: url }: { target: string; shown: string }, options: NdjsonOptions, skip: number): AsyncGenerator<NdjsonLine> {
  const { timeoutMs } = client.options;
  const stall = new AbortController();
  // One timer for the whole download, pushed back by every chunk: a slow but moving file is not cut.
  const timer = setTimeout(() => stall.abort(), timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, stall.signal]) : stall.signal;
  try {
    const auth = options.withAuth ? await client.options.auth.headers(options.signal) : {};
    const res = await client.open(target, { accept: FHIR_NDJSON, ...auth }, signal);
    const fault = faultOfStatus(res.status);
    if (fault || res.status !== 200) {
      const text = await res.text();
      const error = statusError(fault ?? 'request', url, res.status, parse(text));
      throw Object.assign(new DownloadError(error.fault, url, error.message, res.status, error.diagnostics), { waitMs: retryAfterMs(res.headers.get('retry-after')) });
    }
    if (!res.body) return;
    const type = res.headers.get('content-type') ?? '';
    if (/^application\/(fhir\+)?json/i.test(type)) {
      // A server that ignored the Accept header and sent the Binary resource (HAPI does so for fhir+json).
      yield* numbered((await binaryText(await res.text(), url)).split('\n'), skip);
      return;
    }
    let line = 0;
    for await (const texts of lineChunks(Readable.fromWeb(res.body as never))) {
      timer.refresh();
      for (const text of texts) if (++line > skip) yield { line, text };
    }
  } catch (err) {
    options.signal?.throwIfAborted();
    if (err instanceof FhirServerError) throw err;
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = stall.signal.aborted ? `no data for ${timeoutMs} ms` : (cause?.code ?? cause?.message ?? (err as Error).message);
    throw new DownloadError('transient', url, `downloading ${url} failed: ${why}`);
  } finally {
    clearTimeout(timer);
  }
}

function* numbered(lines: string[], skip: number): Generator<NdjsonLine> {
  for (let i = skip; i < lines.length; i++) yield { line: i + 1, text: lines[i]! };
}

async function binaryText(text: string, url: string): Promise<string> {
  const binary = parse(text) as { resourceType?: string; data?: unknown } | undefined;
  if (binary?.resourceType !== 'Binary' || typeof binary.data !== 'string') {
    throw new FhirServerError('request', url, `expected NDJSON from ${url}, got ${binary?.resourceType ? `a ${binary.resourceType}` : 'JSON that is not a Binary'}`);
  }
  return Buffer.from(binary.data, 'base64').toString('utf8');
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
