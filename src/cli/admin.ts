import type { FastifyInstance } from 'fastify';
import { registerConsole } from '../http/console-page.js';
import { registerDeadLetterApi } from '../http/dead-letter-api.js';
import { isLoopback } from '../http/server.js';
import { TransformerReload } from './reload-transformers.js';
import type { Runtime } from './runtime.js';

/**
 * The operator's side of `fhir-rte start`: the dead-letter API (/api/), the console (/console/) and
 * transformer reloads (from the API, from the console's retry, and on SIGHUP). Returns what undoes it.
 */
export function serveAdmin(server: FastifyInstance, runtime: Runtime, signal: AbortSignal): () => void {
  const { config, logger } = runtime;
  const log = logger.child({ part: 'admin' });
  const reload = new TransformerReload(runtime);
  registerDeadLetterApi(server, { token: config.admin.token, pool: runtime.pool, sink: runtime.sink, reloadTransformers: (force) => reload.reload(force), logger: log, signal });
  registerConsole(server);
  if (!config.admin.token) log.info('no admin token: the dead-letter API and console are off (set FHIR_RTE_ADMIN_TOKEN to turn them on)');
  else if (!config.http.tls && !isLoopback(config.http.host)) log.warn({ host: config.http.host }, 'the admin token travels unencrypted: set http.tls, or keep http.host on loopback behind a TLS proxy');
  // SIGHUP: the usual "read your configuration again", here the transformers.
  const onHangup = () => void reload.reload(true).catch((err: Error) => log.error({ error: err.message }, 'transformers not reloaded; the ones in use stay'));
  process.on('SIGHUP', onHangup);
  return () => process.off('SIGHUP', onHangup);
}
