import type { BatchOutcome } from '../sink/sink.js';

/** One self-overwriting progress line (done, rate) on a terminal; nothing when stderr is a pipe or file. */
export class Progress {
  private readonly started = Date.now();
  private last = 0;

  constructor(private readonly out: NodeJS.WriteStream) {}

  update(t: BatchOutcome): void {
    if (!this.out.isTTY || Date.now() - this.last < 200) return;
    this.last = Date.now();
    this.out.write(`\r${this.line(t)}`);
  }

  done(t: BatchOutcome): void {
    if (this.out.isTTY && this.last) this.out.write(`\r${this.line(t)}\n`);
  }

  private line(t: BatchOutcome): string {
    const seconds = (Date.now() - this.started) / 1000;
    const rate = seconds > 0 ? Math.round(t.received / seconds) : 0;
    return `${t.received} received (${t.applied} applied, ${t.stale} stale, ${t.skipped} skipped, ${t.deadLettered} dead-lettered) · ${rate}/s · ${seconds.toFixed(1)}s`;
  }
}
