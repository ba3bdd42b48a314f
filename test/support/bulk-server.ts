import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { FhirResource } from '../../src/events/change-event.js';

/**
 * A stand-in FHIR server for backfill and reconcile tests, in the test process: versioned resources (a
 * Synthea export loaded at start), Bulk Data `$export` at system, Patient and Group level, search with
 * paging, reads. Each behaviour copies HAPI FHIR 8.8 as observed in /work/shared/peers/hapi-fhir-8.8-wire.md
 * ("wire doc") section 6 and the Bulk Data Access IG (https://build.fhir.org/ig/HL7/bulk-data/export.html):
 * - kick-off without `Prefer: respond-async` → 400 OperationOutcome HAPI-0513; with it → 202, empty body,
 *   `Content-Location: …/$export-poll-status?_jobId=<uuid>`;
 * - polls while the job runs → 202, no body, `Retry-After: 120` (HAPI's fixed value) and `X-Progress:
 *   Build in progress - Status set to …`; `pollsBeforeReady` polls, then 200 with the manifest as
 *   `application/json;charset=ISO-8859-1`, `requiresAccessToken: true`, `transactionTime` = the time the
 *   job started running (its first poll), output files under `Binary/<id>`, `error: []`;
 * - output files: `Accept: application/fhir+ndjson` (or none, or star) → NDJSON as
 *   `application/fhir+ndjson`; `Accept: application/fhir+json` → the Binary resource (base64 data);
 * - deleted resources are absent from the output and HAPI gives no `deleted` array; `deletedArray: true`
 *   is the IG variant (a `deleted` file of transaction Bundles of DELETE entries when `_since` is given);
 * - `DELETE` of the status URL after completion → 404 "already cancelled or has completed";
 * - reads: 200 with ETag, 410 with `Location: …/_history/N` for a deleted resource (wire doc §5), 404;
 * - searches `Type?…` with `_count`, `_lastUpdated=ge…`, `_id=a,b`, `_elements` (id and meta kept, plus
 *   HAPI's SUBSETTED tag), offset paging with `next` links, `total`.
 * Unlike HAPI, a job does not wait for a maintenance pass each minute: it is ready after its polls.
 */
export interface BulkStandIn {
  baseUrl: string;
  requests: { method: string; url: string; headers: IncomingHttpHeaders }[];
  /** Resources of a type as the server holds them now (live ones only). */
  live(resourceType?: string): FhirResource[];
  update(resource: FhirResource): FhirResource;
  remove(resourceType: string, id: string): void;
  /** The next `count` requests answer `status` with `Retry-After: retryAfter`. */
  failNext(count: number, status: number, retryAfter: string): void;
  /** Polls answered 202 before the manifest. */
  pollsBeforeReady: number;
  /** Lines per output file (several files per type). */
  linesPerFile: number;
  /** The IG's `deleted` array (absent on HAPI). */
  deletedArray: boolean;
  /** An error file with this OperationOutcome diagnostics in the next manifest. */
  errorDiagnostics?: string;
  /** When set, every request must carry exactly this Authorization. */
  requireAuthorization?: string;
  /** Called before an output file is served (to hold downloads). */
  beforeFile?: (url: string) => Promise<void> | void;
  /** Jobs kicked off. */
  kickOffs: URL[];
  /** Removes every output file, as a server does when they expire (IG: the manifest's files may expire). */
  expireFiles(): void;
  close(): Promise<void>;
}

interface Version {
  resourceType: string;
  id: string;
  versionId: number;
  lastUpdatedMs: number;
  resource?: FhirResource;
}

interface Job {
  id: string;
  request: URL;
  level: string;
  polls: number;
  startedMs?: number;
  manifest?: Record<string, unknown>;
}

const HAPI = { 'x-powered-by': 'HAPI FHIR 8.8.0 REST Server (FHIR Server; FHIR 4.0.1/R4)' };

export async function startBulkStandIn(fixtureDir?: string): Promise<BulkStandIn> {
  const latest = new Map<string, Version>();
  const jobs = new Map<string, Job>();
  const binaries = new Map<string, string>();
  const faults: { status: number; retryAfter: string }[] = [];
  let clockMs = 0;
  // Never backwards; writes in the same millisecond share it (HAPI's transactions do, wire doc §6).
  const tick = () => (clockMs = Math.max(Date.now(), clockMs));
  const server = createServer();
  const standIn: BulkStandIn = {
    baseUrl: '',
    requests: [],
    kickOffs: [],
    pollsBeforeReady: 2,
    linesPerFile: 400,
    deletedArray: false,
    live: (type) => [...latest.values()].filter((v) => v.resource && (!type || v.resourceType === type)).map((v) => v.resource!),
    update: (resource) => write(resource),
    remove(resourceType, id) {
      const before = latest.get(`${resourceType}/${id}`);
      if (!before?.resource) throw new Error(`${resourceType}/${id} is not live`);
      latest.set(`${resourceType}/${id}`, { resourceType, id, versionId: before.versionId + 1, lastUpdatedMs: tick() });
    },
    expireFiles: () => binaries.clear(),
    failNext(count, status, retryAfter) {
      for (let i = 0; i < count; i++) faults.push({ status, retryAfter });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };

  function write(resource: FhirResource, lastUpdatedMs = tick()): FhirResource {
    const key = `${resource.resourceType}/${resource.id}`;
    const versionId = (latest.get(key)?.versionId ?? 0) + 1;
    const stored = { ...resource, meta: { ...(resource.meta ?? {}), versionId: String(versionId), lastUpdated: hapiInstant(lastUpdatedMs) } };
    latest.set(key, { resourceType: resource.resourceType, id: resource.id!, versionId, lastUpdatedMs, resource: stored });
    return stored;
  }

  if (fixtureDir) {
    // What the server held before anyone asked: written a minute ago. Dated now, a search in the same
    // second would find them again after a `Date` header (whole seconds) taken as its watermark.
    const heldSinceMs = Date.now() - 60_000;
    for (const file of readdirSync(fixtureDir).filter((f) => f.endsWith('.ndjson')).sort()) {
      for (const line of readFileSync(join(fixtureDir, file), 'utf8').split('\n')) {
        if (!line.trim()) continue;
        const r = JSON.parse(line) as FhirResource;
        if (typeof r.resourceType === 'string' && typeof r.id === 'string') write(r, heldSinceMs);
      }
    }
  }

  server.on('request', (req, res) => {
    standIn.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    void answer(req.method ?? 'GET', new URL(req.url ?? '/', standIn.baseUrl), req.headers, res).catch((err: Error) => {
      if (!res.headersSent) send(res, 500, outcome('error', err.message));
      else res.destroy();
    });
  });

  async function answer(method: string, url: URL, headers: IncomingHttpHeaders, res: ServerResponse): Promise<void> {
    const fault = faults.shift();
    if (fault) return send(res, fault.status, outcome('error', `HTTP ${fault.status}`), { 'retry-after': fault.retryAfter });
    if (standIn.requireAuthorization !== undefined && headers.authorization !== standIn.requireAuthorization) return send(res, 401, outcome('error', 'HAPI-0333: Unauthorized'));
    const path = url.pathname.replace(/^\/fhir\/?/, '').split('/').filter(Boolean);
    const exportAt = path.indexOf('$export');
    if (exportAt >= 0 && method === 'GET') return kickOff(url, path.slice(0, exportAt).join('/'), headers, res);
    if (path[0] === '$export-poll-status') return method === 'DELETE' ? deleteJob(url, res) : poll(url, res);
    if (path[0] === 'Binary' && path.length === 2) return binary(path[1]!, url, headers, res);
    if (method !== 'GET') return send(res, 405, outcome('error', `HAPI-0389: ${method} not served by the stand-in`));
    if (path.length === 1) return search(path[0]!, url, res);
    if (path.length === 2) return read(path[0]!, path[1]!, res);
    send(res, 400, outcome('error', `HAPI-0302: Unknown resource type or path ${url.pathname}`));
  }

  /** Wire doc §6 kick-off. */
  function kickOff(url: URL, level: string, headers: IncomingHttpHeaders, res: ServerResponse): void {
    if (headers.prefer !== 'respond-async') return send(res, 400, outcome('error', 'HAPI-0513: Must request async processing for $export'));
    const id = randomUUID();
    jobs.set(id, { id, request: url, level, polls: 0 });
    standIn.kickOffs.push(url);
    res.writeHead(202, { ...HAPI, 'content-location': `${standIn.baseUrl}/$export-poll-status?_jobId=${id}`, 'content-length': '0' });
    res.end();
  }

  /** Wire doc §6 polling: 202 + Retry-After 120 + X-Progress, then the manifest. */
  function poll(url: URL, res: ServerResponse): void {
    const job = jobs.get(url.searchParams.get('_jobId') ?? '');
    if (!job) return send(res, 404, outcome('error', `HAPI-2040: Unknown instance ID: ${url.searchParams.get('_jobId')}`));
    job.startedMs ??= Date.now();
    if (!job.manifest && job.polls++ < standIn.pollsBeforeReady) {
      const status = job.polls === 1 ? 'QUEUED' : 'IN_PROGRESS';
      res.writeHead(202, { ...HAPI, 'x-progress': `Build in progress - Status set to ${status} at ${hapiInstant(job.startedMs)}`, 'retry-after': '120', 'content-length': '0' });
      return void res.end();
    }
    job.manifest ??= manifestOf(job);
    const text = JSON.stringify(job.manifest, null, 2);
    res.writeHead(200, { ...HAPI, 'content-type': 'application/json;charset=ISO-8859-1', 'content-length': String(Buffer.byteLength(text)) });
    res.end(text);
  }

  function manifestOf(job: Job): Record<string, unknown> {
    const q = job.request.searchParams;
    const types = q.get('_type')?.split(',');
    const sinceMs = q.get('_since') ? Date.parse(q.get('_since')!) : -Infinity;
    const group = job.level.startsWith('Group/');
    const chosen = [...latest.values()].filter((v) => (!types || types.includes(v.resourceType)) && v.lastUpdatedMs >= sinceMs);
    const output: { type: string; url: string }[] = [];
    const byType = new Map<string, Version[]>();
    for (const v of chosen) if (v.resource && (!group || v.resourceType !== 'Group')) byType.set(v.resourceType, [...(byType.get(v.resourceType) ?? []), v]);
    for (const [type, versions] of [...byType].sort(([a], [b]) => a.localeCompare(b))) {
      for (let i = 0; i < versions.length; i += standIn.linesPerFile) {
        output.push({ type, url: file(versions.slice(i, i + standIn.linesPerFile).map((v) => JSON.stringify(v.resource)), type) });
      }
    }
    const manifest: Record<string, unknown> = { transactionTime: hapiInstant(job.startedMs!), request: job.request.toString(), requiresAccessToken: true, output, error: [] };
    if (standIn.errorDiagnostics) manifest.error = [{ type: 'OperationOutcome', url: file([JSON.stringify(outcome('error', standIn.errorDiagnostics))], 'OperationOutcome') }];
    if (standIn.deletedArray && q.get('_since')) {
      const gone = chosen.filter((v) => !v.resource);
      if (gone.length) {
        const bundles = gone.map((v) => JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `${v.resourceType}/${v.id}` } }] }));
        manifest.deleted = [{ type: 'Bundle', url: file(bundles, 'Bundle') }];
      }
    }
    return manifest;
  }

  function file(lines: string[], _type: string): string {
    const id = randomUUID().replace(/-/g, '');
    binaries.set(id, lines.map((l) => `${l}\n`).join(''));
    return `${standIn.baseUrl}/Binary/${id}`;
  }

  /** Wire doc §6: NDJSON to fhir+ndjson (or no Accept), the Binary resource to fhir+json. */
  async function binary(id: string, url: URL, headers: IncomingHttpHeaders, res: ServerResponse): Promise<void> {
    const text = binaries.get(id);
    if (text === undefined) return send(res, 404, outcome('error', `HAPI-2001: Resource Binary/${id} is not known`));
    await standIn.beforeFile?.(url.toString());
    const accept = headers.accept ?? '*/*';
    if (accept.includes('application/fhir+json')) {
      return send(res, 200, { resourceType: 'Binary', id, meta: { versionId: '1' }, contentType: 'application/fhir+ndjson', data: Buffer.from(text).toString('base64') });
    }
    res.writeHead(200, {
      ...HAPI,
      etag: 'W/"1"',
      'content-location': `${standIn.baseUrl}/Binary/${id}/_history/1`,
      'content-disposition': 'Attachment;',
      'content-type': 'application/fhir+ndjson',
      'content-length': String(Buffer.byteLength(text)),
    });
    res.end(text);
  }

  /** Wire doc §6: DELETE of a completed job → 404. */
  function deleteJob(url: URL, res: ServerResponse): void {
    const id = url.searchParams.get('_jobId') ?? '';
    const job = jobs.get(id);
    if (!job) return send(res, 404, outcome('error', `HAPI-2040: Unknown instance ID: ${id}`));
    if (job.manifest) return send(res, 404, outcome('error', `Job instance <${id}> was already cancelled or has completed. Nothing to do.`));
    jobs.delete(id);
    send(res, 202, outcome('information', `Job instance <${id}> successfully cancelled.`));
  }

  /** Wire doc §5: 410 with Location naming the deleting version. */
  function read(type: string, id: string, res: ServerResponse): void {
    const v = latest.get(`${type}/${id}`);
    if (!v) return send(res, 404, outcome('error', `HAPI-2001: Resource ${type}/${id} is not known`));
    const location = `${standIn.baseUrl}/${type}/${id}/_history/${v.versionId}`;
    if (!v.resource) return send(res, 410, outcome('information', `Resource was deleted at ${hapiInstant(v.lastUpdatedMs)}`), { location });
    send(res, 200, v.resource, { etag: `W/"${v.versionId}"`, 'content-location': location });
  }

  function search(type: string, url: URL, res: ServerResponse): void {
    const q = url.searchParams;
    const count = Number(q.get('_count') ?? 20);
    const offset = Number(q.get('_offset') ?? 0);
    const ids = q.get('_id')?.split(',');
    const since = q.getAll('_lastUpdated').map((v) => Date.parse(v.replace(/^ge/, '')));
    const elements = q.get('_elements')?.split(',');
    const hits = [...latest.values()]
      .filter((v) => v.resource && v.resourceType === type && (!ids || ids.includes(v.id)) && since.every((s) => v.lastUpdatedMs >= s))
      .sort((a, b) => a.id.localeCompare(b.id));
    const page = hits.slice(offset, offset + count);
    const link = [{ relation: 'self', url: url.toString() }];
    if (offset + count < hits.length) {
      const next = new URL(url);
      next.searchParams.set('_offset', String(offset + count));
      next.searchParams.set('_count', String(count));
      link.push({ relation: 'next', url: next.toString() });
    }
    const shown = (r: FhirResource): FhirResource =>
      elements ? ({ resourceType: r.resourceType, id: r.id, meta: { ...r.meta, tag: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' }] } } as FhirResource) : r;
    send(res, 200, {
      resourceType: 'Bundle',
      id: randomUUID(),
      meta: { lastUpdated: hapiInstant(Date.now()) },
      type: 'searchset',
      total: hits.length,
      link,
      entry: page.map((v) => ({ fullUrl: `${standIn.baseUrl}/${type}/${v.id}`, resource: shown(v.resource!), search: { mode: 'match' } })),
    });
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  standIn.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  return standIn;
}

function hapiInstant(ms: number): string {
  return new Date(ms).toISOString().replace('Z', '+00:00');
}

function outcome(severity: string, diagnostics: string): FhirResource {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code: 'processing', diagnostics }] };
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/fhir+json;charset=UTF-8', ...HAPI, ...headers });
  res.end(JSON.stringify(body));
}
