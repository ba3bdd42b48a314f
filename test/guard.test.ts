import { describe, expect, it } from 'vitest';
import { compare, instantMicros, microsToIso, raise, type Watermark } from '../src/sink/guard.js';
import { ConcurrentChange, classify } from '../src/sink/postgres/fault.js';
import { StatementError } from '../src/sink/postgres/statements.js';

const at = (iso: string) => instantMicros(iso)!;
const mark = (m: Partial<Watermark>): Watermark => ({ versionId: null, lastUpdatedMicros: null, afterVersion: false, arrivalMicros: null, ...m });

describe('the comparison', () => {
  it('orders by numeric versionId when both have one, whatever the times say', () => {
    expect(compare({ versionId: '10', timeMicros: at('2020-01-01T00:00:00Z') }, mark({ versionId: '9', lastUpdatedMicros: at('2024-01-01T00:00:00Z') }))).toBe('newer');
    expect(compare({ versionId: '9' }, mark({ versionId: '10' }))).toBe('older');
    expect(compare({ versionId: '3' }, mark({ versionId: '3' }))).toBe('same');
    expect(compare({ versionId: '03' }, mark({ versionId: '3' }))).toBe('same');
  });

  it('calls the same non-numeric version the same, with or without a time', () => {
    expect(compare({ versionId: 'abc' }, mark({ versionId: 'abc', lastUpdatedMicros: at('2024-01-01T00:00:00Z') }))).toBe('same');
    expect(compare({ versionId: 'abc', timeMicros: at('2025-01-01T00:00:00Z') }, mark({ versionId: 'abc' }))).toBe('same');
  });

  it('orders by lastUpdated, to the microsecond, when versions are not both numeric', () => {
    expect(compare({ versionId: 'b', timeMicros: at('2024-01-01T00:00:00.000002Z') }, mark({ versionId: 'a', lastUpdatedMicros: at('2024-01-01T00:00:00.000001Z') }))).toBe('newer');
    expect(compare({ timeMicros: at('2024-01-01T00:00:00+01:00') }, mark({ lastUpdatedMicros: at('2023-12-31T23:30:00Z') }))).toBe('older');
    expect(compare({ timeMicros: at('2024-01-01T00:00:00Z') }, mark({ lastUpdatedMicros: at('2024-01-01T00:00:00.000Z') }))).toBe('same');
  });

  it('answers incomparable when neither version nor time can be compared', () => {
    expect(compare({}, mark({ versionId: '5', lastUpdatedMicros: at('2024-01-01T00:00:00Z') }))).toBe('incomparable');
    expect(compare({ versionId: 'x' }, mark({ versionId: 'y' }))).toBe('incomparable');
    expect(compare({ versionId: '5' }, mark({}))).toBe('incomparable');
  });

  it('against a state that lies after its version: at or below it is older, above it time decides', () => {
    const tombstone = mark({ versionId: '3', lastUpdatedMicros: at('2024-01-01T00:05:00Z'), afterVersion: true });
    expect(compare({ versionId: '4', timeMicros: at('2024-01-01T00:04:00Z') }, tombstone)).toBe('older');
    expect(compare({ versionId: '4', timeMicros: at('2024-01-01T00:06:00Z') }, tombstone)).toBe('newer');
    expect(compare({ versionId: '3', timeMicros: at('2024-01-01T00:06:00Z') }, tombstone)).toBe('older');
    expect(compare({ versionId: '3' }, tombstone)).toBe('older');
    expect(compare({ versionId: '4' }, tombstone)).toBe('incomparable');
  });
});

describe('the watermark', () => {
  const t = (minute: number) => at(`2024-01-01T00:0${minute}:00Z`);
  it('never goes down: an event without version and time leaves both, and arrival only rises', () => {
    const v5 = raise(undefined, { versionId: '5', timeMicros: t(5) }, 100n);
    expect(raise(v5, {}, 200n)).toEqual(mark({ versionId: '5', lastUpdatedMicros: t(5), arrivalMicros: 200n }));
    expect(raise(v5, {}, 50n).arrivalMicros).toBe(100n);
    // A version without a time keeps the time known as a floor.
    expect(raise(v5, { versionId: '6' }, 300n)).toEqual(mark({ versionId: '6', lastUpdatedMicros: t(5), arrivalMicros: 300n }));
  });

  it('a change with a time but no version (a delete dated by its arrival) leaves the state after the version known', () => {
    const v3 = raise(undefined, { versionId: '3', timeMicros: t(3) }, 1n);
    expect(raise(v3, { timeMicros: t(5) }, 2n)).toEqual(mark({ versionId: '3', lastUpdatedMicros: t(5), afterVersion: true, arrivalMicros: 2n }));
    expect(raise(raise(v3, { timeMicros: t(5) }, 2n), { versionId: '4', timeMicros: t(6) }, 3n).afterVersion).toBe(false);
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
