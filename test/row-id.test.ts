import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { rowId } from '../src/transform/row-id.js';

/** The row ids as first written (SHA-1 fed part by part, version and variant set on the bytes): stored ids must not change. */
function reference(table: string, key: string, position: string): string {
  const h = createHash('sha1').update(table).update('\0').update(key).update('\0').update(position).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.toString('hex', 0, 16);
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

describe('rowId', () => {
  it('keeps the ids of rows already stored', () => {
    expect(rowId('patient', 'Patient/1', '')).toBe('126da77b-fb67-536c-aca6-ff8af4dff147');
    expect(rowId('patient', 'Patient/1', '')).toBe(reference('patient', 'Patient/1', ''));
  });

  it('is the same UUID as hashing the parts in turn, for any text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), (t, k, p) => {
        const id = rowId(t, k, p);
        expect(id).toBe(reference(t, k, p));
        expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      }),
      { numRuns: 2000 },
    );
  });
});
