import type { NotificationStatus } from './notification.js';

/** Event numbers of one subscription that no notification received so far carried. */
export interface MissedEvents {
  subscription: string;
  /** The first and last number missing (those between may have come). */
  first: number;
  last: number;
}

/** One notification's claim on the sequence, settled when it has been answered. */
export interface Ticket {
  missed?: MissedEvents;
  /** `acknowledged`: the notification's changes are durable (2xx); only then does the sequence move on. */
  settle(acknowledged: boolean): void;
}

interface Sequence {
  /** Every event up to here was acknowledged, or reported missed (and so given to gap repair). */
  highest: number;
  /** Numbers carried by notifications being applied now, with how many carry each. */
  inFlight: Map<number, number>;
}

/**
 * The one place that follows each topic-based subscription's event numbers (in memory: after a restart the
 * first notification of a subscription sets its start, and the repair at start covers the time between).
 * R5 defines `eventsSinceSubscriptionStart` as "a unique and monotonically-increasing event number for a
 * subscription" on channels without guaranteed delivery (REST-hook), counted for every event whether or not
 * it was delivered, and not for handshakes or heartbeats (https://hl7.org/fhir/R5/subscriptionstatus-definitions.html);
 * so a number above the next expected one, in an event notification or a heartbeat, means events were
 * dropped. Numbers of notifications still being applied count as received, so concurrent deliveries do not
 * look like gaps; a late delivery (a number at or below the highest) is simply applied.
 */
export class EventNumbers {
  private readonly sequences = new Map<string, Sequence>();

  receive(status: NotificationStatus): Ticket {
    const key = status.subscription;
    if (key === undefined) return { settle: () => {} };
    const numbers = status.eventNumbers;
    const top = Math.max(status.eventsSinceSubscriptionStart ?? 0, ...numbers);
    // A handshake starts (or restarts) a subscription: its count is where numbering stands.
    if (status.type === 'handshake') {
      this.sequences.set(key, { highest: top, inFlight: new Map() });
      return { settle: () => {} };
    }
    let seq = this.sequences.get(key);
    if (!seq) {
      seq = { highest: numbers.length ? Math.min(...numbers) - 1 : top, inFlight: new Map() };
      this.sequences.set(key, seq);
    }
    const missed = this.missed(key, seq, top, numbers);
    for (const n of numbers) seq.inFlight.set(n, (seq.inFlight.get(n) ?? 0) + 1);
    const carried = seq;
    return {
      ...(missed ? { missed } : {}),
      settle: (acknowledged) => {
        for (const n of numbers) {
          const left = (carried.inFlight.get(n) ?? 1) - 1;
          if (left > 0) carried.inFlight.set(n, left);
          else carried.inFlight.delete(n);
        }
        // A reported gap is gap repair's now, so the sequence moves past it too.
        if (acknowledged) carried.highest = Math.max(carried.highest, top);
      },
    };
  }

  private missed(subscription: string, seq: Sequence, top: number, numbers: number[]): MissedEvents | undefined {
    if (top <= seq.highest) return undefined;
    const accounted = new Set([...numbers, ...seq.inFlight.keys()].filter((n) => n > seq.highest && n <= top));
    if (top - seq.highest === accounted.size) return undefined;
    // Each walk passes at most accounted.size numbers before it finds one missing.
    let first = seq.highest + 1;
    while (accounted.has(first)) first++;
    let last = top;
    while (accounted.has(last)) last--;
    return { subscription, first, last };
  }
}
