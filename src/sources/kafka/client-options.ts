import { readFileSync } from 'node:fs';
import type { KafkaConfig as KafkaJsConfig, SASLOptions } from 'kafkajs';
import type { KafkaConfig } from '../../config/config.js';
import { kafkaLogCreator, type Log } from './log.js';

/**
 * kafkajs client options from fhir-rte's `kafka` configuration: brokers, client id, TLS (CA, client
 * certificate and key read from PEM files) and SASL (plain, scram-sha-256, scram-sha-512).
 */
export function clientOptions(config: KafkaConfig, log: Log): KafkaJsConfig {
  return {
    clientId: config.clientId,
    brokers: config.brokers,
    ssl: tlsOptions(config),
    sasl: config.sasl ? saslOptions(config.sasl) : undefined,
    logCreator: kafkaLogCreator(log),
    connectionTimeout: 3_000,
    requestTimeout: 30_000,
    // kafkajs's own retries cover short blips; a longer outage crashes the consumer, which kafkajs or, failing
    // that, KafkaSource's supervision restarts (see kafka-source.ts), so these stay short and bounded.
    retry: { initialRetryTime: 300, maxRetryTime: 10_000, retries: 8 },
  };
}

function tlsOptions(config: KafkaConfig): KafkaJsConfig['ssl'] {
  const ssl = config.ssl;
  if (!ssl) return undefined;
  return {
    rejectUnauthorized: ssl.rejectUnauthorized ?? true,
    ca: ssl.ca ? [pem(ssl.ca, 'kafka.ssl.ca')] : undefined,
    cert: ssl.cert ? pem(ssl.cert, 'kafka.ssl.cert') : undefined,
    key: ssl.key ? pem(ssl.key, 'kafka.ssl.key') : undefined,
  };
}

function saslOptions(sasl: NonNullable<KafkaConfig['sasl']>): SASLOptions {
  switch (sasl.mechanism) {
    case 'plain':
      return { mechanism: 'plain', username: sasl.username, password: sasl.password };
    case 'scram-sha-256':
      return { mechanism: 'scram-sha-256', username: sasl.username, password: sasl.password };
    case 'scram-sha-512':
      return { mechanism: 'scram-sha-512', username: sasl.username, password: sasl.password };
  }
}

function pem(path: string, setting: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    // Names the setting and the path, never the file's content.
    throw new Error(`${setting}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** What a log line may say about the connection: no password, no key material. */
export function describeConnection(config: KafkaConfig): Record<string, unknown> {
  return {
    brokers: config.brokers,
    clientId: config.clientId,
    groupId: config.groupId,
    topics: config.topics,
    topicPattern: config.topicPattern,
    tls: config.ssl ? { ca: Boolean(config.ssl.ca), clientCertificate: Boolean(config.ssl.cert) } : false,
    sasl: config.sasl ? { mechanism: config.sasl.mechanism, username: config.sasl.username } : false,
  };
}
