import type pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import { authenticator } from '../../fhir-client/auth.js';
import { FhirClient } from '../../fhir-client/fhir-client.js';
import { currentReader, type ReadCurrent } from '../../fhir-client/read-current.js';
import { deleteResolver, type ResolveDelete } from '../../fhir-client/resolve-delete.js';
import { tlsDispatcher } from '../../fhir-client/tls.js';
import { GapRepair } from './gap-repair.js';

export interface FhirServerReads {
  client: FhirClient;
  /** For the receiver's DELETE deliveries. */
  resolveDelete: ResolveDelete;
  /** For the receiver's id-only topic notifications. */
  readCurrent: ReadCurrent;
  /** A Source for `fhir-rte start`, and the receiver's CatchUp. */
  gapRepair: GapRepair;
}

/** What `fhir-rte start` needs from the configured FHIR server; undefined without `fhirServer.baseUrl`. */
export function fhirServerReads(config: Config, pool: pg.Pool, logger: Logger): FhirServerReads | undefined {
  const server = config.fhirServer;
  if (!server) return undefined;
  const log = logger.child({ component: 'fhir-server' });
  const client = fhirClient(config, server, log);
  return {
    client,
    resolveDelete: deleteResolver(client, { logger: log }),
    readCurrent: currentReader(client),
    gapRepair: new GapRepair({
      client,
      pool,
      types: server.historyTypes,
      pageSize: server.pageSize,
      repairEveryMs: server.repairEveryMs,
      marginMs: server.repairMarginMs,
      firstRepair: server.firstRepair,
      logger: log.child({ component: 'gap-repair' }),
    }),
  };
}

/** The client for the configured FHIR server (also `fhir-rte subscribe`'s). */
export function fhirClient(config: Config, server: NonNullable<Config['fhirServer']>, log: Logger): FhirClient {
  const dispatcher = server.tls ? tlsDispatcher(server.tls) : undefined;
  return new FhirClient({
    baseUrl: server.baseUrl,
    auth: authenticator(server.auth, { timeoutMs: server.timeoutMs, ...(dispatcher ? { dispatcher } : {}) }),
    timeoutMs: server.timeoutMs,
    maxAttempts: server.maxAttempts,
    retry: config.retry,
    retryAfterMaxMs: server.retryAfterMaxMs,
    logger: log,
    limits: { maxConcurrency: server.maxConcurrency, maxRequestsPerSecond: server.maxRequestsPerSecond },
    ...(dispatcher ? { dispatcher } : {}),
  });
}
