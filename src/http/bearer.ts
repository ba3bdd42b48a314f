import { createHash, timingSafeEqual } from 'node:crypto';

/** How a refusal names the token it expected: `Bearer <secret>` and where to set it, or the admin token. */
export interface BearerWording {
  /** `<secret>`, `<admin token>`: what follows "Bearer" in the messages. */
  token: string;
  /** Where the caller sets it, said when the header is missing. */
  setIn: string;
  /** The message for a token that is not the one configured. */
  wrong: string;
}

/**
 * Checks `Authorization: Bearer <token>` against the configured one; says what is wrong, or undefined.
 * Shared by the REST-hook receiver (the Subscription's secret) and the admin API (the admin token).
 */
export function bearerProblem(authorization: string | undefined, expected: string, wording: BearerWording): string | undefined {
  if (!authorization) return `missing Authorization header: expected "Bearer ${wording.token}" (${wording.setIn})`;
  const m = /^Bearer\s+(.+)$/i.exec(authorization);
  if (!m) return `the Authorization header is not "Bearer ${wording.token}"`;
  if (!sameSecret(m[1]!.trim(), expected)) return wording.wrong;
  return undefined;
}

/** Compared in constant time over equal-length digests, so neither a secret's content nor its length leaks through timing. */
export function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}
