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

/**
 * Runs sources side by side until every one has ended. The first to fail aborts `stop`, so the others
 * stop taking input and drain (their transactions in flight commit or are abandoned); only once all have
 * settled does this reject, with that first failure, so what they share (the database pool, the HTTP
 * server, the relay) may then be closed.
 */
export async function runSources(runs: ((signal: AbortSignal) => Promise<void>)[], stop: AbortController): Promise<void> {
  let first: { error: unknown } | undefined;
  await Promise.allSettled(
    runs.map((run) =>
      run(stop.signal).catch((err: unknown) => {
        first ??= { error: err };
        stop.abort();
      }),
    ),
  );
  if (first) throw first.error;
}
