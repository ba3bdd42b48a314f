import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { HttpConfig, ResthookConfig } from '../../config/config.js';
import { arrivalNow, describeOrigin, type ChangeEvent } from '../../events/change-event.js';
import type { ReadCurrent } from '../../fhir-client/read-current.js';
import { isLoopback } from '../../http/server.js';
import { SinkFailure } from '../../sink/sink.js';
import type { ApplyBatch, Source } from '../source.js';
import { readDelivery, targetOf, type Delivery } from './delivery.js';
import { EventNumbers, type MissedEvents } from './event-numbers.js';
import { GroupCommit } from './group-commit.js';
import { readNamed } from './id-only.js';
import { accepted, badRequest, operationOutcome, tooLarge, unavailable, type Answer } from './operation-outcome.js';
import { bearerProblem, signatureProblem } from './secret.js';
import { isEmptyEventNotification, type Notification } from './notification.js';
import type { CatchUp, ResolveDelete } from './server-reads.js';

export interface ResthookOptions {
  log: Logger;
  /** True while the sink waits for the database: deliveries are refused at once instead of queueing. */
  stalled?: () => boolean;
  catchUp?: CatchUp;
  resolveDelete?: ResolveDelete;
  /**
   * What the apply handed to `run` makes deliveries durable in, for the answers' wording: the database's
   * transaction (default), or a produce to Kafka when relaying (kafka-relay.ts). The receiver is the same.
   */
  durableIn?: 'postgres' | 'kafka';
  /** Reads the resources an id-only topic notification names. */
  readCurrent?: ReadCurrent;
  /** Every answer's status code, for metrics. */
  onAnswer?: (statusCode: number) => void;
}

const WORDING = {
  postgres: { done: (n: string) => `committed (one transaction of ${n})`, failed: 'the database did not commit in time' },
  kafka: { done: (n: string) => `relayed to Kafka (one produce of ${n}, acknowledged by all in-sync replicas)`, failed: 'Kafka did not acknowledge the delivery' },
};

/**
 * The REST-hook receiver: a FHIR server's Subscription delivers to `resthook.path`, and a delivery is
 * answered 2xx only once the transaction that applied or dead-lettered it has committed (group commit:
 * concurrent deliveries share one transaction), or with `relayTo: kafka` once Kafka has acknowledged the
 * group's records (the same group commit, through the relay's apply). Anything else gets a FHIR
 * OperationOutcome that says why:
 * 503 (with Retry-After) while the database is away, 400/401/413/415 for what the sender must fix.
 */
export class ResthookSource implements Source {
  private group?: GroupCommit;
  private stopping = false;
  private fatal?: (err: unknown) => void;
  private warnedNoCatchUp = false;
  private readonly wording: (typeof WORDING)['postgres'];
  /** Each topic-based subscription's event numbers, to see the notifications that never came. */
  private readonly eventNumbers = new EventNumbers();

  constructor(
    server: FastifyInstance,
    private readonly config: ResthookConfig,
    http: HttpConfig,
    private readonly options: ResthookOptions,
  ) {
    if (!config.secret && !isLoopback(http.host)) {
      throw new Error(`refusing to receive on ${http.host} without a secret: set resthook.secret (or FHIR_RTE_RESTHOOK_SECRET), or listen on 127.0.0.1`);
    }
    this.wording = WORDING[options.durableIn ?? 'postgres'];
    if (!config.secret) options.log.info({ path: config.path }, 'no resthook.secret: the receiver listens on loopback only');
    void server.register((scope, _opts, done) => {
      this.routes(scope);
      done();
    });
  }

  /** True while deliveries are taken (after run began, before the stop): for health checks. */
  get accepting(): boolean {
    return this.group !== undefined && !this.stopping;
  }

  /** Takes deliveries until the signal aborts, then refuses new ones and lets the groups in flight finish. */
  async run(apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    const group = new GroupCommit(apply, {
      windowMs: this.config.groupWindowMs,
      maxEvents: this.config.maxEvents,
      maxInFlight: this.config.groupsInFlight,
      ackTimeoutMs: this.config.ackTimeoutMs,
    });
    this.group = group;
    try {
      await new Promise<void>((resolve, reject) => {
        this.fatal = reject;
        if (signal.aborted) resolve();
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
    } finally {
      this.stopping = true;
      await group.drain();
    }
  }

  private routes(scope: FastifyInstance): void {
    this.readRawBodies(scope);
    this.authenticate(scope);
    this.answerErrors(scope);
    const path = this.config.path;
    const handler = (request: FastifyRequest, reply: FastifyReply) => this.receive(request, reply);
    for (const method of ['PUT', 'DELETE', 'POST'] as const) scope.route({ method, url: `${path}/*`, handler });
    scope.route({ method: 'POST', url: path, handler });
  }

  /** Bodies are read raw: the receiver chooses what it can read (415) and parses FHIR JSON itself. */
  private readRawBodies(scope: FastifyInstance): void {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: this.config.maxBodyBytes }, (_req, body, done) => done(null, body));
  }

  /**
   * The Bearer secret is checked before the body is read. A request that instead carries Medplum's
   * X-Signature (and no Authorization) is checked once its raw body has been read.
   */
  private authenticate(scope: FastifyInstance): void {
    scope.addHook('onRequest', async (request, reply) => {
      const problem = this.bearerProblem(request);
      // Only Medplum's shape of request may wait for its body to be read and verified (a POST with its headers).
      const signed = request.method === 'POST' && request.headers['x-signature'] !== undefined && request.headers['x-medplum-interaction'] !== undefined && request.headers.authorization === undefined;
      if (problem && !signed) return this.refuse(request, reply, problem);
    });
    scope.addHook('preHandler', async (request, reply) => {
      const signature = header(request.headers['x-signature']);
      if (!this.config.secret || !signature || !this.bearerProblem(request)) return;
      const problem = signatureProblem(Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0), signature, this.config.secret);
      if (problem) return this.refuse(request, reply, problem);
    });
  }

  /** Fastify's own refusals (body too large, unreadable request) as OperationOutcomes too. */
  private answerErrors(scope: FastifyInstance): void {
    scope.setErrorHandler((err: { statusCode?: number; message: string }, request, reply) => {
      const what = `${request.method} ${request.url}`;
      if (err.statusCode === 413) return this.answer(reply, tooLarge(`${what}: the body is larger than resthook.maxBodyBytes (${this.config.maxBodyBytes} bytes)`));
      if (err.statusCode && err.statusCode < 500) return this.answer(reply, badRequest(`${what}: ${err.message}`));
      this.options.log.error({ method: request.method, url: request.url, error: err.message }, 'REST-hook delivery failed');
      return this.answer(reply, { status: 500, code: 'exception', diagnostics: err.message });
    });
  }

  private bearerProblem(request: FastifyRequest): Answer | undefined {
    return this.config.secret ? bearerProblem(request.headers.authorization, this.config.secret) : undefined;
  }

  private refuse(request: FastifyRequest, reply: FastifyReply, answer: Answer): FastifyReply {
    this.options.log.warn({ method: request.method, url: request.url, from: request.ip, why: answer.diagnostics }, 'REST-hook delivery refused');
    return this.answer(reply, answer);
  }

  private async receive(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const arrival = arrivalNow();
    const refusal = this.unavailable();
    if (refusal) return this.answer(reply, refusal);
    const reading = readDelivery(this.deliveryOf(request, arrival));
    if ('refusal' in reading) return this.refuse(request, reply, reading.refusal);
    if ('emptyPost' in reading) return this.answer(reply, this.requestCatchUp('empty POST'));
    if ('notification' in reading) return this.answer(reply, await this.notified(reading.notification));
    return this.answer(reply, await this.commit(await this.resolved(reading.events)));
  }

  private deliveryOf(request: FastifyRequest, arrival: bigint): Delivery {
    const rest = (request.params as { '*'?: string })['*'];
    const target = rest === undefined ? undefined : targetOf(rest);
    return {
      method: request.method,
      url: request.url,
      requestId: String(request.id),
      ...(target ? { target } : {}),
      contentType: request.headers['content-type'],
      ifMatch: header(request.headers['if-match']),
      ...medplumHeaders(request),
      body: Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0),
      arrival,
    };
  }

  private unavailable(): Answer | undefined {
    const retry = this.config.retryAfterSeconds;
    if (!this.group || this.stopping) return unavailable('fhir-rte is not taking deliveries now (starting or stopping); retry', retry);
    if (this.options.stalled?.()) return unavailable('the database is unavailable; nothing was written; retry', retry);
    return undefined;
  }

  /** An empty POST (or `empty` topic notification) names no resource: it asks for a catch-up read of the server's history. */
  private requestCatchUp(what: string): Answer {
    if (this.options.catchUp) {
      this.options.catchUp.request(what);
      return accepted('catch-up read of the server\'s history requested');
    }
    if (!this.warnedNoCatchUp) {
      this.warnedNoCatchUp = true;
      this.options.log.warn(
        `${what === 'empty POST' ? 'an empty POST arrived (a Subscription without a payload)' : `an ${what} arrived`}, but no fhirServer is configured to read the changes from: configure fhirServer, or set the Subscription's payload to full resources (R4 channel.payload application/fhir+json, topic-based content full-resource)`,
      );
    }
    return accepted(`${what} received; no fhirServer is configured, so nothing was read`);
  }

  /**
   * A topic-based notification: a jump in its event numbers asks for a catch-up; a handshake or heartbeat is
   * acknowledged; `empty` content asks for a catch-up; `id-only` references are read from the server;
   * the rest is applied like any delivery. The numbers count as received only once the answer is a 2xx.
   */
  private async notified(n: Notification): Promise<Answer> {
    const ticket = this.eventNumbers.receive(n.status);
    if (ticket.missed) this.missedEvents(ticket.missed);
    let answer: Answer | undefined;
    try {
      answer = await this.notificationAnswer(n);
      return answer;
    } finally {
      ticket.settle(answer !== undefined && answer.status < 300);
    }
  }

  private async notificationAnswer(n: Notification): Promise<Answer> {
    if (isEmptyEventNotification(n)) return this.requestCatchUp('empty event notification');
    const read = await readNamed(n.references, { read: this.options.readCurrent, timeoutMs: this.config.ackTimeoutMs, retryAfterSeconds: this.config.retryAfterSeconds, log: this.options.log });
    if ('refusal' in read) return read.refusal;
    return this.commit(await this.resolved([...n.events, ...read.events]));
  }

  private missedEvents(missed: MissedEvents): void {
    const { subscription, first, last } = missed;
    const what = `event ${first === last ? first : `${first}-${last}`} of ${subscription} never arrived`;
    if (this.options.catchUp) {
      this.options.log.info({ subscription, first, last }, `${what}: catch-up read of the server's history requested`);
      this.options.catchUp.request(what);
    } else {
      this.options.log.warn({ subscription, first, last }, `${what}, and no fhirServer is configured to read it from: configure fhirServer so that gap repair recovers it`);
    }
  }

  /** Deletes without a version are ordered by the server when a resolver is configured; on its failure they stay unversioned. */
  private async resolved(events: ChangeEvent[]): Promise<ChangeEvent[]> {
    const resolve = this.options.resolveDelete;
    if (!resolve) return events;
    return Promise.all(
      events.map(async (e) => {
        if (e.op !== 'delete' || e.order.versionId !== undefined) return e; // a version orders it already
        try {
          return await resolve(e, AbortSignal.timeout(this.config.ackTimeoutMs));
        } catch (err) {
          this.options.log.warn({ origin: describeOrigin(e.origin), error: (err as Error).message }, 'could not read the deleted resource from the server; the delete is ordered by its arrival');
          return e;
        }
      }),
    );
  }

  private async commit(events: ChangeEvent[]): Promise<Answer> {
    // A topic-based handshake or heartbeat carries only its status: acknowledged, nothing to apply.
    if (events.length === 0) return accepted('nothing to apply');
    const refusal = this.unavailable(); // it may have begun stopping while a delete was being resolved
    if (refusal) return refusal;
    try {
      const outcome = await this.group!.submit(events);
      return accepted(this.wording.done(`${outcome.received} event${outcome.received === 1 ? '' : 's'}`));
    } catch (err) {
      if (err instanceof SinkFailure) this.fatal?.(err);
      const why = err instanceof SinkFailure ? 'the database refused the change for a reason retrying cannot fix' : this.wording.failed;
      this.options.log.warn({ error: (err as Error).message }, `REST-hook delivery not acknowledged: ${why}`);
      return unavailable(`${why}; nothing was written; retry`, this.config.retryAfterSeconds);
    }
  }

  private answer(reply: FastifyReply, answer: Answer): FastifyReply {
    this.options.onAnswer?.(answer.status);
    if (answer.retryAfter !== undefined) void reply.header('retry-after', String(answer.retryAfter));
    return reply.code(answer.status).type('application/fhir+json').send(operationOutcome(answer));
  }
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function medplumHeaders(request: FastifyRequest): Pick<Delivery, 'medplum'> {
  const interaction = header(request.headers['x-medplum-interaction']);
  if (!interaction) return {};
  const deletedResource = header(request.headers['x-medplum-deleted-resource']);
  return { medplum: { interaction, ...(deletedResource ? { deletedResource } : {}) } };
}
