import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type pg from 'pg';
import type { Logger } from 'pino';
import { ConfigError, ConfigErrors } from '../config/config-error.js';
import { DriftError } from '../cli/exit-codes.js';
import {
  countDeadLetters,
  discardDeadLetters,
  discardMatching,
  getDeadLetter,
  listDeadLetterSummaries,
  SOURCE_KINDS,
  type DeadLetterFilter,
  type SourceKind,
} from '../deadletter/dead-letter.js';
import { ERROR_CLASSES } from '../deadletter/error-class.js';
import { retryDeadLetters, retryMatching } from '../deadletter/replay.js';
import type { Sink } from '../sink/sink.js';
import { adminAuth } from './admin-auth.js';

export interface DeadLetterApiDeps {
  /** The admin token; without one every route answers 404 saying how to turn the API on. */
  token: string | undefined;
  pool: pg.Pool;
  sink: Sink;
  /** Puts the transformers on disk in use when they changed (or always, forced); rejects when they cannot be used. */
  reloadTransformers: (force?: boolean) => Promise<{ reloaded: boolean; transformers?: number }>;
  logger: Logger;
  /** Aborted when the process stops: a retry in flight is abandoned, uncommitted. */
  signal?: AbortSignal;
}

/** The filter as the query string and bulk bodies spell it. */
interface FilterQuery {
  status?: DeadLetterFilter['status'];
  class?: string;
  type?: string;
  id?: string;
  source?: SourceKind;
  q?: string;
  since?: string;
  until?: string;
}

const FILTER_PROPERTIES = {
  status: { enum: ['failed', 'retried', 'discarded', 'all'] },
  class: { enum: Object.keys(ERROR_CLASSES) },
  type: { type: 'string', pattern: '^[A-Z][A-Za-z]{0,63}$' },
  id: { type: 'string', minLength: 1, maxLength: 64 },
  source: { enum: [...SOURCE_KINDS] },
  q: { type: 'string', minLength: 1, maxLength: 200 },
  since: { type: 'string', maxLength: 40 },
  until: { type: 'string', maxLength: 40 },
} as const;

const LIST_QUERY = {
  type: 'object',
  additionalProperties: false,
  properties: {
    ...FILTER_PROPERTIES,
    cursor: { type: 'string', pattern: '^[1-9][0-9]{0,17}$' },
    limit: { type: 'integer', minimum: 1, maximum: 500 },
  },
} as const;

const COUNTS_QUERY = { type: 'object', additionalProperties: false, properties: FILTER_PROPERTIES } as const;

const ID_PARAMS = { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^[1-9][0-9]{0,17}$' } } } as const;

/** Either ids, or a filter (`{}`: every failed dead letter). */
const BULK_BODY = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  maxProperties: 1,
  properties: {
    ids: { type: 'array', minItems: 1, maxItems: 10_000, items: { type: 'integer', minimum: 1 } },
    filter: { type: 'object', additionalProperties: false, properties: FILTER_PROPERTIES },
  },
} as const;

/** Page size of the list when the query names none. */
const DEFAULT_PAGE = 50;

/**
 * The dead-letter API under /api/: list (filters, keyset paging, newest first), show, retry, discard,
 * retry or discard all that match, counts by cause and type, and a transformer reload. It acts through
 * the same functions as `fhir-rte dead-letter`, and retries through the running process's sink.
 */
export function registerDeadLetterApi(server: FastifyInstance, deps: DeadLetterApiDeps): void {
  void server.register(async (api) => {
    api.addHook('onRequest', adminAuth(deps.token));
    api.setErrorHandler((err: FastifyError, request, reply) => answerError(err, request, reply, deps.logger));
    routes(api, deps);
  }, { prefix: '/api' });
}

function routes(api: FastifyInstance, deps: DeadLetterApiDeps): void {
  const { pool, sink, logger, signal } = deps;

  api.get<{ Querystring: FilterQuery & { cursor?: string; limit?: number } }>('/dead-letters', { schema: { querystring: LIST_QUERY } }, async (request) => {
    const q = request.query;
    const limit = q.limit ?? DEFAULT_PAGE;
    // One more than the page: whether there is a next one, without counting.
    const rows = await listDeadLetterSummaries(pool, { ...filterOf(q), order: 'desc', after: q.cursor ? Number(q.cursor) : undefined, limit: limit + 1 });
    const items = rows.slice(0, limit);
    return { items, nextCursor: rows.length > limit ? String(items[items.length - 1]!.id) : null };
  });

  api.get<{ Querystring: FilterQuery }>('/dead-letters/counts', { schema: { querystring: COUNTS_QUERY } }, async (request) => countDeadLetters(pool, filterOf(request.query)));

  api.get<{ Params: { id: string } }>('/dead-letters/:id', { schema: { params: ID_PARAMS } }, async (request, reply) => {
    const found = await getDeadLetter(pool, Number(request.params.id));
    return found ?? reply.code(404).send({ error: `no dead letter ${request.params.id}` });
  });

  api.post<{ Params: { id: string } }>('/dead-letters/:id/retry', { schema: { params: ID_PARAMS } }, async (request, reply) => {
    const found = await getDeadLetter(pool, Number(request.params.id));
    if (!found) return reply.code(404).send({ error: `no dead letter ${request.params.id}` });
    if (found.status !== 'failed') return reply.code(409).send({ error: `dead letter ${found.id} is ${found.status}, not failed: only failed ones are retried` });
    const transformers = await deps.reloadTransformers();
    const summary = await retryDeadLetters(sink, pool, [found], signal);
    logger.info({ deadLetters: [found.id], ...summary }, 'dead letter retried from the admin API');
    return { ...summary, transformersReloaded: transformers.reloaded };
  });

  api.post<{ Params: { id: string } }>('/dead-letters/:id/discard', { schema: { params: ID_PARAMS } }, async (request, reply) => {
    const id = Number(request.params.id);
    const done = await discardDeadLetters(pool, [id]);
    if (done.length) return { discarded: 1 };
    const found = await getDeadLetter(pool, id);
    return found
      ? reply.code(409).send({ error: `dead letter ${id} is ${found.status}, not failed: only failed ones are discarded` })
      : reply.code(404).send({ error: `no dead letter ${id}` });
  });

  api.post<{ Body: { ids?: number[]; filter?: FilterQuery } }>('/dead-letters/retry', { schema: { body: BULK_BODY } }, async (request) => {
    const transformers = await deps.reloadTransformers();
    const summary = await retryMatching(sink, pool, bulkFilter(request.body), signal);
    logger.info({ ...summary }, 'dead letters retried from the admin API');
    return { ...summary, transformersReloaded: transformers.reloaded };
  });

  api.post<{ Body: { ids?: number[]; filter?: FilterQuery } }>('/dead-letters/discard', { schema: { body: BULK_BODY } }, async (request) => {
    const discarded = await discardMatching(pool, bulkFilter(request.body));
    logger.info({ discarded }, 'dead letters discarded from the admin API');
    return { discarded };
  });

  api.post('/transformers/reload', async () => deps.reloadTransformers(true));
}

function bulkFilter(body: { ids?: number[]; filter?: FilterQuery }): DeadLetterFilter {
  return body.ids ? { ids: body.ids } : filterOf(body.filter ?? {});
}

function filterOf(q: FilterQuery): DeadLetterFilter {
  return {
    status: q.status ?? 'failed',
    errorClass: q.class,
    resourceType: q.type,
    resourceId: q.id,
    source: q.source,
    text: q.q,
    since: q.since === undefined ? undefined : instant(q.since, 'since'),
    until: q.until === undefined ? undefined : instant(q.until, 'until'),
  };
}

function instant(text: string, name: string): Date {
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new BadRequest(`${name}: expected an ISO 8601 time such as 2026-11-30T06:00:00Z, got ${JSON.stringify(text)}`);
  return new Date(t);
}

class BadRequest extends Error {}

/** Every refusal as `{ error }` JSON: validation (400), transformers that cannot be used (409), else 500 without internals. */
async function answerError(err: FastifyError, request: FastifyRequest, reply: FastifyReply, logger: Logger): Promise<void> {
  if (err.validation) {
    await reply.code(400).send({ error: err.message });
  } else if (err instanceof BadRequest) {
    await reply.code(400).send({ error: err.message });
  } else if (err instanceof ConfigError || err instanceof ConfigErrors || err instanceof DriftError) {
    await reply.code(409).send({ error: `the transformers on disk cannot be used, so the ones in use stay (nothing was retried): ${err.message}` });
  } else if (err.statusCode && err.statusCode < 500) {
    await reply.code(err.statusCode).send({ error: err.message });
  } else {
    logger.error({ err: err.message, url: request.url.split('?')[0] }, 'admin API request failed');
    await reply.code(500).send({ error: 'internal error (see the fhir-rte log)' });
  }
}
