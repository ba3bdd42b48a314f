/**
 * Realistic input for the flatten benchmark and the fast-path tests: the Synthea export (the shared
 * fixtures when present, see test/support/shared.ts), plus Observations in Synthea's own shape (that export carries none),
 * generated deterministically from its Encounters: vital signs with valueQuantity, a blood pressure panel
 * with components, and a smoking status with valueCodeableConcept.
 */
import { readFileSync } from 'node:fs';
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

export function generateObservations(encounters: FhirResource[]): FhirResource[] {
  const rnd = random(42);
  const out: FhirResource[] = [];
  let n = 0;
  for (const e of encounters) {
    const subject = e.subject as { reference: string };
    const when = (e.period as { start: string }).start;
    const base = (code: string, display: string, cat: [string, string]): FhirResource => ({
      resourceType: 'Observation',
      id: `obs-${(n++).toString(16).padStart(8, '0')}`,
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
