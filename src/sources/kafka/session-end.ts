import type { Consumer } from 'kafkajs';
import type { Log } from './log.js';

export type SessionEnd = 'shutdown' | 'topics-changed';

export interface SessionEnding {
  /** Resolves with why the session should end; rejects when kafkajs gave the consumer up, or with `fail`'s error. */
  ended: Promise<SessionEnd>;
  end(reason: SessionEnd): void;
  /** Ends the session with an error (a SinkFailure, on which `run` stops instead of starting a new consumer). */
  fail(err: Error): void;
  dispose(): void;
}

/**
 * When one consumer session is over: on shutdown (the signal), on new topics, or when kafkajs crashed the
 * consumer without restarting it. On shutdown the transaction in flight may finish (it is then committed),
 * but not forever: a database that is away would hold shutdown hostage, so after `graceMs` `abandon`
 * aborts it and its offsets stay uncommitted.
 */
export function sessionEnding(consumer: Consumer, signal: AbortSignal, graceMs: number, abandon: AbortController, log: Log): SessionEnding {
  let grace: NodeJS.Timeout | undefined;
  let end: (reason: SessionEnd) => void = () => {};
  let fail: (err: Error) => void = () => {};
  const onAbort = () => {
    grace = setTimeout(() => abandon.abort(new Error('shutdown: transaction abandoned')), graceMs);
    end('shutdown');
  };
  const ended = new Promise<SessionEnd>((resolve, reject) => {
    end = resolve;
    fail = reject;
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (!payload.restart) reject(payload.error);
      else log.warn({ error: payload.error.message }, 'kafka consumer crashed; kafkajs restarts it');
    });
  });
  // A crash before `ended` is awaited (during connect) must not become an unhandled rejection.
  ended.catch(() => {});
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return {
    ended,
    end: (reason) => end(reason),
    fail: (err) => fail(err),
    dispose: () => {
      signal.removeEventListener('abort', onAbort);
      if (grace) clearTimeout(grace);
    },
  };
}
