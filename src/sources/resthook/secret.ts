import { createHmac } from 'node:crypto';
import { bearerProblem as problemOf, sameSecret } from '../../http/bearer.js';
import { unauthorized, type Answer } from './operation-outcome.js';

const WORDING = { token: '<secret>', setIn: "set it in the Subscription's channel.header", wrong: 'wrong secret in the Authorization header' };

/** Checks `Authorization: Bearer <secret>`, as a Subscription's `channel.header` sets it. */
export function bearerProblem(authorization: string | undefined, secret: string): Answer | undefined {
  const problem = problemOf(authorization, secret, WORDING);
  return problem === undefined ? undefined : unauthorized(problem);
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
