/**
 * Realistic ViewDefinitions over Synthea data, used by the flatten benchmark: patient demographics with
 * one row per name, encounters with one row per type coding, observations with value[x] choices and one
 * row per component, conditions. Columns named in KEY_COLUMNS hold getResourceKey()/getReferenceKey()
 * results, whose text is implementation-defined (fhir-rte: `Patient/1`; Medplum: `1`).
 */

export const KEY_COLUMNS = new Set(['patient_key', 'encounter_key', 'observation_key', 'condition_key']);

export const VIEWS = [
  {
    resourceType: 'ViewDefinition',
    name: 'patient_demographics',
    status: 'active',
    resource: 'Patient',
    select: [
      {
        column: [
          { name: 'patient_key', path: 'getResourceKey()' },
          { name: 'gender', path: 'gender', type: 'code' },
          { name: 'birth_date', path: 'birthDate', type: 'date' },
          { name: 'deceased', path: 'deceased.exists()', type: 'boolean' },
          { name: 'deceased_at', path: 'deceased.ofType(dateTime)', type: 'dateTime' },
          { name: 'mrn', path: "identifier.where(type.coding.code = 'MR').value.first()", type: 'string' },
          {
            name: 'race',
            path: "extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-race').extension('ombCategory').value.ofType(Coding).code.first()",
            type: 'code',
          },
          { name: 'birth_sex', path: "extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex').value.ofType(code)", type: 'code' },
          { name: 'phone', path: "telecom.where(system = 'phone').value.first()", type: 'string' },
          { name: 'city', path: 'address.first().city', type: 'string' },
        ],
      },
      {
        forEach: 'name',
        column: [
          { name: 'name_use', path: 'use', type: 'code' },
          { name: 'family', path: 'family', type: 'string' },
          { name: 'given', path: "given.join(' ')", type: 'string' },
          { name: 'prefix', path: 'prefix.first()', type: 'string' },
        ],
      },
    ],
  },
  {
    resourceType: 'ViewDefinition',
    name: 'encounter_types',
    status: 'active',
    resource: 'Encounter',
    select: [
      {
        column: [
          { name: 'encounter_key', path: 'getResourceKey()' },
          { name: 'patient_key', path: 'subject.getReferenceKey(Patient)' },
          { name: 'status', path: 'status', type: 'code' },
          { name: 'class', path: 'class.code', type: 'code' },
          { name: 'started', path: 'period.start', type: 'dateTime' },
          { name: 'ended', path: 'period.end', type: 'dateTime' },
          { name: 'reason', path: 'reasonCode.coding.code.first()', type: 'code' },
          { name: 'provider', path: 'serviceProvider.display', type: 'string' },
        ],
      },
      {
        forEach: 'type.coding',
        column: [
          { name: 'type_system', path: 'system', type: 'uri' },
          { name: 'type_code', path: 'code', type: 'code' },
          { name: 'type_display', path: 'display', type: 'string' },
        ],
      },
    ],
  },
  {
    resourceType: 'ViewDefinition',
    name: 'observations',
    status: 'active',
    resource: 'Observation',
    select: [
      {
        column: [
          { name: 'observation_key', path: 'getResourceKey()' },
          { name: 'patient_key', path: 'subject.getReferenceKey(Patient)' },
          { name: 'encounter_key', path: 'encounter.getReferenceKey(Encounter)' },
          { name: 'status', path: 'status', type: 'code' },
          { name: 'category', path: 'category.coding.code.first()', type: 'code' },
          { name: 'loinc', path: "code.coding.where(system = 'http://loinc.org').code.first()", type: 'code' },
          { name: 'effective', path: 'effective.ofType(dateTime)', type: 'dateTime' },
          { name: 'value_quantity', path: 'value.ofType(Quantity).value', type: 'decimal' },
          { name: 'value_unit', path: 'value.ofType(Quantity).unit', type: 'string' },
          { name: 'value_code', path: 'value.ofType(CodeableConcept).coding.code.first()', type: 'code' },
          { name: 'value_string', path: 'value.ofType(string)', type: 'string' },
        ],
      },
      {
        forEachOrNull: 'component',
        column: [
          { name: 'component_code', path: 'code.coding.code.first()', type: 'code' },
          { name: 'component_value', path: 'value.ofType(Quantity).value', type: 'decimal' },
          { name: 'component_unit', path: 'value.ofType(Quantity).unit', type: 'string' },
        ],
      },
    ],
  },
  {
    resourceType: 'ViewDefinition',
    name: 'conditions',
    status: 'active',
    resource: 'Condition',
    select: [
      {
        column: [
          { name: 'condition_key', path: 'getResourceKey()' },
          { name: 'patient_key', path: 'subject.getReferenceKey(Patient)' },
          { name: 'encounter_key', path: 'encounter.getReferenceKey(Encounter)' },
          { name: 'clinical_status', path: 'clinicalStatus.coding.code.first()', type: 'code' },
          { name: 'verification_status', path: 'verificationStatus.coding.code.first()', type: 'code' },
          { name: 'snomed', path: "code.coding.where(system = 'http://snomed.info/sct').code.first()", type: 'code' },
          { name: 'description', path: 'code.text', type: 'string' },
          { name: 'onset', path: 'onset.ofType(dateTime)', type: 'dateTime' },
          { name: 'abatement', path: 'abatement.ofType(dateTime)', type: 'dateTime' },
          { name: 'recorded', path: 'recordedDate', type: 'dateTime' },
        ],
      },
    ],
  },
];
