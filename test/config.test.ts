import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { quoteIdent } from '../src/config/identifier.js';
import { loadTransformers } from '../src/transform/load-transformers.js';
import { transformerDir } from './support/sink.js';

function configFile(name: string, text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'fhir-rte-cfg-')), name);
  writeFileSync(file, text);
  return file;
}

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
}

describe('configuration file', () => {
  it('names the file, the path and what was expected for unknown keys and wrong types', () => {
    const file = configFile('fhir-rte.yaml', 'database:\n  poolSize: many\n  urll: x\ndeleteMode: soft\n');
    const message = errorOf(() => loadConfig(file, {}, {}));
    expect(message).toContain(`${file}: /database/poolSize: expected integer`);
    expect(message).toContain(`${file}: /database: unknown key "urll"`);
    expect(message).toContain(`${file}: /deleteMode: expected one of "logical", "hard"`);
  });

  it('names a missing file and a file that is not valid YAML', () => {
    expect(errorOf(() => loadConfig('/nonexistent/fhir-rte.yaml', {}, {}))).toBe('/nonexistent/fhir-rte.yaml: /: file not found');
    const bad = configFile('fhir-rte.yaml', 'database: [unclosed\n');
    expect(errorOf(() => loadConfig(bad, {}, {}))).toMatch(new RegExp(`^${bad}: /: not valid YAML`));
  });

  it('lets DATABASE_URL and KAFKA_BROKERS override the file', () => {
    const file = configFile('fhir-rte.json', JSON.stringify({ database: { url: 'postgres://file/db' }, kafka: { brokers: ['file:9092'] } }));
    const config = loadConfig(file, {}, { DATABASE_URL: 'postgres://env/db', KAFKA_BROKERS: 'a:1, b:2' });
    expect(config.database.url).toBe('postgres://env/db');
    expect(config.kafka?.brokers).toEqual(['a:1', 'b:2']);
  });
});

describe('transformer files', () => {
  const rules = (body: string) => transformerDir({ 'rules.yaml': body });

  it('reports schema errors with file and JSON path', () => {
    const dir = rules(`transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: g, fhirPath: Patient.gender, columnType: TEXT }\n`);
    const message = errorOf(() => loadTransformers(dir));
    expect(message).toContain('rules.yaml: /transformers/0/columns/0/columnType: expected one of "STRING", "INT"');
  });

  it('reports a bad FHIRPath at load, naming file, path and transformer', () => {
    const dir = rules(`transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: g, fhirPath: "Patient.name.where(", columnType: STRING }\n`);
    const message = errorOf(() => loadTransformers(dir));
    expect(message).toMatch(/rules\.yaml: \/transformers\/0\/columns\/0\/fhirPath: invalid FHIRPath "Patient\.name\.where\(".*transformer .*#patient/);
  });

  it('refuses table and column names that attempt SQL injection', () => {
    const table = rules(`transformers:\n  - resourceType: Patient\n    tableName: 'patient"; DROP TABLE x; --'\n    columns: []\n`);
    expect(errorOf(() => loadTransformers(table))).toContain('/transformers/0/tableName: expected a value matching');
    const column = rules(`transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: "a) VALUES (1); --", fhirPath: Patient.id, columnType: STRING }\n`);
    expect(errorOf(() => loadTransformers(column))).toContain('/transformers/0/columns/0/columnName: expected a value matching');
    const schema = configFile('fhir-rte.yaml', 'database:\n  schema: "public; DROP SCHEMA public"\n');
    expect(errorOf(() => loadConfig(schema, {}, {}))).toContain('/database/schema: expected a value matching');
    expect(() => quoteIdent('x" OR 1=1')).toThrow(/refusing to quote/);
  });

  it('refuses a user column that takes a system column name, and tables written twice', () => {
    const sys = rules(`transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: version, fhirPath: Patient.id, columnType: STRING }\n`);
    expect(errorOf(() => loadTransformers(sys))).toContain('/transformers/0/columns/0/columnName: "version" is a system column');
    // With history, the history table's own columns are taken too.
    const historyColumn = (history: boolean) =>
      rules(`retainAllHistory: ${history}\ntransformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: recorded_at, fhirPath: Patient.id, columnType: STRING }\n`);
    expect(errorOf(() => loadTransformers(historyColumn(true)))).toContain('/transformers/0/columns/0/columnName: "recorded_at" is a system column');
    expect(loadTransformers(historyColumn(false))[0]!.tables[0]!.columns.map((c) => c.name)).toEqual(['recorded_at']);
    const twice = transformerDir({
      'a.yaml': `transformers:\n  - { resourceType: Patient, tableName: person, columns: [] }\n`,
      'b.yaml': `transformers:\n  - { resourceType: Practitioner, tableName: PERSON, columns: [] }\n`,
    });
    expect(errorOf(() => loadTransformers(twice))).toMatch(/b\.yaml: \/: table "person" is also written by/);
  });

  it('names an unknown childTransformerName', () => {
    const dir = rules(`transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns: []\n    childTables:\n      - { fhirPath: Patient.address, childTransformerName: addr }\n`);
    expect(errorOf(() => loadTransformers(dir))).toContain('/transformers/0/childTables/0/childTransformerName: no namedTransformers entry is named "addr"');
  });
});

describe('http and resthook', () => {
  it('runs the receiver on 127.0.0.1:8090 at /resthook when no source is configured, and not beside Kafka unless asked', () => {
    const config = loadConfig(configFile('fhir-rte.yaml', 'log: { level: info }\n'), {}, {});
    expect(config.http).toEqual({ host: '127.0.0.1', port: 8090 });
    expect(config.resthook).toMatchObject({ path: '/resthook', ackTimeoutMs: 10_000, maxBodyBytes: 16 * 1024 * 1024, groupsInFlight: 4 });
    expect(config.resthook?.secret).toBeUndefined();
    expect(loadConfig(undefined, {}, { KAFKA_BROKERS: 'k:9092' }).resthook).toBeUndefined();
    expect(loadConfig(undefined, {}, { KAFKA_BROKERS: 'k:9092', FHIR_RTE_RESTHOOK_SECRET: 's' }).resthook?.secret).toBe('s');
  });

  it('takes the port from FHIR_RTE_HTTP_PORT, TLS files relative to the file, and refuses a bad port', () => {
    const file = configFile('fhir-rte.yaml', 'http: { host: 0.0.0.0, port: 9000, tls: { cert: c.pem, key: k.pem } }\nresthook: { path: /hook/, secret: x }\n');
    const config = loadConfig(file, {}, { FHIR_RTE_HTTP_PORT: '9100' });
    expect(config.http).toEqual({ host: '0.0.0.0', port: 9100, tls: { cert: join(file, '..', 'c.pem'), key: join(file, '..', 'k.pem') } });
    expect(config.resthook).toMatchObject({ path: '/hook', secret: 'x' });
    expect(errorOf(() => loadConfig(file, {}, { FHIR_RTE_HTTP_PORT: 'eighty' }))).toContain('/http/port: FHIR_RTE_HTTP_PORT: expected a port number');
  });

  it('relays to Kafka only with a kafka section: to relayTopic, else the first of kafka.topics', () => {
    const load = (text: string, env: NodeJS.ProcessEnv = {}) => loadConfig(configFile('fhir-rte.yaml', text), {}, env);
    expect(load('resthook: { secret: x }\n').resthook?.relayTo).toBe('postgres');
    expect(load('resthook: { relayTo: kafka }\nkafka: { topics: [fhir-in, other] }\n').resthook).toMatchObject({ relayTo: 'kafka', relayTopic: 'fhir-in' });
    expect(load('resthook: { relayTo: kafka, relayTopic: hooks }\nkafka: { topics: [fhir-in, hooks] }\n').resthook).toMatchObject({ relayTo: 'kafka', relayTopic: 'hooks' });
    expect(load('resthook: { relayTo: kafka, relayTopic: fhir.hooks }\nkafka: { topicPattern: "^fhir\\\\..*" }\n').resthook).toMatchObject({ relayTopic: 'fhir.hooks' });
    expect(errorOf(() => load('resthook: { relayTo: kafka }\n'))).toContain('/resthook/relayTo: relayTo kafka needs a kafka section (or KAFKA_BROKERS)');
    expect(errorOf(() => load('resthook: { relayTo: kafka }\nkafka: { topicPattern: "fhir-.*" }\n'))).toContain('/resthook/relayTopic: expected the topic to relay to');
    expect(errorOf(() => load('resthook: { relayTopic: hooks }\n'))).toContain('/resthook/relayTopic: expected relayTo: kafka beside it');
    // A topic the appliers do not consume: every acknowledged delivery would wait there unread.
    expect(errorOf(() => load('resthook: { relayTo: kafka, relayTopic: hooks }\n', { KAFKA_BROKERS: 'k:9092' }))).toContain(
      '/resthook/relayTopic: expected a topic the appliers consume: "hooks" is not among kafka.topics (fhir-changes)',
    );
    expect(errorOf(() => load('resthook: { relayTo: kafka, relayTopic: hooks }\nkafka: { topicPattern: "^fhir\\\\..*" }\n'))).toContain(
      '/resthook/relayTopic: expected a topic the appliers consume: "hooks" is not among kafka.topicPattern',
    );
    expect(errorOf(() => load('resthook: { relayTo: s3 }\n'))).toContain('/resthook/relayTo');
  });

  it('limits a relayed delivery to what a broker takes by default (1 MiB less 8 KiB), unless maxBodyBytes is set', () => {
    const load = (text: string) => loadConfig(configFile('fhir-rte.yaml', text), {}, {});
    expect(load('resthook: { secret: x }\n').resthook?.maxBodyBytes).toBe(16 * 1024 * 1024);
    expect(load('resthook: { relayTo: kafka }\nkafka: { topics: [fhir-in] }\n').resthook?.maxBodyBytes).toBe(1024 * 1024 - 8 * 1024);
    expect(load('resthook: { relayTo: kafka, maxBodyBytes: 4000000 }\nkafka: { topics: [fhir-in] }\n').resthook?.maxBodyBytes).toBe(4000000);
  });

  it('http.enabled false runs no receiver, and refuses one configured beside it', () => {
    const kafkaOnly = loadConfig(configFile('fhir-rte.yaml', 'http: { enabled: false }\nkafka: { brokers: [k:9092] }\n'), {}, {});
    expect(kafkaOnly.http.enabled).toBe(false);
    expect(kafkaOnly.resthook).toBeUndefined();
    expect(loadConfig(configFile('fhir-rte.yaml', 'http: { enabled: false }\n'), {}, {}).resthook).toBeUndefined();
    expect(errorOf(() => loadConfig(configFile('fhir-rte.yaml', 'http: { enabled: false }\nresthook: { path: /r }\n'), {}, {}))).toContain('/http/enabled: the REST-hook receiver needs the HTTP server');
  });

  it('takes the host from FHIR_RTE_HTTP_HOST (a container listens on 0.0.0.0)', () => {
    expect(loadConfig(undefined, {}, { FHIR_RTE_HTTP_HOST: '0.0.0.0', FHIR_RTE_RESTHOOK_SECRET: 's' }).http.host).toBe('0.0.0.0');
    expect(loadConfig(undefined, {}, {}).http.host).toBe('127.0.0.1');
  });
});

describe('operations', () => {
  it('reads health bounds, the troubleshooting selection and the admin token', () => {
    const config = loadConfig(configFile('fhir-rte.yaml', 'health: { maxStallMs: 5000, maxWatermarkAgeMs: 60000 }\ntroubleshoot: { types: [Patient], ids: [Observation/o-1] }\n'), {}, { FHIR_RTE_ADMIN_TOKEN: 't0ken-of-16-chars' });
    expect(config.health).toEqual({ maxStallMs: 5000, maxWatermarkAgeMs: 60000 });
    expect(config.troubleshoot).toEqual({ types: ['Patient'], ids: ['Observation/o-1'] });
    expect(config.admin.token).toBe('t0ken-of-16-chars');
    const defaults = loadConfig(configFile('fhir-rte.yaml', 'log: { level: info }\n'), {}, {});
    expect(defaults.health).toEqual({ maxStallMs: 30_000 });
    expect(defaults.troubleshoot).toEqual({ types: [], ids: [] });
    expect(defaults.admin.token).toBeUndefined();
    expect(errorOf(() => loadConfig(configFile('fhir-rte.yaml', 'troubleshoot: { ids: [o-1] }\n'), {}, {}))).toContain('/troubleshoot/ids/0');
  });
});
