/**
 * The fast path must give exactly what fhirpath.js gives. Every expression below runs on every resource of
 * its type in the Synthea fixtures (plus generated Observations) through compilePath and through
 * fhirpath.js itself (with the SQL on FHIR functions that fhir-rte gives it), and the results must be
 * equal; the ones marked fast must not use the interpreter.
 */
import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import { describe, expect, it } from 'vitest';
import { generateObservations, readSynthea } from '../bench/_synthea.js';
import type { FhirResource } from '../src/events/change-event.js';
import { compilePath } from '../src/transform/fhirpath.js';
import { sqlOnFhirFunctions } from '../src/transform/fhirpath/sof-functions.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SYNTHEA } from './support/shared.js';

/** [expression, must run on the fast path] per resource type. */
const EXPRESSIONS: Record<string, Array<[string, boolean]>> = {
  '*': [
    ['id', true],
    ['meta.profile', true],
    ['extension.url', true],
    ['getResourceKey()', true],
    ["identifier.where(system = 'https://github.com/synthetichealth/synthea').value.first()", true],
    ["identifier.value.join('|')", true],
    ['identifier.exists()', true],
    ['contained.exists()', true],
    ['text.status', true],
    ['extension.exists() and id.exists()', true],
    ['identifier.count()', true],
    ['meta.profile.first().length()', false],
  ],
  Patient: [
    ['name.family', true],
    ['name.given', true],
    ["name.where(use = 'official').given.first()", true],
    ["name.given.join(' ')", true],
    ['gender', true],
    ['birthDate', true],
    ['deceased.ofType(dateTime)', true],
    ['deceased.exists()', true],
    ['deceased', true],
    ['address.city', true],
    ["address.extension('http://hl7.org/fhir/StructureDefinition/geolocation').extension('latitude').value.ofType(decimal)", true],
    ["telecom.where(system = 'phone').value", true],
    ['maritalStatus.coding.code', true],
    ['communication.language.coding.first().code', true],
    ['multipleBirth.ofType(boolean)', true],
    ['multipleBirth.ofType(integer)', true],
    ['extension.value.ofType(string)', true],
    ['extension.value.ofType(Address).city', true],
    ["extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-race').extension('ombCategory').value.ofType(Coding).code", true],
    ["name.where(use = 'official' and family.exists()).family", true],
    ["name.family.exists() and gender = 'female'", true],
    ["(gender = 'male').not()", true],
    ["gender != 'male'", true],
    ['name[0].given[1]', true],
    ['Patient.name.prefix', true],
    ["identifier.where(type.coding.code = 'MR').value", true],
    ['link.other.getReferenceKey()', true],
    ['birthDate < @1950-01-01', false],
    ["name.select(given.first() + ' ' + family)", false],
  ],
  Encounter: [
    ['status', true],
    ['class.code', true],
    ['type.coding.code', true],
    ["type.coding.where(system = 'http://snomed.info/sct').code.first()", true],
    ['subject.getReferenceKey(Patient)', true],
    ['subject.getReferenceKey(Practitioner)', true],
    ['participant.individual.getReferenceKey()', true],
    ['period.start', true],
    ['reasonCode.coding.display', true],
    ['serviceProvider.reference', true],
    ['hospitalization.dischargeDisposition.coding.code', true],
    ['location.location.display.first()', true],
  ],
  Condition: [
    ['clinicalStatus.coding.code', true],
    ['verificationStatus.coding.first().code', true],
    ['code.coding.code', true],
    ['code.text', true],
    ['onset.ofType(dateTime)', true],
    ['abatement.ofType(dateTime)', true],
    ['abatement.exists()', true],
    ['subject.getReferenceKey()', true],
    ['encounter.getReferenceKey(Encounter)', true],
    ["category.coding.where(code = 'encounter-diagnosis').exists()", true],
    ['recordedDate', true],
  ],
  Procedure: [
    ['performed.ofType(Period).start', true],
    ['code.coding.display', true],
    ['status', true],
  ],
  MedicationRequest: [
    ['medication.ofType(CodeableConcept).coding.code', true],
    ['medication.ofType(Reference).reference', true],
    ['dosageInstruction.timing.repeat.frequency', true],
    ['requester.display', true],
    ['authoredOn', true],
  ],
  Immunization: [
    ['vaccineCode.coding.code', true],
    ['occurrence.ofType(dateTime)', true],
    ['primarySource', true],
  ],
  DocumentReference: [
    ['content.attachment.contentType', true],
    ['type.coding.code', true],
    ['context.encounter.getReferenceKey()', true],
    ['date', true],
  ],
  AllergyIntolerance: [
    ['code.coding.code', true],
    ['criticality', true],
    ['category', true],
    ['clinicalStatus.coding.code', true],
  ],
  Observation: [
    ['value.ofType(Quantity).value', true],
    ['value.ofType(Quantity).unit', true],
    ['value.ofType(CodeableConcept).coding.code', true],
    ['component.code.coding.code', true],
    ['component.value.ofType(Quantity).value', true],
    ['effective.ofType(dateTime)', true],
    ["code.coding.where(system = 'http://loinc.org').code.first()", true],
    ['category.coding.code', true],
    ['value.exists()', true],
    ['value', true],
    ['value.ofType(Quantity).value.lowBoundary()', false],
  ],
};

const TYPES = ['Patient', 'Encounter', 'Condition', 'Procedure', 'MedicationRequest', 'Immunization', 'DocumentReference', 'AllergyIntolerance'];
const functions = sqlOnFhirFunctions;

function reference(expression: string, base?: string): (r: unknown) => unknown[] {
  return fhirpath.compile(base ? { base, expression } : expression, r4, { userInvocationTable: functions }) as (r: unknown) => unknown[];
}

describe('FHIRPath fast path agrees with fhirpath.js on the Synthea export', () => {
  // The generated export (no shared fixtures) has fewer types than the real one: each type present is compared.
  const present = TYPES.filter((t) => existsSync(join(SYNTHEA, `${t}.000.ndjson`)));
  const byType = new Map<string, FhirResource[]>(present.map((t) => [t, readSynthea(t)]));
  byType.set('Observation', generateObservations(byType.get('Encounter')!));

  for (const [type, resources] of byType) {
    const cases = [...EXPRESSIONS['*']!, ...(EXPRESSIONS[type] ?? [])];
    it(`${type}: ${cases.length} expressions on ${resources.length} resources`, () => {
      for (const [expression, fast] of cases) {
        const typed = compilePath(expression, { base: type });
        const untyped = compilePath(expression);
        const expected = reference(expression, type);
        if (fast) expect(typed.fast, `${expression} runs on the fast path`).toBe(true);
        for (const r of resources) {
          const want = expected(r);
          expect(typed.evaluate(r), `${type}/${r.id}: ${expression}`).toEqual(want);
          expect(untyped.evaluate(r), `${type}/${r.id}: ${expression} (no base)`).toEqual(want);
        }
      }
    });
  }
});

describe('FHIRPath fast path on nested nodes and unusual data', () => {
  it('evaluates relative to a base element, with variables', () => {
    const component = { code: { text: 'x' }, valueQuantity: { value: 3, unit: 'mm' } };
    const p = compilePath('value.ofType(Quantity).value', { base: 'Observation.component' });
    expect(p.fast).toBe(true);
    expect(p.evaluate(component)).toEqual([3]);
    const v = compilePath('%rowIndex', { base: 'Observation.component' });
    expect(v.evaluate(component, { rowIndex: 4 })).toEqual([4]);
  });

  it('hands primitive extensions (_element) to fhirpath.js', () => {
    const patient = {
      resourceType: 'Patient',
      id: 'p',
      name: [{ given: ['a', null, 'c'], _given: [null, { extension: [{ url: 'u', valueString: 'x' }] }, null] }],
      birthDate: '1970',
      _birthDate: { extension: [{ url: 'http://example.org/time', valueTime: '10:00:00' }] },
    };
    for (const e of ['name.given', 'name.given[1]', 'name.given.count()', "birthDate.extension('http://example.org/time').value.ofType(time)"]) {
      const p = compilePath(e, { base: 'Patient' });
      expect(p.evaluate(patient), e).toEqual(reference(e, 'Patient')(patient));
    }
  });

  it('reports a missing variable as fhirpath.js does', () => {
    const p = compilePath('%missing', { base: 'Patient' });
    expect(() => p.evaluate({ resourceType: 'Patient' })).toThrow(/missing/);
  });

  it('keys: Type/id, versioned and absolute references, none for contained or conditional ones', () => {
    const refs = compilePath('link.other.getReferenceKey()', { base: 'Patient' });
    const patient = {
      resourceType: 'Patient',
      id: 'p1',
      link: [
        { other: { reference: 'Patient/p2/_history/3' } },
        { other: { reference: 'https://fhir.example.org/r4/Patient/p3' } },
        { other: { reference: '#contained' } },
        { other: { reference: 'Patient?identifier=x|1' } },
        { other: { reference: 'urn:uuid:0b3c0b5e-37c4-4a6b-8c8e-0b3c0b5e37c4' } },
      ],
    };
    expect(refs.evaluate(patient)).toEqual(['Patient/p2', 'Patient/p3']);
    expect(compilePath('getResourceKey()', { base: 'Patient' }).evaluate(patient)).toEqual(['Patient/p1']);
  });
});
