// Reads fhir-rte's /metrics (Prometheus text exposition format 0.0.4) for the console's live counters.
// Plain ES module without browser APIs, so the tests run it in Node against prom-client's own output.

/** Every sample of the text: `{ name, labels, value }`; comments and malformed lines are passed over. */
export function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    samples.push({ name: m[1], labels: m[3] ? parseLabels(m[3]) : {}, value: parseValue(m[4]) });
  }
  return samples;
}

function parseLabels(text) {
  const labels = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
  }
  return labels;
}

function parseValue(text) {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

export const OUTCOMES = ['received', 'applied', 'stale', 'skipped', 'dead_lettered'];

/**
 * What the console shows: events by outcome (summed over sources and types), the end-to-end lag
 * histogram (sum, count, cumulative buckets) and Kafka consumer lag (total and the largest partition).
 */
export function summarize(samples) {
  const events = Object.fromEntries(OUTCOMES.map((o) => [o, 0]));
  const lag = { sum: 0, count: 0, buckets: new Map() };
  const kafka = { total: 0, max: 0, partitions: 0 };
  let sawEvents = false;
  for (const s of samples) {
    if (s.name === 'fhir_rte_events_total' && s.labels.outcome in events) {
      events[s.labels.outcome] += s.value;
      sawEvents = true;
    } else if (s.name === 'fhir_rte_end_to_end_lag_seconds_sum') lag.sum += s.value;
    else if (s.name === 'fhir_rte_end_to_end_lag_seconds_count') lag.count += s.value;
    else if (s.name === 'fhir_rte_end_to_end_lag_seconds_bucket') {
      const le = parseValue(s.labels.le);
      lag.buckets.set(le, (lag.buckets.get(le) ?? 0) + s.value);
    } else if (s.name === 'fhir_rte_kafka_consumer_lag') {
      kafka.total += s.value;
      kafka.max = Math.max(kafka.max, s.value);
      kafka.partitions += 1;
    }
  }
  const buckets = [...lag.buckets].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
  return { events: sawEvents ? events : undefined, lag: { sum: lag.sum, count: lag.count, buckets }, kafka: kafka.partitions ? kafka : undefined };
}

/** The lag histogram between two readings (counters only grow; a restart resets them, then `now` alone counts). */
export function lagSince(before, now) {
  if (!before || now.count < before.count) return now;
  const earlier = new Map(before.buckets.map((b) => [b.le, b.count]));
  return { sum: now.sum - before.sum, count: now.count - before.count, buckets: now.buckets.map((b) => ({ le: b.le, count: b.count - (earlier.get(b.le) ?? 0) })) };
}

/** The upper bound of the bucket holding quantile q (as Prometheus' histogram_quantile, without interpolation). */
export function quantileBound(histogram, q) {
  if (!histogram.count) return undefined;
  const rank = q * histogram.count;
  for (const b of histogram.buckets) if (b.count >= rank) return b.le;
  return Infinity;
}
