import type { Command } from 'commander';
import { loadConfig } from '../../config/config.js';
import { fhirClient } from '../../sources/resthook/fhir-server-reads.js';
import type { FhirClient } from '../../fhir-client/fhir-client.js';
import { awaitActive, ensureSubscription, topicOffer, type SubscriptionState, type TopicChannel } from '../../sources/resthook/subscriptions.js';
import { loadTransformers } from '../../transform/load-transformers.js';
import { ExitCode, UsageError } from '../exit-codes.js';
import { formatTable } from '../format-table.js';
import { createLogger } from '../logger.js';
import type { GlobalOptions } from '../runtime.js';

interface SubscribeOptions {
  endpoint: string;
  type?: string[];
  timeout: string;
  json?: boolean;
  topicBased?: boolean;
  topic?: string;
}

export function register(program: Command): void {
  program
    .command('subscribe')
    .description("create or update fhir-rte's REST-hook Subscriptions on fhirServer.baseUrl (one per resource type), then wait until they are active")
    .requiredOption('--endpoint <url>', "the receiver's URL as the FHIR server reaches it, e.g. http://fhir-rte:8090/resthook")
    .option('--type <types...>', 'resource types to subscribe to (default: every type the transformers cover)')
    .option('--timeout <seconds>', 'how long to wait for the server to activate them', '60')
    .option('--topic-based', "topic-based Subscriptions (Subscriptions Backport IG on R4/R4B, or R5) on the topic the server's CapabilityStatement offers")
    .option('--topic <canonical>', 'the SubscriptionTopic to subscribe to (implies --topic-based); needed when the server offers several')
    .option('--json', 'one JSON line instead of a table')
    .action(async (opts: SubscribeOptions, cmd: Command) => {
      await subscribe(cmd.optsWithGlobals() as GlobalOptions & SubscribeOptions);
    });
}

async function subscribe(opts: GlobalOptions & SubscribeOptions): Promise<void> {
  const config = loadConfig(opts.config, { transformers: opts.transformers });
  if (!config.fhirServer) throw new UsageError('subscribe needs the FHIR server: set fhirServer.baseUrl (or FHIR_RTE_FHIR_SERVER_URL)');
  if (!/^https?:\/\//.test(opts.endpoint) || !URL.canParse(opts.endpoint)) throw new UsageError(`--endpoint: expected an http(s) URL, got ${opts.endpoint}`);
  const timeoutS = Number(opts.timeout);
  if (!Number.isFinite(timeoutS) || timeoutS < 0) throw new UsageError(`--timeout: expected seconds, got ${opts.timeout}`);
  const types = opts.type ?? [...new Set(loadTransformers(config.transformersDir).map((t) => t.resourceType))].sort();
  if (!types.length) throw new UsageError('no resource types: the transformers cover none; name them with --type');

  const client = fhirClient(config, config.fhirServer, createLogger(config.log.level).child({ component: 'fhir-server' }));
  const secret = config.resthook?.secret;
  const topic = opts.topicBased || opts.topic ? await chooseTopic(client, opts.topic) : undefined;
  const ensured: SubscriptionState[] = [];
  for (const resourceType of types) ensured.push(await ensureSubscription(client, { resourceType, endpoint: opts.endpoint, secret, topic }));
  const states = await awaitActive(client, ensured, Date.now() + timeoutS * 1000);

  const header = secret ? 'Authorization: Bearer ****' : '';
  if (opts.json) {
    const mode = topic ? { topic: topic.topic, shape: topic.shape } : {};
    process.stdout.write(`${JSON.stringify({ subscriptions: states.map((s) => ({ ...s, ...mode, endpoint: opts.endpoint, header: header || undefined })) })}\n`);
  } else {
    process.stdout.write(`${formatTable(['id', 'type', 'action', 'status'], states.map((s) => [s.id, s.type, s.action, s.status]))}\n`);
    if (topic) process.stdout.write(`topic ${topic.topic} (${topic.shape === 'r5' ? 'R5' : 'Subscriptions Backport IG'}), content full-resource\n`);
    process.stdout.write(`endpoint ${opts.endpoint}${header ? `, header ${header}` : ', no Authorization header (no resthook secret configured)'}\n`);
  }
  const inactive = states.filter((s) => s.status !== 'active');
  if (inactive.length) {
    process.stderr.write(`fhir-rte: ${inactive.length} Subscription(s) not active after ${timeoutS} s: ${inactive.map((s) => `Subscription/${s.id} (${s.type}) ${s.status}`).join(', ')}\n`);
    process.exitCode = ExitCode.failure;
  }
}

/** The topic named with --topic, else the one the server offers; several offered and none named is a usage error. */
async function chooseTopic(client: FhirClient, named: string | undefined): Promise<TopicChannel> {
  const offer = await topicOffer(client, { search: !named });
  if (named) return { topic: named, shape: offer.shape };
  if (offer.topics.length === 1) return { topic: offer.topics[0]!, shape: offer.shape };
  if (!offer.topics.length) throw new UsageError(`--topic-based: the FHIR server (FHIR ${offer.fhirVersion || 'version unknown'}) advertises no SubscriptionTopic; name one with --topic <canonical>`);
  throw new UsageError(`--topic-based: the FHIR server offers ${offer.topics.length} topics (${offer.topics.join(', ')}); choose one with --topic <canonical>`);
}
