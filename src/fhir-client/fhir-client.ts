import type { Logger } from 'pino';
import { fetch as undiciFetch, type Dispatcher } from 'undici';
import type { FhirResource } from '../events/change-event.js';
import { Backoff, sleepUnlessAborted, type BackoffPolicy } from '../retry/backoff.js';
import type { Authenticator } from './auth.js';
import { faultOfStatus, FhirServerError, retryAfterMs, statusError } from './fhir-error.js';
import { DEFAULT_LIMITS, requestLimit, type RequestLimits } from './limit.js';
import { tlsProblem } from './tls.js';

export interface FhirClientOptions {
  /** The server's base, e.g. `https://fhir.example.org/fhir`. */
  baseUrl: string;
  auth: Authenticator;
  /** One request's limit, from sending to the last byte of the body. */
  timeoutMs: number;
  /** Tries of one request before a transient fault is reported. */
  maxAttempts: number;
  retry: BackoffPolicy;
  /** The longest wait a `Retry-After` may impose; a longer one is cut to this. */
  retryAfterMaxMs: number;
  logger: Logger;
  /** Bounds every request this client makes, whoever asks (default DEFAULT_LIMITS). */
  limits?: RequestLimits;
  /** Connections with the configured TLS trust and client certificate (tls.ts); absent: Node's defaults. */
  dispatcher?: Dispatcher;
}

/** A server's answer that is not a fault: a 2xx, or 404 / 410, which say something about the resource. */
export interface FhirResponse {
  url: string;
  status: number;
  headers: Headers;
  /** The body as received, for parsers that keep decimals exactly (eventsFromText). */
  text: string;
  /** The body parsed plainly, for links, meta and OperationOutcomes; undefined when it is not JSON. */
  body: unknown;
}

/** One page of a Bundle walk. */
export interface BundlePage extends FhirResponse {
  bundle: FhirResource;
}

const FHIR_JSON = 'application/fhir+json';

/**
 * A small FHIR REST client (reads, and the few writes `fhir-rte subscribe` makes) on Node's fetch: auth headers from an Authenticator, a timeout per
 * request, transient faults (429, 5xx, network) retried with the shared backoff honouring `Retry-After`,
 * other faults raised as FhirServerError (see fhir-error.ts). Credentials never reach a log: only URLs do,
 * and the base URL may not carry any.
 */
export class FhirClient {
  readonly baseUrl: string;
  /** The one gate every request to the server passes: delete resolution, id-only reads, gap repair, subscribe. */
  private readonly limit: ReturnType<typeof requestLimit>;

  constructor(readonly options: FhirClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.limit = requestLimit(options.limits ?? DEFAULT_LIMITS);
  }

  /** A path relative to the base (`Patient/1`, `_history?_since=…`) or an absolute URL under it. */
  resolve(target: string): string {
    if (!/^https?:\/\//i.test(target)) return `${this.baseUrl}/${target.replace(/^\/+/, '')}`;
    if (target !== this.baseUrl && !target.startsWith(`${this.baseUrl}/`) && !target.startsWith(`${this.baseUrl}?`)) {
      // Following it would send fhir-rte's credentials elsewhere; HAPI writes links from its server_address.
      throw new FhirServerError('request', target, `the FHIR server linked to ${target}, outside fhirServer.baseUrl ${this.baseUrl}; set the server's own address (HAPI: server_address) to the base fhir-rte uses`);
    }
    return target;
  }

  /** GETs a resource or Bundle; resolves with 2xx, 404 and 410 answers, throws FhirServerError for the rest. */
  async get(target: string, signal?: AbortSignal, headers?: Record<string, string>): Promise<FhirResponse> {
    return this.request({ method: 'GET', headers }, target, signal);
  }

  /** DELETEs (a Bulk Data job at its status URL); resolves with 2xx, 404 and 410 answers. */
  async delete(target: string, signal?: AbortSignal): Promise<FhirResponse> {
    return this.request({ method: 'DELETE' }, target, signal);
  }

  /**
   * POSTs or PUTs a resource; resolves with the 2xx answer, throws FhirServerError otherwise. A POST is
   * retried only when the server answered (429, 5xx), never after a timeout or a lost connection, where
   * it may have been created already.
   */
  async write(method: 'POST' | 'PUT', target: string, resource: FhirResource, signal?: AbortSignal): Promise<FhirResponse> {
    const response = await this.request({ method, body: JSON.stringify(resource) }, target, signal);
    if (response.status >= 300) throw statusError('request', response.url, response.status, response.body, method);
    return response;
  }

  private async request(init: Request, target: string, signal?: AbortSignal): Promise<FhirResponse> {
    const url = this.resolve(target);
    const backoff = new Backoff(this.options.retry);
    let reauthorized = false;
    for (let attempt = 1; ; attempt++) {
      const { response, error, waitMs } = await this.attempt(init, url, signal);
      if (response) return response;
      if (error.fault === 'auth' && !reauthorized && this.options.auth.rejected?.()) {
        reauthorized = true;
        continue;
      }
      if (error.fault !== 'transient' || attempt >= this.options.maxAttempts) throw error;
      if (init.method === 'POST' && error.status === undefined) throw error;
      const ms = Math.min(waitMs ?? backoff.next(), this.options.retryAfterMaxMs);
      this.options.logger.warn({ url, attempt, status: error.status, retryInMs: ms, err: error.message }, 'FHIR server request failed; retrying');
      await sleepUnlessAborted(ms, signal);
    }
  }

  /** Walks a Bundle and the pages its `link[relation=next]` name, one page at a time. */
  async *pages(target: string, signal?: AbortSignal): AsyncGenerator<BundlePage> {
    const seen = new Set<string>();
    for (let url: string | undefined = this.resolve(target); url !== undefined; ) {
      if (seen.has(url)) throw new FhirServerError('request', url, `the FHIR server's next link loops back to ${url}`);
      seen.add(url);
      const page = asBundlePage(await this.get(url, signal));
      yield page;
      const next = nextLink(page.bundle);
      url = next === undefined ? undefined : this.resolve(next);
    }
  }

  /**
   * Opens a response whose body the caller streams (a Bulk Data file, ndjson-stream.ts): through the same
   * request limit and TLS settings as every other request, with no timeout of its own (the caller bounds
   * stalls) and no retry (the caller resumes after the lines it has). The limit's slot is held until the
   * headers arrive; how many files download at once is the caller's bound.
   */
  async open(url: string, headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
    const res = await this.limit(() => undiciFetch(url, { headers, signal, ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}) }), signal);
    return res as unknown as Response;
  }

  /** One try: the response when it is an answer, or the fault (and the wait the server asked for). */
  private async attempt(init: Request, url: string, signal?: AbortSignal): Promise<{ response: FhirResponse; error?: never; waitMs?: never } | { response?: never; error: FhirServerError; waitMs?: number }> {
    let response: FhirResponse;
    try {
      response = await this.fetchOnce(init, url, signal);
    } catch (err) {
      if (err instanceof FhirServerError) return { error: err };
      throw err;
    }
    const fault = faultOfStatus(response.status);
    if (!fault) return { response };
    return { error: statusError(fault, url, response.status, response.body, init.method), waitMs: retryAfterMs(response.headers.get('retry-after')) };
  }

  private async fetchOnce(init: Request, url: string, signal?: AbortSignal): Promise<FhirResponse> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const { method } = init;
    try {
      const headers = { accept: FHIR_JSON, ...(init.body === undefined ? {} : { 'content-type': FHIR_JSON }), ...init.headers, ...(await this.options.auth.headers(signal)) };
      const both = signal ? AbortSignal.any([signal, timeout]) : timeout;
      return await this.limit(async () => {
        const res = await undiciFetch(url, { method, body: init.body, headers, signal: both, ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}) });
        const text = await res.text();
        return { url, status: res.status, headers: res.headers as unknown as Headers, text, body: parseOrUndefined(text) };
      }, both);
    } catch (err) {
      signal?.throwIfAborted();
      if (timeout.aborted) throw new FhirServerError('transient', url, `the FHIR server did not answer ${method} ${url} within ${this.options.timeoutMs} ms`);
      if (err instanceof FhirServerError) throw err;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const tls = tlsProblem(cause);
      if (tls) throw new FhirServerError('auth', url, `TLS with the FHIR server failed for ${method} ${url}: ${tls}; check fhirServer.tls`);
      throw new FhirServerError('transient', url, `the FHIR server could not be reached for ${method} ${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
  }
}

/** One request's method and body (JSON text), the same on every try. */
interface Request {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  body?: string;
  /** Beside the defaults (`Prefer: respond-async` for a Bulk Data kick-off). */
  headers?: Record<string, string>;
}

function asBundlePage(response: FhirResponse): BundlePage {
  const bundle = response.body as FhirResource | undefined;
  if (response.status !== 200 || bundle?.resourceType !== 'Bundle') {
    const got = response.status !== 200 ? `HTTP ${response.status}` : `a ${bundle?.resourceType ?? 'non-FHIR'} body`;
    throw new FhirServerError('request', response.url, `expected a Bundle from GET ${response.url}, got ${got}`, response.status);
  }
  return { ...response, bundle };
}

export function nextLink(bundle: FhirResource): string | undefined {
  const links = Array.isArray(bundle.link) ? (bundle.link as { relation?: unknown; url?: unknown }[]) : [];
  const next = links.find((l) => l?.relation === 'next')?.url;
  return typeof next === 'string' && next !== '' ? next : undefined;
}

function parseOrUndefined(text: string): unknown {
  try {
    return text === '' ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}
