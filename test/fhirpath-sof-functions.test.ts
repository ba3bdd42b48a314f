/**
 * The SQL on FHIR functions fhir-rte gives FHIRPath (boundaries with written decimal precision and zones,
 * join() of nothing), FHIR JSON parsing that keeps decimal precision, and constants spliced in as literals.
 */
import { describe, expect, it } from 'vitest';
import { compilePath } from '../src/transform/fhirpath.js';
import { boundaryOf } from '../src/transform/fhirpath/boundary.js';
import { parseFhirJson, writtenText } from '../src/events/fhir-json.js';
import { compileView } from '../src/transform/viewdef/compile-view.js';

describe('parseFhirJson', () => {
  it('parses like JSON.parse and remembers numbers a JS number would print differently', () => {
    const text = '{"a":1.0,"b":[1.50,2],"c":"1.0","d":{"e":1e2,"f":0.5}}';
    const o = parseFhirJson(text) as { a: number; b: number[]; c: string; d: { e: number; f: number } };
    expect(o).toEqual(JSON.parse(text));
    expect(writtenText(o, 'a')).toBe('1.0');
    expect(writtenText(o.b, 1)).toBeUndefined();
    expect(writtenText(o.b, 0)).toBe('1.50');
    expect(writtenText(o.d, 'e')).toBe('1e2');
    expect(writtenText(o.d, 'f')).toBeUndefined();
    expect(writtenText(o, 'c')).toBeUndefined();
  });
});

describe('lowBoundary / highBoundary', () => {
  it.each([
    ['1.0', 'decimal', 0.95, 1.05],
    ['1', 'decimal', 0.5, 1.5],
    ['1.587', 'decimal', 1.5865, 1.5875],
    ['-1.0', 'decimal', -1.05, -0.95],
    ['1970-06', 'date', '1970-06-01', '1970-06-30'],
    ['2024-02', 'date', '2024-02-01', '2024-02-29'],
    ['1970', 'date', '1970-01-01', '1970-12-31'],
    ['2010-10-10', 'dateTime', '2010-10-10T00:00:00.000+14:00', '2010-10-10T23:59:59.999-12:00'],
    ['2010-10-10T10:30Z', 'dateTime', '2010-10-10T10:30:00.000Z', '2010-10-10T10:30:59.999Z'],
    ['2015-02-07T13:28:17.239+02:00', 'instant', '2015-02-07T13:28:17.239+02:00', '2015-02-07T13:28:17.239+02:00'],
    ['12:34', 'time', '12:34:00.000', '12:34:59.999'],
  ])('%s (%s)', (text, type, low, high) => {
    expect(boundaryOf(text, type, 'low')).toEqual(low);
    expect(boundaryOf(text, type, 'high')).toEqual(high);
  });

  it('honours a requested precision', () => {
    expect(boundaryOf('1.587', 'decimal', 'low', 2)).toBe(1.58);
    expect(boundaryOf('1.587', 'decimal', 'high', 2)).toBe(1.59);
    expect(boundaryOf('2010-10-10', 'dateTime', 'low', 6)).toBe('2010-10');
  });

  it('uses the precision a decimal was written with', () => {
    const obs = parseFhirJson('{"resourceType":"Observation","valueQuantity":{"value":1.50}}');
    expect(compilePath('value.ofType(Quantity).value.lowBoundary()', { base: 'Observation' }).evaluate(obs)).toEqual([1.495]);
  });
});

describe('join()', () => {
  it("gives '' for nothing on both engines", () => {
    const p = { resourceType: 'Patient', name: [{ family: 'F' }] };
    expect(compilePath("name.given.join(',')", { base: 'Patient' }).evaluate(p)).toEqual(['']);
    expect(compilePath("name.given.join(',') | name.family", { base: 'Patient' }).evaluate(p)).toEqual(['', 'F']);
  });
});

describe('constants', () => {
  const patient = { resourceType: 'Patient', id: 'p', name: [{ family: "O'Brien \\ x" }], birthDate: '1970-06-01' };
  const run = (constant: Record<string, unknown>, path: string) =>
    compileView({ resource: 'Patient', constant: [{ name: 'c', ...constant }], select: [{ column: [{ name: 'v', path }] }] }).rows(patient)[0]!.v;

  it('are typed literals: strings escaped, dates compared as dates', () => {
    expect(run({ valueString: "O'Brien \\ x" }, 'name.family = %c')).toBe(true);
    expect(run({ valueDate: '1970-06-01' }, 'birthDate = %c')).toBe(true);
    expect(run({ valueInteger: -1 }, '%c.abs()')).toBe(1);
    expect(run({ valueDecimal: 2.5 }, '%c * 2')).toBe(5);
    expect(run({ valueBoolean: false }, '%c')).toBe(false);
    expect(run({ valueString: 'x' }, "'%c is not replaced in a string'")).toBe('%c is not replaced in a string');
  });

  it('cannot inject FHIRPath through a value', () => {
    expect(() => run({ valueDate: "1970) or (true" }, 'birthDate = %c')).toThrow(/expected a date/);
    expect(run({ valueString: "x' or true or '" }, 'name.family = %c')).toBe(false);
  });
});
