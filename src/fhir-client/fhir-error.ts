/**
 * The FHIR server's failures, sorted three ways as the sink sorts the database's:
 * - transient: 429, 5xx, a timeout, a refused or reset connection; retried with backoff, then reported as
 *   unavailable (the caller keeps its position and tries again later).
 * - request: any other 4xx (but 404 and 410, which are answers about the resource); this one request is
 *   wrong and repeating it cannot help. The message names the URL and the server's OperationOutcome.
 * - auth: 401 or 403; the configured credentials are refused, so nothing will succeed until they change.
 */
export type FhirFault = 'transient' | 'request' | 'auth';

export class FhirServerError extends Error {
  override readonly name = 'FhirServerError';
  constructor(
    readonly fault: FhirFault,
    readonly url: string,
    message: string,
    readonly status?: number,
    readonly diagnostics?: string,
  ) {
    super(message);
  }
}

export function faultOfStatus(status: number): FhirFault | undefined {
  if (status === 429 || status >= 500) return 'transient';
  if (status === 401 || status === 403) return 'auth';
  if (status >= 400 && status !== 404 && status !== 410) return 'request';
  return undefined;
}

/** What an OperationOutcome says, joined (`issue[].diagnostics`, else `details.text`); undefined for any other body. */
export function outcomeDiagnostics(body: unknown): string | undefined {
  const issues = (body as { resourceType?: string; issue?: unknown })?.issue;
  if ((body as { resourceType?: string })?.resourceType !== 'OperationOutcome' || !Array.isArray(issues)) return undefined;
  const texts = issues
    .map((i: { diagnostics?: unknown; details?: { text?: unknown } }) => i?.diagnostics ?? i?.details?.text)
    .filter((t): t is string => typeof t === 'string' && t !== '');
  return texts.length ? texts.join('; ') : undefined;
}

export function statusError(fault: FhirFault, url: string, status: number, body: unknown, method = 'GET'): FhirServerError {
  const diagnostics = outcomeDiagnostics(body);
  const said = diagnostics ? `: ${diagnostics}` : '';
  const what =
    fault === 'auth'
      ? `the FHIR server refused fhir-rte's credentials (HTTP ${status}) for ${method} ${url}${said}; check fhirServer.auth`
      : fault === 'request'
        ? `the FHIR server rejected ${method} ${url} with HTTP ${status}${said}`
        : `the FHIR server is unavailable: ${method} ${url} answered HTTP ${status}${said}`;
  return new FhirServerError(fault, url, what, status, diagnostics);
}

/** Seconds (`120`) or an HTTP date, as milliseconds from `now`; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
