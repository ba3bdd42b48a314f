import { logLevel, type logCreator } from 'kafkajs';

/** The few logger methods the Kafka source uses; a pino logger fits. */
export interface Log {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLog: Log = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * Keys whose values never reach a log line. kafkajs does not log its SASL or SSL options today, but a log
 * line that carries a config object one day must not leak a password or a private key.
 */
const SECRET_KEY = /pass(word)?|secret|token|sasl|ssl|^key$|private|authorization|credential/i;

export function redact(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object' || depth > 4) return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? '[redacted]' : redact(v, depth + 1);
  return out;
}

/** Routes kafkajs's own log lines into ours, redacted, at the matching level. */
export function kafkaLogCreator(log: Log): logCreator {
  return () => ({ namespace, level, log: entry }) => {
    const { message, timestamp: _ts, logger: _logger, ...rest } = entry as { message: string; timestamp?: string; logger?: string } & Record<string, unknown>;
    const fields = { component: 'kafkajs', namespace, ...(redact(rest) as object) };
    const text = `kafkajs: ${message}`;
    if (level === logLevel.ERROR) log.error(fields, text);
    else if (level === logLevel.WARN) log.warn(fields, text);
    else if (level === logLevel.INFO) log.info(fields, text);
    else log.debug(fields, text);
  };
}
