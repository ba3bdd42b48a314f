import { pino, type DestinationStream, type Logger } from 'pino';
import { PinoPretty } from 'pino-pretty';

/**
 * Where credentials may appear in a log line's fields; pino replaces them wherever a line carries them.
 * Code never logs them on purpose; this is the net under that rule (a header object, a config section).
 */
export const REDACTED_PATHS = [
  'password', '*.password', '*.*.password',
  'secret', '*.secret', '*.*.secret',
  'token', '*.token', '*.*.token', 'adminToken', '*.adminToken', '*.*.adminToken',
  'accessToken', '*.accessToken', 'access_token', '*.access_token',
  'privateKey', '*.privateKey', '*.*.privateKey',
  'sasl', '*.sasl',
  'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization',
  'headers["x-signature"]', '*.headers["x-signature"]', 'headers.cookie', '*.headers.cookie',
];

/**
 * Logs go to stderr, so stdout carries only a command's output (NDJSON, --json summaries): JSON lines by
 * default, for the journal or a log shipper; readable lines (pino-pretty) when stderr is a terminal.
 * FHIR_RTE_LOG_FORMAT=json|pretty chooses explicitly.
 */
export function createLogger(level: string): Logger {
  const options = { level, redact: { paths: REDACTED_PATHS, censor: '****' }, base: undefined };
  return pino(options, destination());
}

function destination(): DestinationStream {
  const format = process.env.FHIR_RTE_LOG_FORMAT ?? (process.stderr.isTTY ? 'pretty' : 'json');
  if (format !== 'pretty') return pino.destination(2);
  // Synchronous, in this thread: a worker-thread transport could lose the last lines of a process that exits.
  return PinoPretty({ destination: 2, sync: true, colorize: process.stderr.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
}
