import type { ChangeEvent, DeleteEvent } from '../../events/change-event.js';

/**
 * What the receiver asks of the FHIR server it receives from; implemented by the FHIR-server client (gap
 * repair, delete resolution) and matched structurally, so the receiver works without one.
 */

/** Starts (or coalesces into one in progress) a catch-up read of the server's `_history`. */
export interface CatchUp {
  request(reason: string): void;
}

/**
 * Orders a DELETE delivery by the server: a 410 with `Location .../_history/N` gives a delete at version N;
 * a 200 gives the newer version as an upsert; unreachable or 404 gives back the unversioned delete it was handed.
 */
export type ResolveDelete = (event: DeleteEvent, signal?: AbortSignal) => Promise<ChangeEvent>;
