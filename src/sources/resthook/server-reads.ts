/**
 * What the receiver asks of the FHIR server it receives from, when one is configured: gap repair
 * (gap-repair.ts) and delete resolution (src/fhir-client/resolve-delete.ts). The receiver works without.
 */
export type { ResolveDelete } from '../../fhir-client/resolve-delete.js';

/** Starts (or coalesces into one in progress) a catch-up read of the server's `_history`. */
export interface CatchUp {
  request(reason: string): void;
}
