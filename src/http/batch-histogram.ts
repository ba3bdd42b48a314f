/**
 * A Prometheus histogram with one label, for a value observed once per event: prom-client's Histogram
 * hashes and validates its labels on every `observe` (about 2 µs), which for a lag per event costs more
 * than the sink's own work allows. Here a batch takes one series lookup and a bucket scan per value.
 * It is registered with prom-client's Registry (`registerMetric`), which formats it as it formats its own
 * histograms: `<name>_bucket{le}` cumulative, `<name>_sum`, `<name>_count`.
 */
export class BatchHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelName: string,
    private readonly buckets: number[],
  ) {}

  /** The series of one label value: observe each value of a batch on it. */
  labelled(value: string): { observe(v: number): void } {
    let s = this.series.get(value);
    if (!s) this.series.set(value, (s = new Series(this.buckets)));
    return s;
  }

  /** In the shape prom-client's Registry formats (`metrics()`) and lists (`getMetricsAsJSON()`). */
  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] } {
    const values = [];
    for (const [label, s] of this.series) {
      let cumulative = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        cumulative += s.counts[i]!;
        const le = i < this.buckets.length ? this.buckets[i]! : '+Inf';
        values.push({ labels: { le, [this.labelName]: label }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { [this.labelName]: label }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { [this.labelName]: label }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}

class Series {
  /** Per bucket, not cumulative; the last is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(private readonly bounds: number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}
