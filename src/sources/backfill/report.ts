/**
 * What a backfill tells whoever watches it, beside the sink's counts: how many resources of a type to
 * expect (a manifest's `count`, a search's `total`), and notes on the way (export progress, a resumed job).
 * The CLI shows them as progress bars on a terminal and as log lines otherwise.
 */
export interface BackfillReport {
  total(resourceType: string, count: number): void;
  note(message: string): void;
}

export const silentReport: BackfillReport = { total: () => {}, note: () => {} };
