import type { Logger } from 'pino';
import { arrivalNow } from '../../events/change-event.js';
import { eventsFromText } from '../../events/from-fhir.js';
import type { FhirClient } from '../../fhir-client/fhir-client.js';
import { outcomeDiagnostics } from '../../fhir-client/fhir-error.js';
import { serverTimeMs } from '../../fhir-client/history.js';
import type { ApplyBatch, Source } from '../source.js';
import type { BackfillReport } from './report.js';

export interface SearchSourceOptions {
  client: FhirClient;
  /** A search, `Patient?birthdate=ge2000` or absolute under the client's base. */
  search: string;
  /** `_count`; absent: the search's own or the server's default. */
  count?: number;
  /** Only resources changed since then: `_lastUpdated=ge<since>`. */
  since?: Date;
  logger: Logger;
  report: BackfillReport;
}

/**
 * A FHIR search as a Source: every page the `next` links name, each page's matches (and `_include`d
 * resources) applied as upserts while the next page is read. Entries with `search.mode = outcome` are
 * the server's remarks, logged, not loaded. `serverTime` is the server's clock at the first page: a later
 * `--since auto` run starts there, so whatever changed during the walk is read again.
 */
export class SearchSource implements Source {
  serverTime?: Date;

  constructor(private readonly options: SearchSourceOptions) {}

  /** The search as sent: `_count` and `_lastUpdated` set on the given one. */
  url(): string {
    const { client, search, count, since } = this.options;
    const url = new URL(client.resolve(search));
    if (count !== undefined) url.searchParams.set('_count', String(count));
    if (since) url.searchParams.append('_lastUpdated', `ge${since.toISOString()}`);
    return url.toString();
  }

  async run(apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    const { client, report, logger } = this.options;
    const started = Date.now();
    let pending: Promise<unknown> = Promise.resolve();
    for await (const page of client.pages(this.url(), signal)) {
      if (!this.serverTime) {
        this.serverTime = new Date(serverTimeMs(page) ?? started);
        const total = page.bundle.total;
        const type = /\/([A-Z][A-Za-z]+)(?:\?|$)/.exec(new URL(page.url).pathname)?.[1];
        if (typeof total === 'number' && type) report.total(type, total);
      }
      const events = eventsFromText(page.text, { kind: 'http', method: 'GET', url: page.url }, arrivalNow()).filter((e) => {
        if (e.op !== 'upsert' || e.resourceType !== 'OperationOutcome') return true;
        logger.warn({ url: page.url, diagnostics: outcomeDiagnostics(e.resource) }, 'the search answered with an OperationOutcome');
        return false;
      });
      await pending;
      pending = events.length ? apply(events, signal) : Promise.resolve();
      pending.catch(() => {});
    }
    await pending;
  }
}
