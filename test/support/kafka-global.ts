import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { freePort } from './free-port.js';
import { startKafkaBroker, type TestKafka } from './kafka-broker.js';

/**
 * One Kafka broker for the whole run, provided as `kafkaBrokers` (comma-separated host:port):
 * KAFKA_BROKERS when set; else testcontainers where a Docker engine answers; else a KRaft broker from
 * Maven-resolved jars (kafka-broker.ts). Under CI=true a broker that cannot start fails the run; on a
 * developer's machine without Java or Maven the Kafka tests skip and say why (`kafkaUnavailable`).
 * A run filtered to files that are not Kafka tests starts no broker at all.
 */
let broker: TestKafka | undefined;
let container: { stop(): Promise<unknown> } | undefined;

export async function setup(project: TestProject): Promise<void> {
  project.provide('kafkaUnavailable', '');
  if (process.env.KAFKA_BROKERS) {
    project.provide('kafkaBrokers', process.env.KAFKA_BROKERS);
    return;
  }
  if (!runIncludesKafkaTests(project)) {
    project.provide('kafkaBrokers', '');
    project.provide('kafkaUnavailable', 'no Kafka test file in this run');
    return;
  }
  try {
    const brokers = dockerEngineRuns() ? await startContainer() : await startJarBroker();
    project.provide('kafkaBrokers', brokers);
  } catch (err) {
    if (process.env.CI === 'true') throw err;
    const why = `no Kafka broker could be started: ${(err as Error).message}`;
    process.stderr.write(`kafka-global: ${why}; Kafka tests will be skipped (they never are under CI=true)\n`);
    project.provide('kafkaBrokers', '');
    project.provide('kafkaUnavailable', why);
  }
}

export async function teardown(): Promise<void> {
  await broker?.destroy();
  await container?.stop();
}

async function startJarBroker(): Promise<string> {
  const started = Date.now();
  broker = await startKafkaBroker();
  process.stderr.write(`kafka-global: Kafka broker on ${broker.brokers.join(',')} in ${Date.now() - started} ms\n`);
  return broker.brokers.join(',');
}

function dockerEngineRuns(): boolean {
  const r = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 && r.stdout.trim() !== '';
}

/** apache/kafka in KRaft mode, advertised on a fixed free host port so clients reach it on 127.0.0.1. */
async function startContainer(): Promise<string> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const port = await freePort();
  const started = await new GenericContainer('apache/kafka:3.9.1')
    .withExposedPorts({ container: port, host: port })
    .withEnvironment({
      KAFKA_NODE_ID: '1',
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_LISTENERS: `PLAINTEXT://0.0.0.0:${port},CONTROLLER://0.0.0.0:9093`,
      KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://127.0.0.1:${port}`,
      KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9093',
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
      KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
      KAFKA_HEAP_OPTS: '-Xmx512m -Xms128m',
    })
    .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
    .withStartupTimeout(60_000)
    .start();
  container = started;
  return `127.0.0.1:${port}`;
}

/** False only when the run was given file filters and none of them matches a Kafka test file. */
function runIncludesKafkaTests(project: TestProject): boolean {
  const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
  if (!filters?.length) return true;
  const testDir = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'));
  const kafkaFiles = readdirSync(testDir)
    .filter((f) => /^kafka.*\.test\.ts$/.test(f))
    .map((f) => join(testDir, f));
  return kafkaFiles.some((file) => filters.some((filter) => file.includes(filter.replace(/:\d+$/, '').replace(/^\.\//, ''))));
}

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string;
    /** Why the Kafka tests skip ('' when a broker runs). */
    kafkaUnavailable: string;
  }
}
