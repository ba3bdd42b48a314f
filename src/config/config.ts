import { Ajv } from 'ajv';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, fromAjvErrors } from './config-error.js';
import { readStructuredFile } from './read-file.js';
import { configSchema } from './schema.js';
import type { AuthConfig } from '../fhir-client/auth.js';
import type { SmartAlg, SmartAuthConfig } from '../fhir-client/smart.js';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';

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
  host: string;
  port: number;
  tls?: { cert: string; key: string };
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
}

export interface FhirServerConfig {
  baseUrl: string;
  auth: AuthConfig;
  timeoutMs: number;
  maxAttempts: number;
  retryAfterMaxMs: number;
  /** Reads at once to resolve deletes. */
  concurrency: number;
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
  resthook?: Partial<ResthookConfig>;
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
    fhirServer: fhirServerConfig(raw.fhirServer, env, where),
  };
  config.resthook = resthookConfig(raw.resthook, env, !config.kafka, config.database.poolSize);
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
  return { host: envHost || raw?.host || '127.0.0.1', port: envPort ? Number(envPort) : (raw?.port ?? 8090), ...(tls ? { tls } : {}) };
}

/** The receiver's settings when it is configured, or when no other source is (then it is the one that runs). */
function resthookConfig(raw: Partial<ResthookConfig> | undefined, env: NodeJS.ProcessEnv, alone: boolean, poolSize: number): ResthookConfig | undefined {
  const secret = env.FHIR_RTE_RESTHOOK_SECRET || raw?.secret;
  if (!raw && !secret && !alone) return undefined;
  return {
    path: (raw?.path ?? '/resthook').replace(/\/+$/, '') || '/resthook',
    secret,
    ackTimeoutMs: raw?.ackTimeoutMs ?? 10_000,
    maxBodyBytes: raw?.maxBodyBytes ?? 16 * 1024 * 1024,
    groupWindowMs: raw?.groupWindowMs ?? 3,
    maxEvents: raw?.maxEvents ?? 1000,
    // Every connection may carry a group; only when all are busy does the next group gather past its window.
    groupsInFlight: raw?.groupsInFlight ?? poolSize,
    retryAfterSeconds: raw?.retryAfterSeconds ?? 5,
  };
}
/** The FHIR server fhir-rte reads (gap repair, delete resolution), when a base URL is configured. */
function fhirServerConfig(raw: RawConfig['fhirServer'], env: NodeJS.ProcessEnv, where: string): FhirServerConfig | undefined {
  const baseUrl = env.FHIR_RTE_FHIR_SERVER_URL || raw?.baseUrl;
  if (!baseUrl) return undefined;
  if (!/^https?:\/\//.test(baseUrl) || !URL.canParse(baseUrl)) throw new ConfigError(where, '/fhirServer/baseUrl', 'expected an http(s) URL');
  const url = new URL(baseUrl);
  if (url.username || url.password) throw new ConfigError(where, '/fhirServer/baseUrl', 'expected a URL without credentials; put them in fhirServer.auth or FHIR_RTE_FHIR_SERVER_PASSWORD');
  return {
    baseUrl: baseUrl.replace(/\/+$/, ''),
    auth: fhirAuth(raw?.auth, env, where),
    timeoutMs: raw?.timeoutMs ?? 30_000,
    maxAttempts: raw?.maxAttempts ?? 5,
    retryAfterMaxMs: raw?.retryAfterMaxMs ?? 60_000,
    concurrency: raw?.concurrency ?? 4,
    historyTypes: raw?.historyTypes ?? [],
    pageSize: raw?.pageSize ?? 100,
    repairEveryMs: raw?.repairEveryMs ?? 300_000,
    repairMarginMs: raw?.repairMarginMs ?? 300_000,
    firstRepair: raw?.firstRepair ?? 'full',
  };
}

/** Auth from the file, its secrets completed or overridden by FHIR_RTE_FHIR_SERVER_USERNAME, _PASSWORD and _TOKEN. */
function fhirAuth(raw: NonNullable<RawConfig['fhirServer']>['auth'], env: NodeJS.ProcessEnv, where: string): AuthConfig {
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
  if (type === 'smart') return smartAuth(raw, env, where);
  return { type: 'none' };
}

/** SMART Backend Services: the private key is read and checked against `alg` now, not at the first request. */
function smartAuth(raw: NonNullable<RawConfig['fhirServer']>['auth'], env: NodeJS.ProcessEnv, where: string): SmartAuthConfig {
  const keyFile = env.FHIR_RTE_FHIR_SERVER_PRIVATE_KEY || raw?.privateKey;
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
