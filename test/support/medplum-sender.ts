import { createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Attempt } from './hapi-sender.js';

/**
 * A stand-in for Medplum's rest-hook delivery, as medplum/medplum packages/server/src/workers/subscription.ts
 * (commit 8b8a0413) sends it:
 * - `sendRestHook`: `POST {endpoint}` (nothing appended); the body is the versioned resource, or `{}` for a delete.
 * - `buildRestHookHeaders`: `Content-Type: application/fhir+json`, `X-Medplum-Subscription: <id>`,
 *   `X-Medplum-Interaction: create|update|delete`, `X-Medplum-Deleted-Resource: {Type}/{id}` for a delete, each
 *   `channel.header` string split at ':'; with the subscription-secret extension, `X-Signature` = hex
 *   HMAC-SHA256 of the *resource's* JSON with the secret (for a delete too, although its body is `{}`).
 * - Retries (`initSubscriptionWorker`, `catchJobError`): BullMQ exponential backoff from 1000 ms; a job stops
 *   after DEFAULT_RETRIES = 3 retries (4 attempts) unless the subscription-max-attempts extension says
 *   otherwise; a status is success by `isJobSuccessful` (2xx by default). Tests scale the delay.
 */
export const MEDPLUM_ATTEMPTS = 4;

export class StandInMedplum {
  constructor(
    readonly endpoint: string,
    private readonly opts: { channelHeader?: string; signingSecret?: string; firstDelayMs: number },
  ) {}

  send(interaction: 'create' | 'update' | 'delete', resource: Record<string, unknown> & { resourceType: string; id: string }): Promise<Attempt[]> {
    const resourceJson = JSON.stringify(resource);
    const headers: Record<string, string> = {
      'Content-Type': 'application/fhir+json',
      'X-Medplum-Subscription': 'sub-1',
      'X-Medplum-Interaction': interaction,
    };
    if (interaction === 'delete') headers['X-Medplum-Deleted-Resource'] = `${resource.resourceType}/${resource.id}`;
    if (this.opts.channelHeader) {
      const [key, value] = this.opts.channelHeader.split(/:/);
      headers[key!.trim()] = value!.trim();
    }
    if (this.opts.signingSecret) headers['X-Signature'] = createHmac('sha256', this.opts.signingSecret).update(resourceJson).digest('hex');
    return this.withRetries(headers, interaction === 'delete' ? '{}' : resourceJson);
  }

  private async withRetries(headers: Record<string, string>, body: string): Promise<Attempt[]> {
    const attempts: Attempt[] = [];
    for (let i = 0; i < MEDPLUM_ATTEMPTS; i++) {
      if (i > 0) await sleep(this.opts.firstDelayMs * 2 ** (i - 1));
      try {
        const res = await fetch(this.endpoint, { method: 'POST', headers, body });
        const text = await res.text();
        attempts.push({ status: res.status, retryAfter: res.headers.get('retry-after'), body: text ? JSON.parse(text) : undefined });
        if (res.status >= 200 && res.status < 300) break;
      } catch (err) {
        attempts.push({ error: (err as Error).message });
      }
    }
    return attempts;
  }
}
