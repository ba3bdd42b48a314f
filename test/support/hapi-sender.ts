import { setTimeout as sleep } from 'node:timers/promises';
import type { HapiStandIn, ServerChange } from './hapi-server.js';

/**
 * A stand-in for HAPI FHIR 8.8's rest-hook delivery, as ../shared/peers/hapi-fhir-8.8-wire.md records it:
 * - §2: create and update are `PUT {endpoint}/{Type}/{id}` with the full resource, `If-Match: W/"<version>"`
 *   and `Content-Type: application/fhir+json; charset=UTF-8`; delete is a bare `DELETE {endpoint}/{Type}/{id}`
 *   (no body, no version); the Subscription's `channel.header` (`Authorization: Bearer <secret>`) on each.
 * - §3: without a payload, an empty `POST {endpoint}` (Content-Type x-www-form-urlencoded, Content-Length 0),
 *   **not retried on an HTTP error answer**, only on a connection failure.
 * - §4: a failed delivery is retried byte-identically: Spring `TimeoutRetryPolicy` 60 s + `ExponentialBackOffPolicy`
 *   initial 1000 ms, multiplier 1.1, observed as 21 attempts in all, then dropped for good. Tests scale the
 *   interval (`firstGapMs`) but keep the number of tries.
 * - §2: deliveries arrive 1.3-5.1 s after the write and not in write order (`deliverShuffled`).
 * Writes come from `write`/`delete` here, or from the server stand-in (hapi-server.ts) once `notifiedBy` joins
 * the two: then every write on that server queues its delivery, as HAPI's subscription matcher does.
 */
export const HAPI_ATTEMPTS = 21;

export interface Attempt {
  status?: number;
  retryAfter?: string | null;
  body?: unknown;
  error?: string;
}

export interface Notification {
  method: 'PUT' | 'DELETE' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export class StandInHapi {
  /** What the stand-in server holds: the current version of each resource, deleted or not. */
  readonly state = new Map<string, { version: number; resource?: Record<string, unknown> }>();
  readonly pending: Notification[] = [];

  constructor(
    readonly endpoint: string,
    private readonly opts: { secret?: string; firstGapMs: number; onAttempt?: (a: Attempt) => void },
  ) {}

  /** Every write on `server` from now on queues its delivery here (the server, not `state`, holds the truth then). */
  notifiedBy(server: HapiStandIn): this {
    server.onChange = (change) => this.pending.push(notificationOf(change));
    return this;
  }

  /** A create or update on the server: a new version, stamped now, and its PUT notification queued. */
  write(resource: Record<string, unknown> & { resourceType: string; id: string }): Record<string, unknown> {
    const key = `${resource.resourceType}/${resource.id}`;
    const version = (this.state.get(key)?.version ?? 0) + 1;
    const stored = { ...resource, meta: { versionId: String(version), lastUpdated: new Date().toISOString() } };
    this.state.set(key, { version, resource: stored });
    this.pending.push({
      method: 'PUT',
      path: `/${key}`,
      headers: { 'If-Match': `W/"${version}"`, 'Content-Type': 'application/fhir+json; charset=UTF-8' },
      body: JSON.stringify(stored),
    });
    return stored;
  }

  delete(resourceType: string, id: string): void {
    const key = `${resourceType}/${id}`;
    this.state.set(key, { version: (this.state.get(key)?.version ?? 0) + 1 });
    this.pending.push({ method: 'DELETE', path: `/${key}`, headers: {} });
  }

  /** Sends the queued notifications concurrently, in a random order, each with HAPI's retries. */
  async deliverShuffled(random = Math.random): Promise<Attempt[][]> {
    const batch = this.pending.splice(0).map((n) => ({ n, k: random() })).sort((a, b) => a.k - b.k).map((x) => x.n);
    return Promise.all(batch.map((n) => this.deliver(n)));
  }

  /** Sends the queued notifications one after another, in write order. */
  async deliverInOrder(): Promise<Attempt[][]> {
    const out: Attempt[][] = [];
    for (const n of this.pending.splice(0)) out.push(await this.deliver(n));
    return out;
  }

  emptyPost(): Promise<Attempt[]> {
    return this.deliver({ method: 'POST', path: '', headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=UTF-8' }, body: '' });
  }

  /** One notification with HAPI's retry policy; returns every attempt. */
  async deliver(n: Notification): Promise<Attempt[]> {
    const attempts: Attempt[] = [];
    let gap = this.opts.firstGapMs;
    for (let i = 0; i < HAPI_ATTEMPTS; i++) {
      const attempt = await this.send(n);
      attempts.push(attempt);
      this.opts.onAttempt?.(attempt);
      if (attempt.status !== undefined && (attempt.status < 300 || n.method === 'POST')) break;
      await sleep(gap);
      gap *= 1.1;
    }
    return attempts;
  }

  private async send(n: Notification): Promise<Attempt> {
    const auth: Record<string, string> = this.opts.secret ? { Authorization: `Bearer ${this.opts.secret}` } : {};
    try {
      const res = await fetch(this.endpoint + n.path, {
        method: n.method,
        headers: { 'User-Agent': 'HAPI-FHIR/8.8.0 (FHIR Client; FHIR 4.0.1/R4; apache)', ...auth, ...n.headers },
        body: n.body,
      });
      const text = await res.text();
      return { status: res.status, retryAfter: res.headers.get('retry-after'), body: text ? JSON.parse(text) : undefined };
    } catch (err) {
      return { error: (err as Error).message };
    }
  }
}

/** Wire doc §2: a write is a PUT of the stored resource with `If-Match` naming its version; a delete a bare DELETE. */
function notificationOf(change: ServerChange): Notification {
  const path = `/${change.resourceType}/${change.id}`;
  if (change.method === 'DELETE') return { method: 'DELETE', path, headers: {} };
  return {
    method: 'PUT',
    path,
    headers: { 'If-Match': `W/"${change.versionId}"`, 'Content-Type': 'application/fhir+json; charset=UTF-8' },
    body: JSON.stringify(change.resource),
  };
}

export function lastOf(attempts: Attempt[]): Attempt {
  return attempts[attempts.length - 1]!;
}
