/**
 * The two receivers bench/resthook.ts compares fhir-rte's with, each in its own process as a real one would
 * be (the leading `_` keeps bench/run.ts from running it):
 *
 * - `bare`: a fastify server that reads the body and answers 200: the HTTP limit on this machine.
 * - `per-request`: what people write by hand: parse the JSON, one `INSERT ... ON CONFLICT` of the resource
 *   into one table in its own transaction (autocommit), answer 200 once it committed. A pg.Pool of
 *   node-postgres' default size (10).
 *
 * Usage: fork(_resthook-peers.js, [bare|per-request, port, databaseUrl?]); it sends `{ listening: true }` over
 * IPC once it listens, and exits on SIGTERM.
 */
import Fastify from 'fastify';
import pg from 'pg';

const [mode, portArg, databaseUrl] = process.argv.slice(2);
if (!process.send || (mode !== 'bare' && mode !== 'per-request')) throw new Error('usage: fork(_resthook-peers.js, [bare|per-request, port, databaseUrl])');

const app = Fastify({ logger: false, bodyLimit: 16 * 1024 * 1024 });
const pool = mode === 'per-request' ? new pg.Pool({ connectionString: databaseUrl }) : undefined;

if (pool) {
  await pool.query('CREATE SCHEMA IF NOT EXISTS bench_hand');
  await pool.query('CREATE TABLE IF NOT EXISTS bench_hand.observation (id text PRIMARY KEY, version bigint NOT NULL, resource jsonb NOT NULL)');
  app.addContentTypeParser(['application/fhir+json', 'application/json'], { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch (err) {
      (err as { statusCode?: number }).statusCode = 400;
      done(err as Error, undefined);
    }
  });
  app.put('/resthook/:type/:id', async (request, reply) => {
    const resource = request.body as { resourceType?: string; id?: string; meta?: { versionId?: string } };
    const version = Number(resource.meta?.versionId);
    if (resource.resourceType !== 'Observation' || !Number.isInteger(version)) return reply.code(400).send();
    await pool.query(
      `INSERT INTO bench_hand.observation (id, version, resource) VALUES ($1, $2, $3)
       ON CONFLICT (id) DO UPDATE SET version = excluded.version, resource = excluded.resource
       WHERE bench_hand.observation.version < excluded.version`,
      [resource.id, version, resource],
    );
    return reply.code(200).send();
  });
} else {
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.put('/resthook/:type/:id', async (_request, reply) => reply.code(200).send());
}

await app.listen({ host: '127.0.0.1', port: Number(portArg) });
process.send({ listening: true });
process.once('SIGTERM', () => {
  void app.close().then(async () => {
    await pool?.end();
    process.exit(0);
  });
});
