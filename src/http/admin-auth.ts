import type { FastifyReply, FastifyRequest } from 'fastify';
import { sameSecret } from '../sources/resthook/secret.js';

/**
 * The admin API's check: `Authorization: Bearer <FHIR_RTE_ADMIN_TOKEN>`, compared in constant time over
 * equal-length digests. Without a configured token the API is off (404, saying how to turn it on), so an
 * unset variable never opens it. An onRequest hook: a refused request is answered before its body is read.
 */
export function adminAuth(token: string | undefined) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!token) return refuse(reply, 404, 'the admin API is off: set FHIR_RTE_ADMIN_TOKEN to turn it on');
    const m = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
    if (!m) return refuse(reply, 401, 'missing admin token: send "Authorization: Bearer <FHIR_RTE_ADMIN_TOKEN>"');
    if (!sameSecret(m[1]!.trim(), token)) return refuse(reply, 401, 'wrong admin token');
  };
}

async function refuse(reply: FastifyReply, status: number, error: string): Promise<void> {
  if (status === 401) void reply.header('www-authenticate', 'Bearer realm="fhir-rte"');
  await reply.code(status).send({ error });
}
