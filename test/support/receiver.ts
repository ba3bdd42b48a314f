import type { FastifyInstance } from 'fastify';
import type { ResthookConfig } from '../../src/config/config.js';
import { createHttpServer, listen } from '../../src/http/server.js';
import { ResthookSource, type ResthookOptions } from '../../src/sources/resthook/resthook-source.js';
import type { ApplyBatch } from '../../src/sources/source.js';
import { freePort } from './free-port.js';
import { silent } from './sink.js';

export interface TestReceiver {
  /** `http://127.0.0.1:<port>/resthook` */
  endpoint: string;
  server: FastifyInstance;
  /** Size of each batch the receiver applied (one per group commit). */
  groups: number[];
  /** The source's run: settles when it stops (rejects on a fault that must stop fhir-rte). */
  running: Promise<void>;
  stop(): Promise<void>;
}

/** The real receiver on the real HTTP server, on a free port, applying through `apply` (a real sink's). */
export async function startReceiver(
  apply: ApplyBatch,
  config: Partial<ResthookConfig> = {},
  options: Partial<ResthookOptions> = {},
  tls?: { cert: string; key: string },
): Promise<TestReceiver> {
  const http = { host: '127.0.0.1', port: await freePort(), ...(tls ? { tls } : {}) };
  const server = createHttpServer(http);
  const full: ResthookConfig = { path: '/resthook', ackTimeoutMs: 10_000, maxBodyBytes: 1 << 20, groupWindowMs: 5, maxEvents: 1000, groupsInFlight: 2, retryAfterSeconds: 5, ...config };
  const source = new ResthookSource(server, full, http, { log: silent, ...options });
  const address = await listen(server, http, silent);
  const groups: number[] = [];
  const abort = new AbortController();
  const running = source.run((batch, signal) => {
    groups.push(batch.length);
    return apply(batch, signal);
  }, abort.signal);
  return {
    endpoint: `${address}${full.path}`,
    server,
    groups,
    running,
    async stop() {
      abort.abort();
      await running.catch(() => {});
      await server.close();
    },
  };
}
