import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VIEWS } from '../bench/_views.js';
import { compileView } from '../src/index.js';
import { unknownElement } from '../src/transform/fhirpath/element-check.js';
import { typeOfPath } from '../src/transform/fhirpath/model.js';
import { loadTransformers } from '../src/transform/load-transformers.js';

/** The load-time check that paths name R4 elements: certain, or silent. */

const check = (base: string, expression: string) => unknownElement(expression, typeOfPath(base));

describe('unknownElement', () => {
  it.each([
    ['Patient', 'Patient.gendr', 'Patient has no element "gendr" in FHIR R4'],
    ['Patient', 'gendr', 'Patient has no element "gendr" in FHIR R4'],
    ['Patient', "name.where(use = 'official').famly", 'HumanName has no element "famly" in FHIR R4'],
    ['Patient', 'name.where(famly.exists()).given', 'HumanName has no element "famly" in FHIR R4'],
    ['Patient', 'contact.nme', 'Patient.contact (BackboneElement) has no element "nme" in FHIR R4'],
    ['Observation', 'value.ofType(Quantity).valu', 'Quantity has no element "valu" in FHIR R4'],
    ['Observation', 'valueQuantity.unt', 'Quantity has no element "unt" in FHIR R4'],
    ['Observation.component', 'code.coding.cod', 'Coding has no element "cod" in FHIR R4'],
    ['Questionnaire', 'item.item.linkid', 'Questionnaire.item (BackboneElement) has no element "linkid" in FHIR R4'],
    ['Patient', '%resource.gendr', 'Patient has no element "gendr" in FHIR R4'],
    ['Bundle', 'entry.resource.ofType(Patient).gendr', 'Patient has no element "gendr" in FHIR R4'],
  ])('on %s, %s: %s', (base, expression, problem) => {
    expect(check(base, expression)).toBe(problem);
  });

  it.each([
    ['Patient', 'Patient.gender'],
    ['Patient', "name.where(use = 'official').given.first()"],
    ['Patient', 'deceased.ofType(dateTime)'],
    ['Patient', 'deceasedBoolean'],
    ['Observation', 'valueQuantity.value'],
    ['Observation', 'value.ofType(Quantity).value'],
    ['Patient', "extension('http://example.org/x').value.ofType(string)"],
    ['Patient', "extension.where(url = 'http://example.org/x').valueString"],
    ['Patient', 'birthDate.value'],
    ['Patient', 'birthDate.extension'],
    ['Patient', '_birthDate'],
    ['Patient', 'id'],
    ['Patient', 'meta.versionId'],
    ['Patient', 'text.div'],
    ['Patient', 'contact.name.family'],
    ['Patient', 'contained.name'],
    ['Patient', 'link.other.resolve().anything'],
    ['Patient', 'Observation.code'],
    ['Patient', 'getResourceKey()'],
    ['Patient', 'link.other.getReferenceKey(Patient)'],
    ['Patient', 'iif(gender.exists(), 1, 2)'],
    ['Questionnaire', 'item.item.linkId'],
    ['QuestionnaireResponse', 'item.answer.item.linkId'],
    ['Observation.component', 'value.ofType(Quantity).value'],
  ])('on %s, %s: no complaint', (base, expression) => {
    expect(check(base, expression)).toBeUndefined();
  });
});

describe('the shipped transformers and views pass', () => {
  it('the example transformers load', () => {
    expect(loadTransformers(join(import.meta.dirname, '..', 'transformers')).length).toBeGreaterThan(0);
  });

  it('the benchmark views compile', () => {
    for (const view of VIEWS) expect(() => compileView(view)).not.toThrow();
  });
});
