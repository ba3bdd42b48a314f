import { createHash, timingSafeEqual } from 'node:crypto';
import { unauthorized, type Answer } from './operation-outcome.js';

/**
 * Checks `Authorization: Bearer <secret>`, as a Subscription's `channel.header` sets it. Compared in constant
 * time over equal-length digests, so neither the secret's content nor its length leaks through timing.
 */
export function bearerProblem(authorization: string | undefined, secret: string): Answer | undefined {
  if (!authorization) return unauthorized('missing Authorization header: expected "Bearer <secret>" (set it in the Subscription\'s channel.header)');
  const m = authorization.match(/^Bearer\s+(.+)$/i);
  if (!m) return unauthorized('the Authorization header is not "Bearer <secret>"');
  if (!sameSecret(m[1]!.trim(), secret)) return unauthorized('wrong secret in the Authorization header');
  return undefined;
}

export function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}
