import { pino, type Logger } from 'pino';

/**
 * Logs go to stderr, so stdout carries only a command's output (NDJSON, --json summaries). Credentials
 * are redacted by key wherever they appear.
 */
export function createLogger(level: string): Logger {
  return pino(
    {
      level,
      redact: { paths: ['password', '*.password', '*.*.password', 'sasl', '*.sasl', 'authorization', '*.authorization', 'secret', '*.secret', '*.*.secret', 'headers.authorization', 'headers["x-signature"]'], censor: '****' },
      base: undefined,
    },
    pino.destination(2),
  );
}
