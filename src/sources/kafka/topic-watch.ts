import type { Admin } from 'kafkajs';
import type { Log } from './log.js';

/**
 * kafkajs matches a subscription's regular expression once, against the topics that exist when it
 * subscribes. To follow a `topicPattern` as topics come and go, fhir-rte lists the matching topics itself,
 * subscribes to exactly those, and watches for new ones; a new match ends the session so that the next one
 * subscribes to it (the group rebalances once; committed offsets carry over).
 */

/** The topics whose names match, Kafka's internal ones (`__consumer_offsets`…) left out, sorted. */
export async function topicsMatching(admin: Admin, pattern: RegExp): Promise<string[]> {
  const all = await admin.listTopics();
  return all.filter((t) => !t.startsWith('__') && pattern.test(t)).sort();
}

/** Waits until at least one topic matches (polling), or the signal aborts (then []). */
export async function awaitMatchingTopics(admin: Admin, pattern: RegExp, everyMs: number, signal: AbortSignal, log: Log): Promise<string[]> {
  let told = false;
  while (!signal.aborted) {
    const topics = await topicsMatching(admin, pattern);
    if (topics.length) return topics;
    if (!told) log.warn({ topicPattern: pattern.source }, 'no topic matches topicPattern yet; waiting for one');
    told = true;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, everyMs);
      signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
  }
  return [];
}

/** Polls for matching topics beyond `subscribed`; calls `onNew` once with them. Returns the stop function. */
export function watchForNewTopics(admin: Admin, pattern: RegExp, subscribed: string[], everyMs: number, onNew: (added: string[]) => void, log: Log): () => void {
  const known = new Set(subscribed);
  let stopped = false;
  const timer = setInterval(() => {
    topicsMatching(admin, pattern).then(
      (topics) => {
        const added = topics.filter((t) => !known.has(t));
        if (added.length && !stopped) {
          stopped = true;
          clearInterval(timer);
          onNew(added);
        }
      },
      (err: unknown) => log.debug({ error: (err as Error).message }, 'listing topics failed; trying again later'),
    );
  }, everyMs);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
