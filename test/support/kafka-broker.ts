import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import { freePort } from './free-port.js';

/**
 * A real Apache Kafka broker for tests and benchmarks: one KRaft node (broker and controller in one JVM)
 * on 127.0.0.1, from the jars Maven resolves through the project's pom.xml into ~/.m2. No Docker needed.
 * It can be stopped and started again on the same port and data, to test a broker restart.
 */
export interface TestKafka {
  brokers: string[];
  port: number;
  /** The broker's log file, for a failing test to point at. */
  logFile: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

/** The project's pom.xml, found upwards from here: this file also runs compiled, from dist/test/support. */
function findPom(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'pom.xml'))) return join(dir, 'pom.xml');
    const up = resolve(dir, '..');
    if (up === dir) throw new Error('pom.xml not found above test/support');
    dir = up;
  }
}
const pom = findPom();

/** The broker's classpath; resolved by Maven once per pom.xml content and cached. */
export function kafkaClasspath(): string {
  const digest = createHash('sha1').update(readFileSync(pom)).digest('hex').slice(0, 12);
  const cacheFile = join(tmpdir(), `fhir-rte-kafka-classpath-${digest}.txt`);
  if (existsSync(cacheFile)) {
    const cached = readFileSync(cacheFile, 'utf8').trim();
    if (cached && cached.split(':').every((jar) => existsSync(jar))) return cached;
  }
  const out = join(mkdtempSync(join(tmpdir(), 'fhir-rte-mvn-')), 'classpath.txt');
  const mvn = spawnSync('mvn', ['-q', '-B', '-f', pom, 'dependency:build-classpath', `-Dmdep.outputFile=${out}`], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (mvn.error) throw new Error(`cannot run mvn to resolve the Kafka broker jars: ${mvn.error.message}`);
  if (mvn.status !== 0) throw new Error(`mvn dependency:build-classpath failed (exit ${mvn.status}):\n${mvn.stdout}\n${mvn.stderr}`);
  const classpath = readFileSync(out, 'utf8').trim();
  writeFileSync(cacheFile, classpath);
  return classpath;
}

/**
 * A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, as `kafka-storage random-uuid`
 * prints. Like Kafka's own Uuid.randomUuid, never one starting with '-', which the tool's argument parser
 * would take for an option.
 */
function clusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

export interface BrokerOptions {
  heapMb?: number;
  /**
   * Adds two secured listeners beside PLAINTEXT: SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, for
   * these users) and SSL requiring a client certificate signed by `tls.caFile`.
   */
  secure?: { users: Record<string, string>; tls: { caFile: string; keystoreFile: string } };
}

export interface SecureListeners {
  sasl: string[];
  ssl: string[];
}

export async function startKafkaBroker(options: BrokerOptions = {}): Promise<TestKafka & { secure?: SecureListeners }> {
  const classpath = kafkaClasspath();
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-kafka-'));
  const [port, controllerPort] = [await freePort(), await freePort()];
  const secure = options.secure ? { sasl: await freePort(), ssl: await freePort(), ...options.secure } : undefined;
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir);
  const properties = join(dir, 'server.properties');
  writeFileSync(
    properties,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}${secure ? `,SASL_PLAINTEXT://127.0.0.1:${secure.sasl},SSL://127.0.0.1:${secure.ssl}` : ''}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${port}${secure ? `,SASL_PLAINTEXT://127.0.0.1:${secure.sasl},SSL://127.0.0.1:${secure.ssl}` : ''}`,
      'controller.listener.names=CONTROLLER',
      `listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT${secure ? ',SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL' : ''}`,
      ...(secure ? secureProperties(secure) : []),
      'inter.broker.listener.name=PLAINTEXT',
      `log.dirs=${dataDir}`,
      'num.partitions=1',
      'auto.create.topics.enable=false',
      // One node: every internal topic has one replica, and few partitions so the first group starts fast.
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=3',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'transaction.state.log.num.partitions=3',
      // Tests and benchmarks start consumers right after the broker: no 3 s wait before the first rebalance.
      'group.initial.rebalance.delay.ms=0',
      // Two cores on the machine: few threads.
      'num.network.threads=2',
      'num.io.threads=2',
      'background.threads=2',
      'num.recovery.threads.per.data.dir=1',
      'log.retention.check.interval.ms=600000',
      '',
    ].join('\n'),
  );
  const log4j = join(dir, 'log4j.properties');
  writeFileSync(
    log4j,
    [
      'log4j.rootLogger=WARN, file',
      'log4j.appender.file=org.apache.log4j.FileAppender',
      `log4j.appender.file.File=${join(dir, 'broker.log')}`,
      'log4j.appender.file.layout=org.apache.log4j.PatternLayout',
      'log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n',
      'log4j.logger.kafka=INFO',
      '',
    ].join('\n'),
  );
  const jvm = [
    `-Xmx${options.heapMb ?? 512}m`,
    '-Xms128m',
    '-XX:+UseSerialGC',
    '-Djava.awt.headless=true',
    `-Dlog4j.configuration=file:${log4j}`,
    '-cp',
    classpath,
  ];

  // SCRAM credentials live in the KRaft metadata log: they are written when the storage is formatted.
  const scram = Object.entries(secure?.users ?? {}).flatMap(([name, password]) =>
    ['SCRAM-SHA-256', 'SCRAM-SHA-512'].flatMap((m) => ['--add-scram', `${m}=[name=${name},password=${password}]`]),
  );
  const format = spawnSync('java', [...jvm, 'kafka.tools.StorageTool', 'format', '-t', clusterId(), '-c', properties, ...scram], { encoding: 'utf8', timeout: 120_000 });
  if (format.error) throw new Error(`cannot run java to format the Kafka storage: ${format.error.message}`);
  if (format.status !== 0) throw new Error(`kafka StorageTool format failed (exit ${format.status}):\n${format.stdout}\n${format.stderr}`);

  const logFile = join(dir, 'server.out');
  let child: ChildProcess | undefined;
  const killOnExit = () => child?.kill('SIGKILL');
  process.on('exit', killOnExit);

  const launch = async () => {
    const out = openSync(logFile, 'a');
    child = spawn('java', [...jvm, 'kafka.Kafka', properties], { stdio: ['ignore', out, out] });
    closeSync(out);
    const exited = new Promise<never>((_, reject) =>
      child!.once('exit', (code) => reject(new Error(`Kafka broker exited (code ${code}) while starting; see ${logFile}`))),
    );
    exited.catch(() => {});
    await Promise.race([waitUntilReady(`127.0.0.1:${port}`, 90_000), exited]);
  };
  const halt = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
    await gone;
    clearTimeout(timer);
    child = undefined;
  };

  try {
    await launch();
  } catch (err) {
    await halt();
    throw err;
  }
  return {
    secure: secure ? { sasl: [`127.0.0.1:${secure.sasl}`], ssl: [`127.0.0.1:${secure.ssl}`] } : undefined,
    brokers: [`127.0.0.1:${port}`],
    port,
    logFile,
    stop: halt,
    start: async () => {
      if (!child) await launch();
    },
    destroy: async () => {
      await halt();
      process.off('exit', killOnExit);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function secureProperties(secure: NonNullable<BrokerOptions['secure']>): string[] {
  const plainUsers = Object.entries(secure.users)
    .map(([name, password]) => `user_${name}="${password}"`)
    .join(' ');
  return [
    'sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512',
    `listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required ${plainUsers};`,
    'listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
    'listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
    // PEM files (KIP-651): the broker's key and certificate in one file, the CA that signs client certificates.
    'listener.name.ssl.ssl.keystore.type=PEM',
    `listener.name.ssl.ssl.keystore.location=${secure.tls.keystoreFile}`,
    'listener.name.ssl.ssl.truststore.type=PEM',
    `listener.name.ssl.ssl.truststore.location=${secure.tls.caFile}`,
    'listener.name.ssl.ssl.client.auth=required',
  ];
}

/** Ready when the broker answers metadata and can create and remove a topic (the controller is active). */
async function waitUntilReady(broker: string, timeoutMs: number): Promise<void> {
  const kafka = new Kafka({ brokers: [broker], logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 1_000 });
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const admin = kafka.admin();
    try {
      await admin.connect();
      const probe = `fhir-rte-probe-${randomBytes(4).toString('hex')}`;
      await admin.createTopics({ topics: [{ topic: probe, numPartitions: 1 }], waitForLeaders: true });
      await admin.deleteTopics({ topics: [probe] });
      return;
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 250));
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }
  throw new Error(`Kafka broker at ${broker} not ready after ${timeoutMs} ms: ${(last as Error)?.message}`);
}
