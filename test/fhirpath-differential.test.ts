/**
 * The FHIRPath fast path agrees with fhirpath.js everywhere: thousands of expressions, generated from a
 * seed by walking resources and the R4 model (members, choices and ofType(), primitives and their
 * `.value`/`.id`/`.extension`, first(), [i], exists(), where(x = 'y'), extension(url), join(), the key
 * functions, boolean operators, and functions the fast path leaves alone), run on the Synthea fixtures and
 * on generated and crafted resources (primitive extensions, multipleBirth[x], decimals as written) through
 * compilePath and through fhirpath.js, and must give deeply equal results, or both fail. Column values
 * (values(), numbers as written) must equal fhirpath.js's too. FHIRPATH_SEED=<n> replays another seed.
 */
import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { random, syntheticPopulation } from '../src/cli/demo/synthetic-data.js';
import type { FhirResource } from '../src/events/change-event.js';
import { parseFhirJson, stringifyFhirJson } from '../src/events/fhir-json.js';
import { compilePath } from '../src/transform/fhirpath.js';
import { child } from '../src/transform/fhirpath/model.js';
import { sqlOnFhirFunctions } from '../src/transform/fhirpath/sof-functions.js';
import { SYNTHEA } from './support/shared.js';

const SEED = Number(process.env.FHIRPATH_SEED ?? 20261130);
const EXPRESSIONS = Number(process.env.FHIRPATH_EXPRESSIONS ?? 3000);
const RESOURCES_PER_EXPRESSION = 6;

/**
 * The Synthea export (the shared one, else the generated one: see support/shared.ts), parsed as fhir-rte
 * parses it, so its numbers keep the text they were written with.
 */
function fixtures(): FhirResource[] {
  return readdirSync(SYNTHEA)
    .filter((f) => f.endsWith('.ndjson'))
    .sort()
    .flatMap((f) => readFileSync(join(SYNTHEA, f), 'utf8').split('\n').filter((l) => l.trim()))
    .map((l) => parseFhirJson(l) as FhirResource)
    .filter((r) => typeof r.resourceType === 'string');
}

/** Resources made for the corners: primitive extensions, nulls in arrays, choices of every kind, decimals. */
const CRAFTED = [
  `{"resourceType":"Patient","id":"p1","active":true,"gender":"female","_gender":{"id":"g1"},"birthDate":"1970-01-02","_birthDate":{"id":"b1","extension":[{"url":"http://example.org/time","valueTime":"10:00:00"},{"url":"http://example.org/d","valueDecimal":1.50}]},"multipleBirthInteger":2,"name":[{"use":"official","family":"Smith","given":["Ann",null,"Zoe"],"_given":[null,{"extension":[{"url":"http://example.org/g","valueString":"B."}]},null]}],"extension":[{"url":"http://example.org/w","valueDecimal":70.0},{"url":"http://example.org/n","valueInteger":12345678901234567890}]}`,
  `{"resourceType":"Patient","id":"p2","multipleBirthBoolean":false,"_multipleBirthBoolean":{"extension":[{"url":"http://example.org/twin","valueBoolean":true}]},"name":[{"family":"Ito","_family":{"id":"f"}},{"given":["Kai"]}],"deceasedDateTime":"2020-02-03T04:05:06Z","telecom":[{"system":"phone","value":"555","rank":1},{"system":"email","value":"a@b.c","rank":2}]}`,
  `{"resourceType":"Patient","id":"p3","multipleBirthInteger":1,"_multipleBirthInteger":{"id":"m"},"deceasedBoolean":true,"birthDate":"1980","address":[{"city":"Oslo","extension":[{"url":"http://hl7.org/fhir/StructureDefinition/geolocation","extension":[{"url":"latitude","valueDecimal":59.9100},{"url":"longitude","valueDecimal":10.750}]}]}]}`,
  `{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1"}],"text":"t"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":1.50,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"},"component":[{"code":{"text":"a"},"valueQuantity":{"value":0.000100,"_value":{"extension":[{"url":"http://example.org/q","valueString":"approx"}]}}},{"code":{"text":"b"},"valueInteger":3},{"code":{"text":"c"},"valueString":"x"},{"code":{"text":"d"},"valueBoolean":true}]}`,
  `{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"big"},"valueQuantity":{"value":12345678901234567890.12},"effectivePeriod":{"start":"2020-01-01"},"referenceRange":[{"low":{"value":1.0},"high":{"value":2.50}}]}`,
  `{"resourceType":"Observation","id":"o3","status":"final","code":{"text":"int"},"valueInteger":-0,"effectiveDateTime":"2021-01-01T00:00:00Z","_effectiveDateTime":{"extension":[{"url":"http://example.org/e","valueString":"e"}]}}`,
  `{"resourceType":"MedicationRequest","id":"m1","status":"active","intent":"order","subject":{"reference":"Patient/p1"},"medicationCodeableConcept":{"text":"x"},"dosageInstruction":[{"timing":{"repeat":{"frequency":3,"period":1.50,"periodUnit":"d","_frequency":{"extension":[{"url":"http://example.org/f","valueString":"f"}]}}}},{"timing":{"repeat":{"frequency":2,"period":1}}}]}`,
];

/** Known corners, run on every crafted resource of their type before the generated expressions. */
const CORNERS: Record<string, string[]> = {
  Patient: [
    'multipleBirth.ofType(integer).value', 'multipleBirth.value', 'multipleBirth.ofType(boolean).extension.value', 'multipleBirth.id',
    'birthDate.id', 'birthDate.extension.url', "birthDate.extension('http://example.org/d').value", 'gender.id', 'gender.value',
    'name.given', 'name.given.id', 'name.given.extension.value', 'name.family.id', 'name.given[1]', 'name.given.count()',
    'extension.value.ofType(decimal)', 'extension.value', "address.extension('http://hl7.org/fhir/StructureDefinition/geolocation').extension('latitude').value.ofType(decimal)",
    'deceased.ofType(boolean)', 'deceased', "telecom.where(system = 'phone').rank", 'telecom.rank.value', 'active.value', 'id.value',
  ],
  Observation: [
    'value.ofType(Quantity).value', 'value.ofType(Quantity).value.value', 'component.value.ofType(Quantity).value', 'component.value',
    'component.value.ofType(integer)', 'component.value.ofType(integer).value', 'value.ofType(integer)', 'value', 'referenceRange.low.value',
    'effective.ofType(dateTime).extension.value', 'effective.ofType(dateTime)', 'component.value.ofType(Quantity).value.extension.value',
  ],
  MedicationRequest: [
    'dosageInstruction.timing.repeat.frequency.exists(value.exists())', 'dosageInstruction.timing.repeat.frequency', 'dosageInstruction.timing.repeat.period',
    'dosageInstruction.timing.repeat.frequency.value', 'dosageInstruction.timing.repeat.where(frequency = 3).period', 'dosageInstruction.timing.repeat.frequency.extension',
  ],
};

type Rnd = () => number;
const pick = <T,>(rnd: Rnd, list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;
const chance = (rnd: Rnd, p: number) => rnd() < p;

/** Elements the walk may name although the data may not hold them (or the model not know them). */
const STRAY = ['id', 'extension', 'value', 'code', 'system', 'display', 'url', 'status', 'text', 'reference', 'use', 'given', 'family', 'nothing'];
const TYPES = ['Quantity', 'CodeableConcept', 'string', 'integer', 'decimal', 'boolean', 'dateTime', 'Period', 'Reference', 'Coding', 'Address', 'Patient', 'FHIR.string', 'System.Integer', 'code'];
const ON_PRIMITIVE = ['value', 'id', 'extension', 'extension.url', 'extension.value', 'length()', 'toString()', 'hasValue()', 'exists()', 'ofType(integer)', 'ofType(string)', 'ofType(boolean)', 'ofType(decimal)', 'not()'];

interface Step {
  text: string;
  /** The JSON values the walk has reached, as a guide (filters are not applied). */
  data: unknown[];
  /** The model path of the items, when the walk knows it. */
  path?: string;
}

function items(values: unknown[]): unknown[] {
  return values.flatMap((v) => (Array.isArray(v) ? v : [v])).filter((v) => v !== null && v !== undefined);
}

/** One member step chosen from the keys the data holds (choices by their name, sometimes narrowed), or a stray name. */
function memberStep(rnd: Rnd, s: Step): Step {
  const objects = s.data.filter((d): d is Record<string, unknown> => typeof d === 'object' && d !== null && !Array.isArray(d));
  const keys = [...new Set(objects.flatMap((o) => Object.keys(o)))].filter((k) => k !== 'resourceType');
  if (!keys.length || chance(rnd, 0.08)) {
    const name = pick(rnd, STRAY);
    return { text: `${s.text}.${name}`, data: items(objects.map((o) => o[name])) };
  }
  const key = pick(rnd, keys);
  const bare = key.startsWith('_') ? key.slice(1) : key;
  const data = items(objects.map((o) => o[bare]));
  const direct = s.path ? child(s.path, bare) : undefined;
  if (!s.path || direct) return { text: `${s.text}.${bare}`, data, path: direct?.kind === 'element' ? direct.type.path : undefined };
  // A choice: `valueQuantity` is `value`, narrowed by ofType() most of the time.
  for (let i = bare.length - 1; i > 0; i--) {
    if (!/[A-Z]/.test(bare[i]!)) continue;
    const c = child(s.path, bare.slice(0, i));
    const option = c?.kind === 'choice' ? c.options.find((o) => o.key === bare) : undefined;
    if (!option) continue;
    const name = bare.slice(0, i);
    if (chance(rnd, 0.3)) return { text: `${s.text}.${name}`, data };
    return { text: `${s.text}.${name}.ofType(${option.type.replace(/^System\./, '')})`, data, path: option.path };
  }
  return { text: `${s.text}.${bare}`, data };
}

function literalFrom(rnd: Rnd, data: unknown[], key: string): string {
  const values = items(data.map((d) => (d && typeof d === 'object' ? (d as Record<string, unknown>)[key] : undefined))).filter((v) => typeof v === 'string');
  const v = values.length && chance(rnd, 0.8) ? (pick(rnd, values) as string) : 'nope';
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function stringKeys(data: unknown[]): string[] {
  const keys = new Set<string>();
  for (const d of data) {
    if (!d || typeof d !== 'object' || Array.isArray(d)) continue;
    for (const [k, v] of Object.entries(d)) if (typeof v === 'string' && /^[a-z]/.test(k)) keys.add(k);
  }
  return [...keys];
}

function extensionUrls(data: unknown[]): string[] {
  return items(data.map((d) => (d && typeof d === 'object' ? (d as { extension?: unknown }).extension : undefined)))
    .map((x) => (x as { url?: unknown }).url)
    .filter((u): u is string => typeof u === 'string');
}

/** A step that keeps the items' type: first(), [i], where(...), extension(url). */
function filterStep(rnd: Rnd, s: Step): Step {
  const keys = stringKeys(s.data);
  const urls = extensionUrls(s.data);
  const choices: Array<() => Step> = [
    () => ({ ...s, text: `${s.text}.first()`, data: s.data.slice(0, 1) }),
    () => ({ ...s, text: `${s.text}.last()`, data: s.data.slice(-1) }),
    () => ({ ...s, text: `${s.text}[${Math.floor(rnd() * 3)}]`, data: s.data.slice(0, 1) }),
    () => ({ ...s, text: `${s.text}.where(${pick(rnd, ['value', 'id', 'extension', 'code', 'system', 'use'])}.exists())` }),
  ];
  if (keys.length) {
    const k = pick(rnd, keys);
    choices.push(() => ({ ...s, text: `${s.text}.where(${k} = ${literalFrom(rnd, s.data, k)})` }));
    choices.push(() => ({ ...s, text: `${s.text}.where(${k} != ${literalFrom(rnd, s.data, k)} and ${pick(rnd, keys)}.exists())` }));
    choices.push(() => ({ ...s, text: `${s.text}.where(${k} = ${literalFrom(rnd, s.data, k)} or ${pick(rnd, keys)}.empty())` }));
  }
  if (s.data.some((d) => typeof d !== 'object')) {
    const v = pick(rnd, s.data.filter((d) => typeof d !== 'object'));
    choices.push(() => ({ ...s, text: `${s.text}.where($this = ${typeof v === 'string' ? `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'` : String(v)})` }));
  }
  if (urls.length || chance(rnd, 0.2)) {
    const url = urls.length ? pick(rnd, urls) : 'http://example.org/none';
    const data = items(s.data.map((d) => (d as { extension?: unknown } | null)?.extension));
    choices.push(() => ({ text: `${s.text}.extension('${url}')`, data, path: 'Extension' }));
  }
  return pick(rnd, choices)();
}

/** A last step: aggregates, conversions, the key functions, members of primitives. */
function finalStep(rnd: Rnd, s: Step): string {
  const keys = stringKeys(s.data);
  const choices: Array<() => string> = [
    () => `${s.text}.exists()`,
    () => `${s.text}.empty()`,
    () => `${s.text}.count()`,
    () => `${s.text}.join(${chance(rnd, 0.5) ? "','" : ''})`,
    () => `${s.text}.getReferenceKey(${chance(rnd, 0.3) ? 'Patient' : ''})`,
    () => `${s.text}.not()`,
    () => `${s.text}.ofType(${pick(rnd, TYPES)})`,
    () => `${s.text}.${pick(rnd, ['distinct()', 'tail()', 'single()', 'toString()', 'hasValue()', 'is(string)'])}`,
    () => `${s.text}.exists(${pick(rnd, ['value', 'id', 'extension', 'use'])}.exists())`,
    () => `${s.text}.${pick(rnd, ON_PRIMITIVE)}`,
  ];
  if (keys.length) choices.push(() => `${s.text}.exists(${pick(rnd, keys)} = ${literalFrom(rnd, s.data, pick(rnd, keys))})`);
  return pick(rnd, choices)();
}

function expressionOn(rnd: Rnd, resource: FhirResource): string {
  let s: Step = { text: chance(rnd, 0.2) ? resource.resourceType : '', data: [resource], path: resource.resourceType };
  const steps = 1 + Math.floor(rnd() * 4);
  for (let i = 0; i < steps; i++) {
    // Past a primitive, or nothing, a walk mostly stops: finalStep() names a primitive's members.
    if (i > 0 && !s.data.some((d) => typeof d === 'object') && chance(rnd, 0.9)) break;
    s = memberStep(rnd, s);
    if (chance(rnd, 0.3)) s = filterStep(rnd, s);
  }
  let text = (chance(rnd, 0.35) ? finalStep(rnd, s) : s.text).replace(/^\./, '');
  if (chance(rnd, 0.03)) text = pick(rnd, ['getResourceKey()', 'id', '$this.id', 'extension.exists()', '%rowIndex', '%resource.id']);
  if (chance(rnd, 0.1)) {
    text = `${text}.exists() ${pick(rnd, ['and', 'or'])} ${expressionOn(rnd, resource)}.exists()`;
  } else if (chance(rnd, 0.05)) {
    text = `(${text}.count() = ${Math.floor(rnd() * 3)}).not()`;
  }
  return text;
}

type Outcome = { value: unknown } | { error: true };
function outcome(f: () => unknown): Outcome {
  try {
    return { value: f() };
  } catch {
    return { error: true };
  }
}

interface Mismatch {
  expression: string;
  base: string;
  resource: string;
  what: string;
  fast: unknown;
  fhirpathJs: unknown;
}

function differences(expression: string, type: string, resources: FhirResource[]): { mismatches: Mismatch[]; fast: boolean } {
  const reference = outcome(() => fhirpath.compile({ base: type, expression }, r4, { userInvocationTable: sqlOnFhirFunctions }));
  const typed = outcome(() => compilePath(expression, { base: type }));
  const untyped = outcome(() => compilePath(expression));
  const interpreted = outcome(() => compilePath(expression, { base: type, interpretOnly: true }));
  const mismatches: Mismatch[] = [];
  const report = (what: string, r: FhirResource | undefined, fast: unknown, js: unknown) =>
    mismatches.push({ expression, base: type, resource: r ? stringifyFhirJson(r) : '-', what, fast, fhirpathJs: js });
  if ('error' in reference || 'error' in typed || 'error' in untyped || 'error' in interpreted) {
    if (!('error' in reference && 'error' in typed && 'error' in untyped)) report('compilation', undefined, typed, reference);
    return { mismatches, fast: false };
  }
  const js = reference.value as (r: unknown) => unknown[];
  const path = typed.value as ReturnType<typeof compilePath>;
  const plain = untyped.value as ReturnType<typeof compilePath>;
  const exact = interpreted.value as ReturnType<typeof compilePath>;
  for (const r of resources) {
    const want = outcome(() => js(r));
    const checks: Array<[string, Outcome, Outcome]> = [
      ['evaluate', outcome(() => path.evaluate(r)), want],
      ['evaluate without base', outcome(() => plain.evaluate(r)), want],
      ['values', outcome(() => path.values(r)), outcome(() => exact.values(r))],
    ];
    for (const [what, got, expected] of checks) {
      if (!isDeepStrictEqual(got, expected)) report(what, r, got, expected);
    }
  }
  return { mismatches, fast: path.fast };
}

describe('FHIRPath fast path and fhirpath.js agree on generated expressions', () => {
  const synthea = fixtures();
  const crafted = CRAFTED.map((t) => parseFhirJson(t) as FhirResource);
  const synthetic = syntheticPopulation(4, SEED).resources;
  const all = [...synthea, ...synthetic, ...crafted];
  const byType = new Map<string, FhirResource[]>();
  for (const r of all) byType.set(r.resourceType, [...(byType.get(r.resourceType) ?? []), r]);

  it(`${EXPRESSIONS} expressions over ${all.length} resources (seed ${SEED})`, () => {
    const rnd = random(SEED);
    const mismatches: Mismatch[] = [];
    for (const [type, expressions] of Object.entries(CORNERS)) {
      for (const e of expressions) mismatches.push(...differences(e, type, crafted.filter((r) => r.resourceType === type)).mismatches);
    }
    const seen = new Set<string>();
    let fast = 0;
    for (let n = 0; n < EXPRESSIONS; n++) {
      // The corners are few among the fixtures: a quarter of the expressions start from them.
      const guide = pick(rnd, pick(rnd, [synthea.length ? synthea : synthetic, synthea.length ? synthea : synthetic, synthetic, crafted]));
      const expression = expressionOn(rnd, guide);
      const key = `${guide.resourceType}:${expression}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const others = byType.get(guide.resourceType)!;
      const sample = [guide, ...Array.from({ length: RESOURCES_PER_EXPRESSION - 1 }, () => pick(rnd, others))];
      const d = differences(expression, guide.resourceType, sample);
      if (d.fast) fast++;
      mismatches.push(...d.mismatches);
    }
    if (mismatches.length) {
      const byExpression = new Map(mismatches.map((m) => [`${m.base}: ${m.expression} (${m.what})`, m]));
      console.error(`FHIRPath differential test, seed ${SEED} (FHIRPATH_SEED=${SEED} replays it): ${byExpression.size} expressions differ:`);
      for (const k of [...byExpression.keys()].slice(0, 40)) console.error(`  ${k}`);
      console.error('the first one:', JSON.stringify(mismatches[0], null, 1));
    }
    expect(mismatches.slice(0, 3), `seed ${SEED}`).toEqual([]);
    // The test means something only if the fast path ran often, and left something to fhirpath.js.
    console.log(`seed ${SEED}: ${seen.size} expressions, ${fast} of them on the fast path`);
    expect(fast).toBeGreaterThan(seen.size * 0.4);
    expect(fast).toBeLessThan(seen.size);
  });
});
