import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { clientOptions, describeConnection } from '../src/sources/kafka/client-options.js';
import { silentLog } from '../src/sources/kafka/log.js';

/** The `kafka` section and its environment: brokers, SASL secrets from the environment, TLS files, and what may be logged. */
function configFile(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'fhir-rte-kcfg-')), 'fhir-rte.yaml');
  writeFileSync(file, text);
  return file;
}

describe('Kafka configuration', () => {
  it('takes brokers from KAFKA_BROKERS over the file, and defaults the rest', () => {
    const file = configFile('kafka:\n  brokers: [file-broker:9092]\n  groupId: exporters\n');
    const kafka = loadConfig(file, {}, { KAFKA_BROKERS: 'a:9092, b:9093' }).kafka!;
    expect(kafka).toMatchObject({ brokers: ['a:9092', 'b:9093'], groupId: 'exporters', clientId: 'fhir-rte', topics: ['fhir-changes'], fromBeginning: true });
    expect(loadConfig(configFile('{}\n'), {}, { KAFKA_BROKERS: 'k:9092' }).kafka).toMatchObject({ brokers: ['k:9092'], groupId: 'fhir-rte' });
  });

  it('completes or overrides SASL from KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD', () => {
    const file = configFile('kafka:\n  brokers: [k:9092]\n  sasl: { mechanism: scram-sha-512, username: exporter }\n');
    expect(loadConfig(file, {}, { KAFKA_SASL_PASSWORD: 'from-env' }).kafka!.sasl).toEqual({ mechanism: 'scram-sha-512', username: 'exporter', password: 'from-env' });
    expect(loadConfig(configFile('{}\n'), {}, { KAFKA_BROKERS: 'k:9092', KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'p' }).kafka!.sasl).toEqual({
      mechanism: 'plain',
      username: 'u',
      password: 'p',
    });
    expect(() => loadConfig(file, {}, {})).toThrow(/\/kafka\/sasl\/password: expected a password \(or KAFKA_SASL_PASSWORD\)/);
    expect(() => loadConfig(configFile('{}\n'), {}, { KAFKA_BROKERS: 'k:9092', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'p' })).toThrow(/\/kafka\/sasl\/mechanism/);
  });

  it('rejects topics and topicPattern together, a bad pattern, and an unknown SASL mechanism', () => {
    expect(() => loadConfig(configFile('kafka:\n  topics: [a]\n  topicPattern: "^b"\n'), {}, {})).toThrow(/not both/);
    expect(() => loadConfig(configFile('kafka:\n  topicPattern: "(("\n'), {}, {})).toThrow(/\/kafka\/topicPattern/);
    expect(() => loadConfig(configFile('kafka:\n  sasl: { mechanism: gssapi, username: u, password: p }\n'), {}, {})).toThrow(/mechanism/);
  });

  it('reads TLS material from PEM files, and names a missing one without its content', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-pem-'));
    writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const kafka = loadConfig(configFile(`kafka:\n  brokers: [k:9093]\n  ssl: { ca: ${join(dir, 'ca.pem')} }\n`), {}, {}).kafka!;
    const options = clientOptions(kafka, silentLog);
    expect(options.ssl).toMatchObject({ rejectUnauthorized: true, ca: ['-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'] });
    const missing = loadConfig(configFile(`kafka:\n  brokers: [k:9093]\n  ssl: { key: ${join(dir, 'nope.key')} }\n`), {}, {}).kafka!;
    expect(() => clientOptions(missing, silentLog)).toThrow(/kafka\.ssl\.key: cannot read .*nope\.key: ENOENT/);
  });

  it('describes the connection for the log without secrets', () => {
    const kafka = loadConfig(configFile('{}\n'), {}, { KAFKA_BROKERS: 'k:9092', KAFKA_SASL_MECHANISM: 'scram-sha-256', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'hunter2-secret' }).kafka!;
    const described = JSON.stringify(describeConnection(kafka));
    expect(described).toContain('scram-sha-256');
    expect(described).not.toContain('hunter2-secret');
  });
});
