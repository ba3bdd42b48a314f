import { createHash } from 'node:crypto';

/**
 * Deterministic row key: a name-based (version 5 style, SHA-1) UUID of table, resource and row position.
 * The same resource position keeps its id across versions, so BI tools can follow a row over time.
 */
export function rowId(table: string, resourceKey: string, position: string): string {
  const h = createHash('sha1').update(table).update('\0').update(resourceKey).update('\0').update(position).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.toString('hex', 0, 16);
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}
