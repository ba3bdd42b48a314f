/** Every answer the receiver gives is a FHIR OperationOutcome, so a sender's log shows what was wrong. */

export interface Answer {
  status: number;
  /** FHIR issue type: invalid, security, too-costly, not-supported, transient, informational, exception. */
  code: string;
  diagnostics: string;
  /** Seconds, for a 503. */
  retryAfter?: number;
}

export function operationOutcome(answer: Answer): Record<string, unknown> {
  const severity = answer.status < 400 ? 'information' : 'error';
  return { resourceType: 'OperationOutcome', issue: [{ severity, code: answer.code, diagnostics: answer.diagnostics }] };
}

export const badRequest = (diagnostics: string): Answer => ({ status: 400, code: 'invalid', diagnostics });
export const unauthorized = (diagnostics: string): Answer => ({ status: 401, code: 'security', diagnostics });
export const unsupportedType = (diagnostics: string): Answer => ({ status: 415, code: 'not-supported', diagnostics });
export const tooLarge = (diagnostics: string): Answer => ({ status: 413, code: 'too-costly', diagnostics });
export const unavailable = (diagnostics: string, retryAfter: number): Answer => ({ status: 503, code: 'transient', diagnostics, retryAfter });
export const accepted = (diagnostics: string): Answer => ({ status: 200, code: 'informational', diagnostics });
