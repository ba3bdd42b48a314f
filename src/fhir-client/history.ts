import type { ChangeEvent } from '../events/change-event.js';
import { arrivalNow } from '../events/change-event.js';
import { eventsFromText } from '../events/from-fhir.js';
import type { BundlePage, FhirClient } from './fhir-client.js';

export interface HistoryQuery {
  /** Types whose `{Type}/_history` is read, one after the other; empty: the system-level `_history`. */
  types: string[];
  /** `_since` (inclusive on HAPI), an instant; absent: all history. */
  since?: Date;
  /** `_count`. */
  pageSize: number;
}

export interface HistoryPage {
  url: string;
  events: ChangeEvent[];
  /** The server's clock when it answered, in ms: the earlier of the Bundle's `meta.lastUpdated` and the `Date` header. */
  serverTimeMs?: number;
}

/**
 * A server's `_history` as ChangeEvents, page by page. HAPI lists it newest first and pages by offset over
 * the live list (wire doc §5): a write during the walk shifts later pages, so an entry may come twice
 * (stale the second time under the guard) but none is skipped. A DELETE entry has no resource; its version
 * is in `response.etag` (from-fhir.ts reads it).
 */
export async function* historyPages(client: FhirClient, query: HistoryQuery, signal?: AbortSignal): AsyncGenerator<HistoryPage> {
  const targets = query.types.length ? query.types.map((t) => `${t}/_history`) : ['_history'];
  for (const target of targets) {
    for await (const page of client.pages(`${target}?${historyParams(query)}`, signal)) {
      yield { url: page.url, events: eventsFromText(page.text, { kind: 'http', method: 'GET', url: page.url }, arrivalNow()), serverTimeMs: serverTimeMs(page) };
    }
  }
}

function historyParams(query: HistoryQuery): string {
  const params = new URLSearchParams({ _count: String(query.pageSize) });
  if (query.since) params.set('_since', query.since.toISOString());
  return params.toString();
}

/** The server's time at a page: the earlier of what it says, so a watermark taken from it is never late. */
export function serverTimeMs(page: BundlePage): number | undefined {
  const stated = [(page.bundle.meta as { lastUpdated?: unknown } | undefined)?.lastUpdated, page.headers.get('date')]
    .filter((v): v is string => typeof v === 'string')
    .map((v) => Date.parse(v))
    .filter((ms) => !Number.isNaN(ms));
  return stated.length ? Math.min(...stated) : undefined;
}
