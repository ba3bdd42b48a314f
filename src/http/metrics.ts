import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import { arrivalNow, type ChangeEvent } from '../events/change-event.js';
import type { BatchOutcome, Counts, Fate } from '../sink/sink.js';
import type { ApplyBatch } from '../sources/source.js';
import { isResourceType } from '../transform/fhirpath/model.js';
import { BatchHistogram } from './batch-histogram.js';

/** The sources, as their events are labelled. */
export type SourceLabel = 'kafka' | 'resthook' | 'gap-repair' | 'file';

/**
 * What sources report to. Counting happens at one point per source (`measured` wraps its apply), so no
 * source or sink touches prom-client; the REST-hook receiver adds its answers, the Kafka source its lag.
 */
export interface Telemetry {
  /** `apply` that counts each batch's outcome, size, duration and end-to-end lag under the source's label. */
  measured(source: SourceLabel, apply: ApplyBatch): ApplyBatch;
  /**
   * For an apply that relays to Kafka rather than commits: its batches are not applied here, so no batch
   * size, apply time or lag, and its events are counted by the applier that commits them (counting them
   * here too would count them twice in a process that relays and consumes). Only the events the relay
   * dead-lettered itself are counted, under the source's label.
   */
  relayed(source: SourceLabel, apply: ApplyBatch): ApplyBatch;
  delivery(statusCode: number): void;
  kafkaLag(topic: string, partition: number, lag: number): void;
  /** This member's partitions after a rebalance: the lag of partitions it no longer holds is dropped. */
  kafkaAssigned(assignment: Record<string, number[]>): void;
}

/** For code paths that run without the HTTP server (tests, `load`). */
export const noTelemetry: Telemetry = {
  measured: (_source, apply) => apply,
  relayed: (_source, apply) => apply,
  delivery: () => {},
  kafkaLag: () => {},
  kafkaAssigned: () => {},
};

/** State read at scrape time rather than pushed: it changes without events (a stall grows, a pool idles). */
export interface Probes {
  pool: pg.Pool;
  /** Batches waiting out transient database faults now. */
  retrying(): number;
  /** Since when the oldest of them has been waiting. */
  stalledSince(): Date | undefined;
  /** The gap-repair watermark, when gap repair runs and has one. */
  watermark?(): Date | undefined;
}

const OUTCOMES: [Fate | 'received', string][] = [
  ['received', 'received'],
  ['applied', 'applied'],
  ['stale', 'stale'],
  ['skipped', 'skipped'],
  ['deadLettered', 'dead_lettered'],
];

/** The Prometheus metrics of one fhir-rte process (README, Operations: the metric table). */
export class Metrics implements Telemetry {
  readonly registry = new Registry();
  private readonly events: Counter<'source' | 'resource_type' | 'outcome'>;
  private readonly batchEvents: Histogram<'source'>;
  private readonly applySeconds: Histogram<'source'>;
  private readonly lagSeconds: BatchHistogram;
  private readonly kafkaLagGauge: Gauge<'topic' | 'partition'>;
  /** The partitions whose lag the gauge holds, by topic. */
  private readonly lagPartitions = new Map<string, Set<number>>();
  private readonly deliveries: Counter<'code'>;

  constructor(probes: Probes) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.events = new Counter({
      name: 'fhir_rte_events_total',
      help: 'Events by source, resource type and outcome (received = applied + stale + skipped + dead_lettered)',
      labelNames: ['source', 'resource_type', 'outcome'],
      registers,
    });
    this.batchEvents = new Histogram({
      name: 'fhir_rte_batch_events',
      help: 'Events per applied batch (one transaction, or its halves when a record was isolated)',
      labelNames: ['source'],
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000],
      registers,
    });
    this.applySeconds = new Histogram({
      name: 'fhir_rte_apply_duration_seconds',
      help: 'From handing a batch to the sink to its commit, retries included',
      labelNames: ['source'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    // Observed once per event: a histogram made for that (see batch-histogram.ts).
    this.lagSeconds = new BatchHistogram(
      'fhir_rte_end_to_end_lag_seconds',
      "From an event's meta.lastUpdated (else its record time or arrival) to the commit that applied it",
      'source',
      [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400],
    );
    this.registry.registerMetric(this.lagSeconds as unknown as Metric);
    this.kafkaLagGauge = new Gauge({
      name: 'fhir_rte_kafka_consumer_lag',
      help: "Records between the partition's end (high watermark at the last fetch) and the offset committed",
      labelNames: ['topic', 'partition'],
      registers,
    });
    this.deliveries = new Counter({ name: 'fhir_rte_resthook_deliveries_total', help: 'REST-hook deliveries by the HTTP status answered', labelNames: ['code'], registers });
    scrapedGauges(probes, registers);
  }

  measured(source: SourceLabel, apply: ApplyBatch): ApplyBatch {
    return async (batch, signal) => {
      const started = performance.now();
      const outcome = await apply(batch, signal);
      const committedMicros = arrivalNow();
      this.applySeconds.observe({ source }, (performance.now() - started) / 1000);
      this.batchEvents.observe({ source }, batch.length);
      this.count(source, outcome);
      this.observeLag(source, batch, committedMicros);
      return outcome;
    };
  }

  relayed(source: SourceLabel, apply: ApplyBatch): ApplyBatch {
    return async (batch, signal) => {
      const outcome = await apply(batch, signal);
      this.count(source, outcome);
      return outcome;
    };
  }

  delivery(statusCode: number): void {
    this.deliveries.inc({ code: String(statusCode) });
  }

  kafkaLag(topic: string, partition: number, lag: number): void {
    this.kafkaLagGauge.set({ topic, partition: String(partition) }, Math.max(0, lag));
    (this.lagPartitions.get(topic) ?? this.lagPartitions.set(topic, new Set()).get(topic)!).add(partition);
  }

  /** A partition another member now consumes is that member's to report: its last lag here would go stale. */
  kafkaAssigned(assignment: Record<string, number[]>): void {
    for (const [topic, partitions] of this.lagPartitions) {
      const kept = new Set(assignment[topic] ?? []);
      for (const partition of partitions) {
        if (kept.has(partition)) continue;
        this.kafkaLagGauge.remove({ topic, partition: String(partition) });
        partitions.delete(partition);
      }
    }
  }

  /** Serves `/metrics` in Prometheus' text format. */
  route(server: FastifyInstance): void {
    server.get('/metrics', async (_request, reply) => {
      const text = await this.registry.metrics();
      return reply.type(this.registry.contentType).send(text);
    });
  }

  private count(source: SourceLabel, outcome: BatchOutcome): void {
    for (const [type, counts] of Object.entries(outcome.byType)) {
      const resource_type = boundedType(type);
      for (const [fate, outcomeLabel] of OUTCOMES) {
        const n = (counts as Counts)[fate];
        if (n) this.events.inc({ source, resource_type, outcome: outcomeLabel }, n);
      }
    }
  }

  private observeLag(source: SourceLabel, batch: ChangeEvent[], committedMicros: bigint): void {
    // One label lookup per batch, not per event: a batch may hold thousands.
    const lag = this.lagSeconds.labelled(source);
    for (const e of batch) {
      if (e.op === 'unreadable') continue;
      const from = e.order.lastUpdatedMicros ?? e.order.arrivalMicros;
      lag.observe(Math.max(0, Number(committedMicros - from) / 1e6));
    }
  }
}

/** Gauges computed when Prometheus scrapes. */
function scrapedGauges(probes: Probes, registers: Registry[]): void {
  new Gauge({
    name: 'fhir_rte_gap_repair_watermark_age_seconds',
    help: "Age of gap repair's watermark: how far back a lost delivery may still wait for repair (absent without gap repair or before its first walk)",
    registers,
    collect() {
      const at = probes.watermark?.();
      if (at) this.set((Date.now() - at.getTime()) / 1000);
      else this.reset();
    },
  });
  new Gauge({
    name: 'fhir_rte_retries_in_progress',
    help: 'Batches waiting out transient database faults now',
    registers,
    collect() {
      this.set(probes.retrying());
    },
  });
  new Gauge({
    name: 'fhir_rte_stall_seconds',
    help: 'How long the oldest batch has been waiting out transient faults (0 when none)',
    registers,
    collect() {
      const since = probes.stalledSince();
      this.set(since ? (Date.now() - since.getTime()) / 1000 : 0);
    },
  });
  new Gauge({
    name: 'fhir_rte_db_pool_connections',
    help: "Database pool connections: in_use, idle, and waiting (requests queued for one)",
    labelNames: ['state'],
    registers,
    collect() {
      const { totalCount, idleCount, waitingCount } = probes.pool;
      this.set({ state: 'in_use' }, totalCount - idleCount);
      this.set({ state: 'idle' }, idleCount);
      this.set({ state: 'waiting' }, waitingCount);
    },
  });
}

/** A label value from a fixed set: R4 resource types, else `(other)` (input may name any type). */
function boundedType(type: string): string {
  return type === '(unknown)' || isResourceType(type) ? type : '(other)';
}
