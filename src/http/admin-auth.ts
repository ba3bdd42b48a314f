import type { FastifyReply, FastifyRequest } from 'fastify';
import { bearerProblem } from './bearer.js';

const WORDING = { token: '<admin token>', setIn: 'FHIR_RTE_ADMIN_TOKEN', wrong: 'wrong admin token' };

/** How to turn the admin API and console on, said wherever they are off. */
export const ADMIN_OFF =
  'the admin API (dead letters, troubleshooting) and the console are off: no admin token is configured. Set FHIR_RTE_ADMIN_TOKEN (or admin.token in fhir-rte.yaml) to a secret of at least 16 characters and restart fhir-rte';

/**
 * The check in front of every admin route: `Authorization: Bearer <admin token>`, compared in constant
 * time (over digests, so the token's length does not leak either). The token is never taken from a URL,
 * where proxies and browser history would keep it. Answers carry JSON saying what is wrong, never the
 * token given.
 */
export function adminAuth(token: string | undefined) {
  // An async hook that answers returns the reply: fastify then runs nothing after it (no handler).
  return async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    if (token === undefined) return reply.code(404).send({ error: ADMIN_OFF });
    const problem = bearerProblem(request.headers.authorization, token, WORDING);
    if (problem) return reply.code(401).header('WWW-Authenticate', 'Bearer realm="fhir-rte admin"').send({ error: problem });
    return undefined;
  };
}
