import { describe, expect, it } from 'vitest';
import { instantMicros, isNewer, microsToIso } from '../src/sink/guard.js';
import { ConcurrentChange, classify } from '../src/sink/postgres/fault.js';
import { StatementError } from '../src/sink/postgres/statements.js';

const at = (iso: string) => instantMicros(iso)!;

describe('the version guard', () => {
  it('orders by numeric versionId when both have one, whatever the times say', () => {
    expect(isNewer({ versionId: '10', lastUpdatedMicros: at('2020-01-01T00:00:00Z') }, { versionId: '9', lastUpdatedMicros: at('2024-01-01T00:00:00Z') })).toBe(true);
    expect(isNewer({ versionId: '9' }, { versionId: '10' })).toBe(false);
    expect(isNewer({ versionId: '3' }, { versionId: '3' })).toBe(false);
  });

  it('orders by lastUpdated, to the microsecond, when versions are not both numeric', () => {
    expect(isNewer({ versionId: 'b', lastUpdatedMicros: at('2024-01-01T00:00:00.000002Z') }, { versionId: 'a', lastUpdatedMicros: at('2024-01-01T00:00:00.000001Z') })).toBe(true);
    expect(isNewer({ lastUpdatedMicros: at('2024-01-01T00:00:00+01:00') }, { lastUpdatedMicros: at('2023-12-31T23:30:00Z') })).toBe(false);
    expect(isNewer({ lastUpdatedMicros: at('2024-01-01T00:00:00Z') }, { lastUpdatedMicros: at('2024-01-01T00:00:00.000Z') })).toBe(false);
  });

  it('applies what cannot be compared, in arrival order, and anything over no state', () => {
    expect(isNewer({}, { versionId: '5', lastUpdatedMicros: at('2024-01-01T00:00:00Z') })).toBe(true);
    expect(isNewer({ versionId: '1' }, undefined)).toBe(true);
  });

  it('compares with a tombstone whose delete had no version by time, and by the deleted version only for version-only events', () => {
    const tombstone = { lastUpdatedMicros: at('2024-01-01T00:05:00Z'), priorVersionId: '3' };
    expect(isNewer({ versionId: '4', lastUpdatedMicros: at('2024-01-01T00:04:00Z') }, tombstone)).toBe(false);
    expect(isNewer({ versionId: '4', lastUpdatedMicros: at('2024-01-01T00:06:00Z') }, tombstone)).toBe(true);
    expect(isNewer({ versionId: '3' }, tombstone)).toBe(false);
    expect(isNewer({ versionId: '4' }, tombstone)).toBe(true);
  });

  it('converts instants to microseconds and back, also before 1970', () => {
    expect(microsToIso(at('2024-05-06T07:08:09.123456Z'))).toBe('2024-05-06T07:08:09.123456Z');
    expect(microsToIso(at('1969-12-31T23:59:59.999500Z'))).toBe('1969-12-31T23:59:59.999500Z');
    expect(instantMicros('2024-05-06')).toBeUndefined();
  });
});

describe('fault classification', () => {
  it('retries what the database may recover from, isolates what one record caused, stops on the rest', () => {
    for (const code of ['08006', '57P01', '40001', '40P01', '53300', 'ECONNREFUSED', 'ECONNRESET']) expect(classify({ code })).toBe('transient');
    expect(classify(new Error('Connection terminated unexpectedly'))).toBe('transient');
    expect(classify(new ConcurrentChange('raced'))).toBe('transient');
    for (const code of ['22P02', '22021', '23505', '23502', '54000']) expect(classify({ code })).toBe('poison');
    expect(classify(new StatementError('patient', { code: '22008' }))).toBe('poison');
    for (const code of ['42P01', '42703', '42501']) expect(classify({ code })).toBe('fatal');
  });
});
