/**
 * Realistic input for the flatten benchmark and the fast-path tests: the Synthea export (the shared
 * fixtures when present, see test/support/shared.ts), plus Observations in Synthea's own shape (that export carries none),
 * generated deterministically from its Encounters: vital signs with valueQuantity, a blood pressure panel
 * with components, and a smoking status with valueCodeableConcept.
 */
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import type { FhirResource } from '../src/events/change-event.js';
import { SYNTHEA } from '../test/support/shared.js';

export function readSynthea(type: string, dir = SYNTHEA): FhirResource[] {
  return readFileSync(join(dir, `${type}.000.ndjson`), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as FhirResource);
}

/** A small linear congruential generator: the same Observations on every run. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';

function quantity(value: number, unit: string) {
  return { value: Math.round(value * 10) / 10, unit, system: UCUM, code: unit };
}

function coded(system: string, code: string, display: string) {
  return { coding: [{ system, code, display }], text: display };
}

function category(code: string, display: string) {
  return [{ coding: [{ system: CATEGORY, code, display }] }];
}

export function generateObservations(encounters: FhirResource[], idPrefix = 'obs-'): FhirResource[] {
  const rnd = random(42);
  const out: FhirResource[] = [];
  let n = 0;
  for (const e of encounters) {
    const subject = e.subject as { reference: string };
    const when = (e.period as { start: string }).start;
    const base = (code: string, display: string, cat: [string, string]): FhirResource => ({
      resourceType: 'Observation',
      id: `${idPrefix}${(n++).toString(16).padStart(8, '0')}`,
      meta: { profile: ['http://hl7.org/fhir/us/core/StructureDefinition/us-core-vital-signs'] } as FhirResource['meta'],
      status: 'final',
      category: category(cat[0], cat[1]),
      code: coded(LOINC, code, display),
      subject: { reference: subject.reference },
      encounter: { reference: `Encounter/${e.id}` },
      effectiveDateTime: when,
      issued: when.replace(/([+-]\d{2}:\d{2})$/, '.123$1'),
    });
    const vital: [string, string] = ['vital-signs', 'Vital signs'];
    out.push({ ...base('8302-2', 'Body Height', vital), valueQuantity: quantity(150 + rnd() * 40, 'cm') });
    out.push({ ...base('29463-7', 'Body Weight', vital), valueQuantity: quantity(50 + rnd() * 50, 'kg') });
    out.push({
      ...base('85354-9', 'Blood pressure panel with all children optional', vital),
      component: [
        { code: coded(LOINC, '8462-4', 'Diastolic Blood Pressure'), valueQuantity: quantity(60 + rnd() * 30, 'mm[Hg]') },
        { code: coded(LOINC, '8480-6', 'Systolic Blood Pressure'), valueQuantity: quantity(100 + rnd() * 50, 'mm[Hg]') },
      ],
    });
    const smoker = rnd() < 0.2;
    out.push({
      ...base('72166-2', 'Tobacco smoking status', ['social-history', 'Social History']),
      valueCodeableConcept: smoker
        ? coded('http://snomed.info/sct', '449868002', 'Smokes tobacco daily (finding)')
        : coded('http://snomed.info/sct', '266919005', 'Never smoked tobacco (finding)'),
    });
  }
  return out;
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/**
 * A Synthea export of at least `minResources` resources, written as `<Type>.000.ndjson` per type into `dir`
 * (as a Bulk Data export lays it out), line by line: the Synthea population (with its generated Observations)
 * repeated, each copy's UUIDs (ids, references, identifiers) renumbered consistently, so every copy is a
 * population of its own with real references inside it. Returns the lines written per type.
 */
export async function writeSyntheaExport(dir: string, minResources: number, from = SYNTHEA): Promise<Map<string, number>> {
  const types = readdirSync(from).filter((f) => /^[A-Z]\w+\.000\.ndjson$/.test(f)).map((f) => f.replace('.000.ndjson', ''));
  const texts = new Map(types.map((t) => [t, readFileSync(join(from, `${t}.000.ndjson`), 'utf8').split('\n').filter((l) => l.trim())]));
  const encounters = (texts.get('Encounter') ?? []).map((l) => JSON.parse(l) as FhirResource);
  const perCopy = [...texts.values()].reduce((n, l) => n + l.length, 0) + encounters.length * 4;
  const copies = Math.ceil(minResources / perCopy);
  const counts = new Map<string, number>();
  const write = async (type: string, lines: (copy: number) => string[]) => {
    const out = createWriteStream(join(dir, `${type}.000.ndjson`));
    for (let copy = 0; copy < copies; copy++) {
      for (const line of lines(copy)) if (!out.write(`${renumbered(line, copy)}\n`)) await once(out, 'drain');
    }
    await new Promise((resolve) => out.end(resolve));
    counts.set(type, (lines(0).length * copies));
  };
  for (const [type, lines] of texts) await write(type, () => lines);
  // One generation serves every copy: renumbering the UUIDs moves each Observation's subject and encounter.
  const observations = generateObservations(encounters).map((o) => JSON.stringify(o));
  await write('Observation', (copy) => observations.map((l) => l.replaceAll('"id":"obs-', `"id":"obs-${copy}-`)));
  return counts;
}

/** Copy n with the 4 hex digits after each UUID's last dash set to n (copy 0 too, or a UUID of it could be one of another copy's). */
function renumbered(line: string, copy: number): string {
  const tag = copy.toString(16).padStart(4, '0');
  return line.replace(UUID, (u) => `${u.slice(0, 24)}${tag}${u.slice(28)}`);
}
