import { Ajv } from 'ajv';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, fromAjvErrors } from './config-error.js';
import { readStructuredFile } from './read-file.js';
import { configSchema } from './schema.js';
import type { AuthConfig } from '../fhir-client/auth.js';
import type { SmartAlg, SmartAuthConfig } from '../fhir-client/smart.js';
import type { FhirTlsConfig } from '../fhir-client/tls.js';
import { DEFAULT_LIMITS } from '../fhir-client/limit.js';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TroubleshootSelection } from '../sink/troubleshoot.js';

export interface KafkaConfig {
  brokers: string[];
  clientId: string;
  groupId: string;
  topics?: string[];
  topicPattern?: string;
  fromBeginning: boolean;
  partitionsConsumedConcurrently: number;
  /** Consumer-group session timeout: how soon a crashed member's partitions move to the others. */
  sessionTimeoutMs: number;
  ssl?: { ca?: string; cert?: string; key?: string; rejectUnauthorized?: boolean };
  sasl?: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512'; username: string; password: string };
}

export interface HttpConfig {
  /** False: `start` opens no HTTP server (only a Kafka source may then run); absent means true. */
  enabled?: boolean;
  host: string;
  port: number;
  tls?: { cert: string; key: string };
}

export interface HealthConfig {
  maxStallMs: number;
  maxWatermarkAgeMs?: number;
}

export interface ResthookConfig {
  path: string;
  secret?: string;
  ackTimeoutMs: number;
  maxBodyBytes: number;
  groupWindowMs: number;
  maxEvents: number;
  /** Group commits applying at once; while all are busy the next group keeps gathering. */
  groupsInFlight: number;
  retryAfterSeconds: number;
  /** Where deliveries are made durable: the database (default), or Kafka, for the consumer group to apply. */
  relayTo?: 'postgres' | 'kafka';
  /** With relayTo kafka: the topic produced to (default: the first of kafka.topics). */
  relayTopic?: string;
}

export interface Config {
  /** The file it was read from, when there was one. */
  file?: string;
  database: { url?: string; schema: string; poolSize: number; statementTimeoutMs: number; idleInTransactionTimeoutMs: number };
  embedded: { dataDir: string; port: number };
  transformersDir: string;
  deleteMode: 'logical' | 'hard';
  storeResources: boolean;
  createTables: boolean;
  batch: { maxEvents: number };
  retry: { initialMs: number; maxMs: number };
  log: { level: string };
  kafka?: KafkaConfig;
  http: HttpConfig;
  /** Set when configured (a `resthook` section or FHIR_RTE_RESTHOOK_SECRET), and when no other source is. */
  resthook?: ResthookConfig;
  fhirServer?: FhirServerConfig;
  /** The dead-letter API, /api/troubleshoot and the console; off (no token) unless FHIR_RTE_ADMIN_TOKEN or admin.token is set. */
  admin: { token?: string };
  health: HealthConfig;
  troubleshoot: TroubleshootSelection;
}

export interface FhirServerConfig {
  baseUrl: string;
  auth: AuthConfig;
  timeoutMs: number;
  maxAttempts: number;
  retryAfterMaxMs: number;
  /** Requests in flight at once, whoever makes them (FhirClient's one limit). */
  maxConcurrency: number;
  /** Requests started a second, on average. */
  maxRequestsPerSecond: number;
  /** Trust and client certificate for an https server (paths, resolved against the config file). */
  tls?: FhirTlsConfig;
  /** Types whose `_history` gap repair reads; empty: the system-level `_history`. */
  historyTypes: string[];
  pageSize: number;
  repairEveryMs: number;
  repairMarginMs: number;
  firstRepair: 'full' | 'now';
}

export const DEFAULT_CONFIG_FILES = ['fhir-rte.yaml', 'fhir-rte.yml', 'fhir-rte.json'];

export interface ConfigOverrides {
  transformers?: string;
}

const validate = new Ajv({ allErrors: true, strict: true }).compile(configSchema);

/**
 * Reads the configuration: the named file, else the first of DEFAULT_CONFIG_FILES in the working
 * directory, else defaults alone. Environment variables (DATABASE_URL, KAFKA_BROKERS, FHIR_RTE_LOG_LEVEL)
 * override the file; command-line flags override both.
 */
export function loadConfig(file?: string, overrides: ConfigOverrides = {}, env = process.env): Config {
  const path = file ?? DEFAULT_CONFIG_FILES.find((f) => existsSync(f));
  const raw = path ? readStructuredFile(path) : {};
  const where = path ?? '(defaults)';
  if (raw === null || raw === undefined) return fromRaw({}, where, overrides, env, path);
  if (!validate(raw)) throw fromAjvErrors(where, validate.errors ?? []);
  return fromRaw(raw as RawConfig, where, overrides, env, path);
}

type RawConfig = {
  database?: { url?: string; schema?: string; poolSize?: number; statementTimeoutMs?: number; idleInTransactionTimeoutMs?: number };
  embedded?: { dataDir?: string; port?: number };
  transformers?: string;
  deleteMode?: 'logical' | 'hard';
  storeResources?: boolean;
  createTables?: boolean;
  batch?: { maxEvents?: number };
  retry?: { initialMs?: number; maxMs?: number };
  log?: { level?: string };
  kafka?: Partial<KafkaConfig>;
  http?: Partial<HttpConfig>;
  health?: Partial<HealthConfig>;
  troubleshoot?: Partial<TroubleshootSelection>;
  resthook?: Partial<ResthookConfig>;
  admin?: { token?: string };
  fhirServer?: Partial<Omit<FhirServerConfig, 'auth'>> & { auth?: { type?: AuthConfig['type']; username?: string; password?: string; token?: string; tokenUrl?: string; clientId?: string; privateKey?: string; alg?: SmartAlg; kid?: string; scope?: string } };
};

function fromRaw(raw: RawConfig, where: string, overrides: ConfigOverrides, env: NodeJS.ProcessEnv, path?: string): Config {
  const base = path ? dirname(resolve(path)) : process.cwd();
  const at = (p: string) => resolve(base, p);
  const config: Config = {
    file: path,
    database: {
      url: env.DATABASE_URL || raw.database?.url,
      schema: (raw.database?.schema ?? 'public').toLowerCase(),
      poolSize: raw.database?.poolSize ?? 4,
      // Backstops far beyond any healthy statement or pause of fhir-rte's (see pool.ts).
      statementTimeoutMs: raw.database?.statementTimeoutMs ?? 60_000,
      idleInTransactionTimeoutMs: raw.database?.idleInTransactionTimeoutMs ?? 60_000,
    },
    embedded: { dataDir: at(raw.embedded?.dataDir ?? '.fhir-rte'), port: raw.embedded?.port ?? 54329 },
    transformersDir: overrides.transformers ? resolve(overrides.transformers) : at(env.FHIR_RTE_TRANSFORMERS || raw.transformers || 'transformers'),
    deleteMode: raw.deleteMode ?? 'logical',
    storeResources: raw.storeResources ?? true,
    createTables: raw.createTables ?? true,
    batch: { maxEvents: raw.batch?.maxEvents ?? 1000 },
    retry: { initialMs: raw.retry?.initialMs ?? 200, maxMs: raw.retry?.maxMs ?? 30_000 },
    log: { level: env.FHIR_RTE_LOG_LEVEL || raw.log?.level || 'info' },
    kafka: kafkaConfig(raw.kafka, env, where),
    http: httpConfig(raw.http, env, at, where),
    fhirServer: fhirServerConfig(raw.fhirServer, env, where, at),
    admin: adminConfig(raw.admin, env, where),
    health: { maxStallMs: raw.health?.maxStallMs ?? 30_000, ...(raw.health?.maxWatermarkAgeMs === undefined ? {} : { maxWatermarkAgeMs: raw.health.maxWatermarkAgeMs }) },
    troubleshoot: { types: raw.troubleshoot?.types ?? [], ids: raw.troubleshoot?.ids ?? [] },
  };
  config.resthook = resthookConfig(raw.resthook, env, !config.kafka && config.http.enabled !== false, config.kafka, where, config.database.poolSize);
  if (config.resthook && config.http.enabled === false) throw new ConfigError(where, '/http/enabled', 'the REST-hook receiver needs the HTTP server: remove resthook, or set http.enabled to true');
  if (config.retry.maxMs < config.retry.initialMs) throw new ConfigError(where, '/retry/maxMs', 'expected a value not below retry.initialMs');
  return config;
}

function kafkaConfig(raw: Partial<KafkaConfig> | undefined, env: NodeJS.ProcessEnv, where: string): KafkaConfig | undefined {
  const envBrokers = env.KAFKA_BROKERS?.split(',').map((b) => b.trim()).filter(Boolean);
  if (!raw && !envBrokers?.length) return undefined;
  if (raw?.topics && raw.topicPattern) throw new ConfigError(where, '/kafka', 'expected either "topics" or "topicPattern", not both');
  if (raw?.topicPattern) checkRegExp(raw.topicPattern, where);
  return {
    brokers: envBrokers?.length ? envBrokers : (raw?.brokers ?? ['127.0.0.1:9092']),
    clientId: raw?.clientId ?? 'fhir-rte',
    groupId: raw?.groupId ?? 'fhir-rte',
    topics: raw?.topics ?? (raw?.topicPattern ? undefined : ['fhir-changes']),
    topicPattern: raw?.topicPattern,
    fromBeginning: raw?.fromBeginning ?? true,
    partitionsConsumedConcurrently: raw?.partitionsConsumedConcurrently ?? 2,
    sessionTimeoutMs: raw?.sessionTimeoutMs ?? 30_000,
    ssl: raw?.ssl,
    sasl: saslConfig(raw?.sasl, env, where),
  };
}

const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;

/** SASL from the file, completed or overridden by KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD: secrets belong in the environment. */
function saslConfig(raw: Partial<NonNullable<KafkaConfig['sasl']>> | undefined, env: NodeJS.ProcessEnv, where: string): KafkaConfig['sasl'] {
  const mechanism = env.KAFKA_SASL_MECHANISM || raw?.mechanism;
  const username = env.KAFKA_SASL_USERNAME || raw?.username;
  const password = env.KAFKA_SASL_PASSWORD || raw?.password;
  if (!mechanism && !username && !password) return undefined;
  if (!SASL_MECHANISMS.includes(mechanism as (typeof SASL_MECHANISMS)[number])) {
    throw new ConfigError(where, '/kafka/sasl/mechanism', `expected one of ${SASL_MECHANISMS.join(', ')} (or KAFKA_SASL_MECHANISM)`);
  }
  if (!username) throw new ConfigError(where, '/kafka/sasl/username', 'expected a username (or KAFKA_SASL_USERNAME)');
  if (!password) throw new ConfigError(where, '/kafka/sasl/password', 'expected a password (or KAFKA_SASL_PASSWORD)');
  return { mechanism: mechanism as (typeof SASL_MECHANISMS)[number], username, password };
}

function checkRegExp(pattern: string, where: string): void {
  try {
    new RegExp(pattern);
  } catch (err) {
    throw new ConfigError(where, '/kafka/topicPattern', `expected a regular expression: ${(err as Error).message}`);
  }
}

function httpConfig(raw: Partial<HttpConfig> | undefined, env: NodeJS.ProcessEnv, at: (p: string) => string, where: string): HttpConfig {
  const envPort = env.FHIR_RTE_HTTP_PORT;
  if (envPort !== undefined && !/^\d{1,5}$/.test(envPort)) throw new ConfigError(where, '/http/port', 'FHIR_RTE_HTTP_PORT: expected a port number');
  const tls = raw?.tls && { cert: at(raw.tls.cert), key: at(raw.tls.key) };
  // FHIR_RTE_HTTP_HOST: in a container the receiver must listen on 0.0.0.0 for its peers to reach it.
  const envHost = env.FHIR_RTE_HTTP_HOST?.trim();
  return {
    ...(raw?.enabled === false ? { enabled: false } : {}),
    host: envHost || raw?.host || '127.0.0.1',
    port: envPort ? Number(envPort) : (raw?.port ?? 8090),
    ...(tls ? { tls } : {}),
  };
}

/** A guessable admin token would open every dead letter's payload (patient data) to whoever guesses it. */
const ADMIN_TOKEN_MIN = 16;

function adminConfig(raw: RawConfig['admin'], env: NodeJS.ProcessEnv, where: string): Config['admin'] {
  const token = env.FHIR_RTE_ADMIN_TOKEN || raw?.token;
  if (token !== undefined && token.length < ADMIN_TOKEN_MIN) {
    throw new ConfigError(where, '/admin/token', `expected an admin token of at least ${ADMIN_TOKEN_MIN} characters (FHIR_RTE_ADMIN_TOKEN or admin.token), e.g. from: openssl rand -hex 32`);
  }
  return token === undefined ? {} : { token };
}

/**
 * The default body limit when relaying: a broker takes records up to 1 MiB by default (`message.max.bytes`,
 * a topic's `max.message.bytes`); 8 KiB less leaves room for the record's Bundle envelope, key and headers,
 * so an oversized delivery is refused 413 up front rather than dead-lettered after Kafka refuses it.
 */
const RELAY_MAX_BODY_BYTES = 1024 * 1024 - 8 * 1024;

/** The receiver's settings when it is configured, or when no other source is (then it is the one that runs). */
function resthookConfig(raw: Partial<ResthookConfig> | undefined, env: NodeJS.ProcessEnv, alone: boolean, kafka: KafkaConfig | undefined, where: string, poolSize: number): ResthookConfig | undefined {
  const secret = env.FHIR_RTE_RESTHOOK_SECRET || raw?.secret;
  if (!raw && !secret && !alone) return undefined;
  return {
    ...relay(raw, kafka, where),
    path: (raw?.path ?? '/resthook').replace(/\/+$/, '') || '/resthook',
    secret,
    ackTimeoutMs: raw?.ackTimeoutMs ?? 10_000,
    maxBodyBytes: raw?.maxBodyBytes ?? (raw?.relayTo === 'kafka' ? RELAY_MAX_BODY_BYTES : 16 * 1024 * 1024),
    groupWindowMs: raw?.groupWindowMs ?? 3,
    // A group of 16 already shares its commit well; closing it at once (not after the window) lets the next
    // gather while it commits, so Node and Postgres work side by side (bench resthook, 32 senders, quiet
    // machine: 2,844 deliveries/s with groups of 32 behind a 3 ms window, 4,270/s closing at 16).
    maxEvents: raw?.maxEvents ?? 16,
    // Every connection may carry a group; only when all are busy does the next group gather past its window.
    groupsInFlight: raw?.groupsInFlight ?? poolSize,
    retryAfterSeconds: raw?.retryAfterSeconds ?? 5,
  };
}
/** With `relayTo: kafka` the receiver produces to a topic of the `kafka` section's cluster (its brokers, TLS, SASL). */
function relay(raw: Partial<ResthookConfig> | undefined, kafka: KafkaConfig | undefined, where: string): Pick<ResthookConfig, 'relayTo' | 'relayTopic'> {
  if (raw?.relayTo !== 'kafka') {
    if (raw?.relayTopic) throw new ConfigError(where, '/resthook/relayTopic', 'expected relayTo: kafka beside it (deliveries go to the database otherwise)');
    return { relayTo: 'postgres' };
  }
  if (!kafka) throw new ConfigError(where, '/resthook/relayTo', 'relayTo kafka needs a kafka section (or KAFKA_BROKERS) naming the brokers');
  const relayTopic = raw.relayTopic ?? kafka.topics?.[0];
  if (!relayTopic) throw new ConfigError(where, '/resthook/relayTopic', 'expected the topic to relay to: kafka.topicPattern names no single topic');
  // The appliers (`start` with the Kafka source, the same kafka section) must consume what is relayed, or
  // every acknowledged delivery would wait on a topic nobody reads.
  const consumed = kafka.topics ? kafka.topics.includes(relayTopic) : new RegExp(kafka.topicPattern!).test(relayTopic);
  if (!consumed) {
    const what = kafka.topics ? `kafka.topics (${kafka.topics.join(', ')})` : `kafka.topicPattern ${JSON.stringify(kafka.topicPattern)}`;
    throw new ConfigError(where, '/resthook/relayTopic', `expected a topic the appliers consume: ${JSON.stringify(relayTopic)} is not among ${what}`);
  }
  return { relayTo: 'kafka', relayTopic };
}

/** The FHIR server fhir-rte reads (gap repair, delete resolution), when a base URL is configured. */
function fhirServerConfig(raw: RawConfig['fhirServer'], env: NodeJS.ProcessEnv, where: string, at: (p: string) => string): FhirServerConfig | undefined {
  const baseUrl = env.FHIR_RTE_FHIR_SERVER_URL || raw?.baseUrl;
  if (!baseUrl) return undefined;
  if (!/^https?:\/\//.test(baseUrl) || !URL.canParse(baseUrl)) throw new ConfigError(where, '/fhirServer/baseUrl', 'expected an http(s) URL');
  const url = new URL(baseUrl);
  if (url.username || url.password) throw new ConfigError(where, '/fhirServer/baseUrl', 'expected a URL without credentials; put them in fhirServer.auth or FHIR_RTE_FHIR_SERVER_PASSWORD');
  return {
    baseUrl: baseUrl.replace(/\/+$/, ''),
    auth: fhirAuth(raw?.auth, env, where, at),
    timeoutMs: raw?.timeoutMs ?? 30_000,
    maxAttempts: raw?.maxAttempts ?? 5,
    retryAfterMaxMs: raw?.retryAfterMaxMs ?? 60_000,
    maxConcurrency: raw?.maxConcurrency ?? DEFAULT_LIMITS.maxConcurrency,
    maxRequestsPerSecond: raw?.maxRequestsPerSecond ?? DEFAULT_LIMITS.maxRequestsPerSecond,
    ...(raw?.tls ? { tls: fhirTls(raw.tls, at, where) } : {}),
    historyTypes: raw?.historyTypes ?? [],
    pageSize: raw?.pageSize ?? 100,
    repairEveryMs: raw?.repairEveryMs ?? 300_000,
    repairMarginMs: raw?.repairMarginMs ?? 300_000,
    firstRepair: raw?.firstRepair ?? 'full',
  };
}

/** TLS files resolved against the config file's directory, as http.tls's are. */
function fhirTls(raw: FhirTlsConfig, at: (p: string) => string, where: string): FhirTlsConfig {
  if ((raw.cert === undefined) !== (raw.key === undefined)) throw new ConfigError(where, '/fhirServer/tls', 'expected both cert and key for a client certificate, or neither');
  const file = (p: string | undefined) => (p === undefined ? undefined : at(p));
  const [ca, cert, key] = [file(raw.ca), file(raw.cert), file(raw.key)];
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(raw.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: raw.rejectUnauthorized }) };
}

/** Auth from the file, its secrets completed or overridden by FHIR_RTE_FHIR_SERVER_USERNAME, _PASSWORD and _TOKEN. */
function fhirAuth(raw: NonNullable<RawConfig['fhirServer']>['auth'], env: NodeJS.ProcessEnv, where: string, at: (p: string) => string): AuthConfig {
  const username = env.FHIR_RTE_FHIR_SERVER_USERNAME || raw?.username;
  const password = env.FHIR_RTE_FHIR_SERVER_PASSWORD || raw?.password;
  const token = env.FHIR_RTE_FHIR_SERVER_TOKEN || raw?.token;
  const type = raw?.type ?? (token ? 'bearer' : username ? 'basic' : 'none');
  if (type === 'basic') {
    if (!username) throw new ConfigError(where, '/fhirServer/auth/username', 'expected a username (or FHIR_RTE_FHIR_SERVER_USERNAME)');
    if (!password) throw new ConfigError(where, '/fhirServer/auth/password', 'expected a password (or FHIR_RTE_FHIR_SERVER_PASSWORD)');
    return { type, username, password };
  }
  if (type === 'bearer') {
    if (!token) throw new ConfigError(where, '/fhirServer/auth/token', 'expected a token (or FHIR_RTE_FHIR_SERVER_TOKEN)');
    return { type, token };
  }
  if (type === 'smart') return smartAuth(raw, env, where, at);
  return { type: 'none' };
}

/**
 * SMART Backend Services: the private key is read and checked against `alg` now, not at the first request.
 * Its path is resolved as every other file the configuration names: against the config file's directory
 * (an environment variable's, against the working directory).
 */
function smartAuth(raw: NonNullable<RawConfig['fhirServer']>['auth'], env: NodeJS.ProcessEnv, where: string, at: (p: string) => string): SmartAuthConfig {
  const fromEnv = env.FHIR_RTE_FHIR_SERVER_PRIVATE_KEY;
  const keyFile = fromEnv ? resolve(fromEnv) : raw?.privateKey && at(raw.privateKey);
  if (!raw?.tokenUrl || !URL.canParse(raw.tokenUrl)) throw new ConfigError(where, '/fhirServer/auth/tokenUrl', 'expected the http(s) URL of the SMART token endpoint');
  if (!raw.clientId) throw new ConfigError(where, '/fhirServer/auth/clientId', 'expected the client id registered with the SMART server');
  if (!keyFile) throw new ConfigError(where, '/fhirServer/auth/privateKey', 'expected the path of a PKCS#8 PEM private key (or FHIR_RTE_FHIR_SERVER_PRIVATE_KEY)');
  const alg = raw.alg ?? 'RS384';
  const privateKey = smartKey(keyFile, alg, where);
  return { type: 'smart', tokenUrl: raw.tokenUrl, clientId: raw.clientId, privateKey, alg, ...(raw.kid === undefined ? {} : { kid: raw.kid }), scope: raw.scope ?? 'system/*.read' };
}

const KEY_OF_ALG: Record<SmartAlg, { type: string; curve?: string; wanted: string }> = {
  RS384: { type: 'rsa', wanted: 'an RSA private key' },
  ES384: { type: 'ec', curve: 'P-384', wanted: 'an EC P-384 private key' },
};

/** Reads the PEM key; the message names the file but never shows its content. */
function smartKey(file: string, alg: SmartAlg, where: string): KeyObject {
  const { type, curve, wanted } = KEY_OF_ALG[alg];
  let key: KeyObject;
  try {
    key = createPrivateKey(readFileSync(file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'not found' : code?.startsWith('ERR_') ? 'not a PEM private key' : `unreadable (${code ?? 'error'})`;
    throw new ConfigError(where, '/fhirServer/auth/privateKey', `expected ${wanted} for ${alg} in ${file}, which is ${why}`);
  }
  const details = key.asymmetricKeyDetails as { namedCurve?: string } | undefined;
  const namedCurve = details?.namedCurve === 'secp384r1' ? 'P-384' : details?.namedCurve;
  if (key.asymmetricKeyType !== type || (curve !== undefined && namedCurve !== curve)) {
    throw new ConfigError(where, '/fhirServer/auth/privateKey', `expected ${wanted} for ${alg} in ${file}, got a ${key.asymmetricKeyType}${namedCurve ? ` ${namedCurve}` : ''} key`);
  }
  return key;
}
