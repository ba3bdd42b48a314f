import cliProgress from 'cli-progress';
import type { BackfillReport } from '../sources/backfill/report.js';
import type { BatchOutcome, Counts } from '../sink/sink.js';
import { formatTable } from './format-table.js';

/**
 * Progress of a backfill or reconcile per resource type. On a terminal: one cli-progress bar per type
 * (done of the expected total when the source knows it, rate, ETA). Otherwise (a pipe, a log file): the
 * notes as lines, and one line per type at most every `intervalMs`, so a long run shows it is alive.
 */
export class TypeProgress implements BackfillReport {
  private readonly totals = new Map<string, number>();
  private readonly counts = new Map<string, Counts>();
  private readonly started = Date.now();
  private readonly multi?: cliProgress.MultiBar;
  private readonly bars = new Map<string, cliProgress.SingleBar>();
  private lastLine = Date.now();

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly label: string,
    private readonly intervalMs = 10_000,
  ) {
    if (out.isTTY) {
      this.multi = new cliProgress.MultiBar(
        { stream: out, format: KNOWN, hideCursor: true, clearOnComplete: false, etaBuffer: 50, barsize: 20 },
        cliProgress.Presets.shades_classic,
      );
    }
  }

  total(type: string, count: number): void {
    this.totals.set(type, count);
    this.bar(type);
  }

  note(message: string): void {
    if (this.multi) this.multi.log(`${message}\n`);
    else this.out.write(`${this.label}: ${message}\n`);
  }

  /** Adds a committed batch's counts. */
  add(outcome: BatchOutcome): void {
    for (const [type, c] of Object.entries(outcome.byType)) {
      const sum = this.counts.get(type) ?? { received: 0, applied: 0, stale: 0, skipped: 0, deadLettered: 0 };
      sum.received += c.received;
      sum.applied += c.applied;
      sum.stale += c.stale;
      sum.skipped += c.skipped;
      sum.deadLettered += c.deadLettered;
      this.counts.set(type, sum);
      this.bar(type);
    }
    if (!this.multi && Date.now() - this.lastLine >= this.intervalMs) this.lines();
  }

  stop(): void {
    this.multi?.stop();
  }

  private bar(type: string): void {
    if (!this.multi) return;
    const done = this.counts.get(type)?.received ?? 0;
    const expected = this.totals.get(type);
    const seconds = Math.max((Date.now() - this.started) / 1000, 0.001);
    const payload = { type: type.padEnd(20), expected: expected ?? '?', rate: Math.round(done / seconds) };
    let bar = this.bars.get(type);
    if (!bar) {
      // Without an expected total there is no bar or ETA to show: a counter and its rate.
      bar = this.multi.create(expected ?? 0, done, payload, expected === undefined ? { format: UNKNOWN } : {});
      this.bars.set(type, bar);
    }
    // Without an expected total the bar is only a counter: its total follows what is done.
    bar.setTotal(Math.max(expected ?? done, done));
    bar.update(done, payload);
  }

  private lines(): void {
    this.lastLine = Date.now();
    const seconds = (Date.now() - this.started) / 1000;
    for (const [type, c] of [...this.counts].sort(([a], [b]) => a.localeCompare(b))) {
      const expected = this.totals.get(type);
      this.out.write(`${this.label}: ${type} ${c.received}${expected === undefined ? '' : ` of ${expected}`} received, ${c.applied} applied, ${Math.round(c.received / seconds)}/s\n`);
    }
  }
}

const KNOWN = '{type} [{bar}] {value}/{expected} | {rate}/s | ETA {eta_formatted}';
const UNKNOWN = '{type} {value} | {rate}/s';

/** The end-of-run table: one row per type, then the totals. */
export function countsTable(outcome: BatchOutcome): string {
  const row = (name: string, c: Counts) => [name, ...[c.received, c.applied, c.stale, c.skipped, c.deadLettered].map(String)];
  const types = Object.entries(outcome.byType).sort(([a], [b]) => a.localeCompare(b));
  return formatTable(['type', 'received', 'applied', 'stale', 'skipped', 'dead-lettered'], [...types.map(([t, c]) => row(t, c)), row('total', outcome)]);
}
