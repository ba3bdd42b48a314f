import type { ChangeEvent } from '../events/change-event.js';
import type { BatchOutcome } from '../sink/sink.js';

/**
 * Applies a batch; resolves after the transaction that applied or dead-lettered it has committed. The
 * signal lets a source give up waiting (shutdown, a revoked partition): retries stop and nothing commits.
 */
export type ApplyBatch = (batch: ChangeEvent[], signal?: AbortSignal) => Promise<BatchOutcome>;

/**
 * A Source turns deliveries into ChangeEvents and acknowledges them (Kafka offset, HTTP 2xx, file progress)
 * only after `apply` resolves. It never writes SQL. `run` returns when the input ends or the signal aborts.
 */
export interface Source {
  run(apply: ApplyBatch, signal: AbortSignal): Promise<void>;
}
