import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
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

/**
 * Checks Medplum's `X-Signature`: hex HMAC-SHA256 of the raw body with the secret (medplum/medplum
 * packages/server/src/workers/subscription.ts, `buildRestHookHeaders`). Medplum signs a delete over the deleted
 * resource but sends `{}` as its body, so a delete cannot be verified this way and needs the Bearer header.
 */
export function signatureProblem(body: Buffer, signature: string, secret: string): Answer | undefined {
  const expected = createHmac('sha256', secret).update(body).digest('hex');
  if (sameSecret(signature.trim().toLowerCase(), expected)) return undefined;
  const hint = body.toString('utf8').trim() === '{}' ? ' (a Medplum delete signs the deleted resource, not its body: set channel.header to "Authorization: Bearer <secret>")' : '';
  return unauthorized(`X-Signature is not the HMAC-SHA256 of the body with the secret${hint}`);
}
