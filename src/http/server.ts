import Fastify, { type FastifyInstance } from 'fastify';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { HttpConfig } from '../config/config.js';

/**
 * fhir-rte's one HTTP server. The parts that answer HTTP (the REST-hook receiver; metrics and the console
 * later) add their own routes to it before it listens. Fastify's own request log is off: request headers
 * carry secrets, and each part logs what matters in its own terms.
 */
export function createHttpServer(config: HttpConfig): FastifyInstance {
  const https = config.tls && { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) };
  // The body limit is set per route by the part that owns it; this one only bounds routes that set none.
  return (https ? Fastify({ logger: false, https }) : Fastify({ logger: false })) as unknown as FastifyInstance;
}

/** Starts listening; resolves with the address (`http://127.0.0.1:8090`). */
export async function listen(server: FastifyInstance, config: HttpConfig, log: Logger): Promise<string> {
  const address = await server.listen({ host: config.host, port: config.port });
  log.info({ address }, 'HTTP server listening');
  return address;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
