import type { FastifyInstance } from 'fastify';
import pg from 'pg';

/** One readiness condition's answer: whether it holds, and why in words an operator reads. */
export interface Check {
  ok: boolean;
  detail: string;
}

export interface HealthOptions {
  databaseUrl: string;
  /** Sources by name, each answering whether it is connected (joined its group, taking deliveries). */
  sources: Record<string, () => Check>;
  /** When the oldest batch waiting out transient faults began to wait. */
  stalledSince: () => Date | undefined;
  maxStallMs: number;
  /** Gap repair's watermark, when gap repair runs; until its first walk, the age counts from `startedAt`. */
  watermark?: { at: () => Date | undefined; maxAgeMs: number; failure?: () => string | undefined };
  /**
   * False when no running source needs the database to take its input (`start --only resthook` relaying
   * to Kafka: the relay carries a database outage): the `database` check is then reported, not required.
   */
  databaseRequired?: boolean;
  /** The relay's last produce (`relay:kafka`), when deliveries are relayed to Kafka. */
  relay?: () => Check;
  /** True once shutdown began: a stopping process takes no new work. */
  stopping: () => boolean;
  /** How long a database answer is reused (default 2 s): probes must not load the database. */
  cacheMs?: number;
}

/**
 * `/healthz`: the process is up (it answered). `/readyz`: it can do its work now: the database answers a
 * `SELECT 1` (on a connection of its own, so a busy pool cannot make it look away; cached briefly), every
 * source is connected, no batch has waited out transient faults past `health.maxStallMs`, gap
 * repair's watermark is not older than its bound and its last walk did not fail for good, and a relay's
 * last produce reached Kafka. Both answer JSON saying why; /readyz 503 when unready.
 */
export class Health {
  private readonly startedAt = new Date();
  private database?: { at: number; answer: Promise<Check> };

  constructor(private readonly options: HealthOptions) {}

  route(server: FastifyInstance): void {
    server.get('/healthz', async () => ({ status: 'up', uptimeSeconds: Math.round((Date.now() - this.startedAt.getTime()) / 1000) }));
    server.get('/readyz', async (_request, reply) => {
      const report = await this.readiness();
      return reply.code(report.ready ? 200 : 503).send(report);
    });
  }

  async readiness(): Promise<{ ready: boolean; checks: Record<string, Check> }> {
    const checks: Record<string, Check> = {};
    if (this.options.stopping()) checks.shutdown = { ok: false, detail: 'stopping: taking no new work' };
    const database = await this.databaseCheck();
    const databaseRequired = this.options.databaseRequired !== false;
    checks.database = databaseRequired || database.ok ? database : { ok: true, detail: `${database.detail} (not required: deliveries are relayed to Kafka)` };
    for (const [name, connected] of Object.entries(this.options.sources)) checks[`source:${name}`] = connected();
    if (this.options.relay) checks['relay:kafka'] = this.options.relay();
    checks.stall = this.stallCheck();
    if (this.options.watermark) checks.gapRepair = this.watermarkCheck(this.options.watermark);
    return { ready: Object.values(checks).every((c) => c.ok), checks };
  }

  private databaseCheck(): Promise<Check> {
    const cacheMs = this.options.cacheMs ?? 2000;
    const cached = this.database;
    if (cached && Date.now() - cached.at < cacheMs) return cached.answer;
    const answer = selectOne(this.options.databaseUrl);
    this.database = { at: Date.now(), answer };
    return answer;
  }

  private stallCheck(): Check {
    const since = this.options.stalledSince();
    if (!since) return { ok: true, detail: 'no batch is waiting out database faults' };
    const ms = Date.now() - since.getTime();
    const ok = ms <= this.options.maxStallMs;
    return { ok, detail: `a batch has waited out transient database faults for ${Math.round(ms / 1000)} s (bound ${this.options.maxStallMs / 1000} s)` };
  }

  private watermarkCheck(w: NonNullable<HealthOptions['watermark']>): Check {
    const failure = w.failure?.();
    if (failure) return { ok: false, detail: `gap repair failed and retries at its next schedule: ${failure}` };
    const at = w.at();
    const ageMs = Date.now() - (at ?? this.startedAt).getTime();
    const ok = ageMs <= w.maxAgeMs;
    const what = at ? `gap repair's watermark is ${Math.round(ageMs / 1000)} s old` : `gap repair has not completed its first walk in ${Math.round(ageMs / 1000)} s`;
    return { ok, detail: `${what} (bound ${Math.round(w.maxAgeMs / 1000)} s)` };
  }
}

/** `SELECT 1` on a connection of its own, answered within 2 s or counted as unreachable. */
async function selectOne(url: string): Promise<Check> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000, query_timeout: 2000, application_name: 'fhir-rte readyz' });
  // A connection the server ends while we use it must not crash the process.
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { ok: true, detail: 'the database answers' };
  } catch (err) {
    return { ok: false, detail: `the database does not answer: ${(err as Error).message}` };
  } finally {
    await client.end().catch(() => {});
  }
}
