import type { FastifyInstance } from 'fastify';
import { registerConsole } from '../http/console-page.js';
import { registerDeadLetterApi } from '../http/dead-letter-api.js';
import { isLoopback } from '../http/server.js';
import { TransformerReload } from './reload-transformers.js';
import type { Runtime } from './runtime.js';

/**
 * Transformer reloads on SIGHUP (the usual "read your configuration again"), for every `fhir-rte start`,
 * with or without its HTTP server: without a handler SIGHUP would end the process undrained. Returns what
 * undoes it.
 */
export function reloadOnHangup(runtime: Runtime, reload: TransformerReload): () => void {
  const log = runtime.logger.child({ part: 'admin' });
  const onHangup = () => void reload.reload(true).catch((err: Error) => log.error({ error: err.message }, 'transformers not reloaded; the ones in use stay'));
  process.on('SIGHUP', onHangup);
  return () => process.off('SIGHUP', onHangup);
}

/**
 * The operator's side of `fhir-rte start` on its HTTP server: the dead-letter API (/api/), the console
 * (/console/) and transformer reloads from the API and the console's retry.
 */
export function serveAdmin(server: FastifyInstance, runtime: Runtime, reload: TransformerReload, signal: AbortSignal): void {
  const { config, logger } = runtime;
  const log = logger.child({ part: 'admin' });
  registerDeadLetterApi(server, { token: config.admin.token, pool: runtime.pool, sink: runtime.sink, reloadTransformers: (force) => reload.reload(force), logger: log, signal });
  registerConsole(server);
  if (!config.admin.token) log.info('no admin token: the dead-letter API and console are off (set FHIR_RTE_ADMIN_TOKEN to turn them on)');
  else if (!config.http.tls && !isLoopback(config.http.host)) log.warn({ host: config.http.host }, 'the admin token travels unencrypted: set http.tls, or keep http.host on loopback behind a TLS proxy');
}
