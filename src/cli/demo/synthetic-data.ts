import type { FhirResource } from '../../events/change-event.js';

/**
 * Synthetic FHIR R4 data in Synthea's shape (US Core patients with names and addresses, encounters,
 * vital-sign and lab observations, conditions), generated deterministically from a seed so demos and
 * benchmarks see the same data every run. Nothing here is real.
 */

const GIVEN = ['Ava', 'Liam', 'Mia', 'Noah', 'Zoe', 'Eli', 'Ivy', 'Leo', 'Ada', 'Max', 'Ruth', 'Omar', 'Lena', 'Ravi', 'Nina', 'Hugo'];
const FAMILY = ['Smith', 'Garcia', 'Chen', 'Okafor', 'Novak', 'Silva', 'Kowalski', 'Haddad', 'Ito', 'Larsen', 'Moreau', 'Singh'];
const CITIES: Array<[string, string, string]> = [
  ['Boston', 'MA', '02108'],
  ['Worcester', 'MA', '01601'],
  ['Springfield', 'MA', '01103'],
  ['Lowell', 'MA', '01852'],
  ['Cambridge', 'MA', '02139'],
  ['Salem', 'MA', '01970'],
];
const CONDITIONS: Array<[string, string]> = [
  ['44054006', 'Diabetes mellitus type 2'],
  ['38341003', 'Hypertension'],
  ['195662009', 'Acute viral pharyngitis'],
  ['10509002', 'Acute bronchitis'],
  ['162864005', 'Body mass index 30+ - obesity'],
  ['444814009', 'Viral sinusitis'],
];
const ENCOUNTER_TYPES: Array<[string, string, string]> = [
  ['AMB', '185349003', 'Encounter for check up'],
  ['AMB', '162673000', 'General examination of patient'],
  ['EMER', '50849002', 'Emergency room admission'],
  ['IMP', '32485007', 'Hospital admission'],
];

/** A small deterministic PRNG (mulberry32): the same seed gives the same data set. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T>(rnd: () => number, list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;
const uuid = (rnd: () => number): string =>
  'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, (c) => {
    const r = Math.floor(rnd() * 16);
    return (c === 'x' ? r : (r & 0x3) | 0x8).toString(16);
  });
const meta = (version: number, at: Date) => ({ versionId: String(version), lastUpdated: at.toISOString() });
const day = (d: Date) => d.toISOString().slice(0, 10);

export function syntheticPatient(rnd: () => number, id = uuid(rnd), version = 1, at = new Date(Date.UTC(2024, 0, 1))): FhirResource {
  const family = pick(rnd, FAMILY);
  const female = rnd() < 0.5;
  const [city, state, postalCode] = pick(rnd, CITIES);
  const names: Array<Record<string, unknown>> = [
    { use: 'official', family, given: [pick(rnd, GIVEN), pick(rnd, GIVEN)], prefix: [female ? 'Ms.' : 'Mr.'] },
  ];
  if (female && rnd() < 0.3) names.push({ use: 'maiden', family: pick(rnd, FAMILY), given: [String((names[0]!.given as string[])[0])] });
  const birth = new Date(Date.UTC(1930 + Math.floor(rnd() * 90), Math.floor(rnd() * 12), 1 + Math.floor(rnd() * 28)));
  return {
    resourceType: 'Patient',
    id,
    meta: meta(version, at),
    identifier: [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] }, system: 'https://example.org/mrn', value: id.slice(0, 8) }],
    active: true,
    name: names,
    telecom: [{ system: 'phone', value: `555-${String(Math.floor(rnd() * 9000) + 1000)}`, use: 'home' }],
    gender: female ? 'female' : 'male',
    birthDate: day(birth),
    address: [{ line: [`${1 + Math.floor(rnd() * 999)} ${pick(rnd, FAMILY)} Street`], city, state, postalCode, country: 'US' }],
    maritalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: rnd() < 0.5 ? 'M' : 'S' }] },
    communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en-US' }] } }],
  };
}

export function syntheticEncounter(rnd: () => number, patientId: string, start: Date): FhirResource {
  const [cls, code, display] = pick(rnd, ENCOUNTER_TYPES);
  const end = new Date(start.getTime() + (15 + Math.floor(rnd() * 120)) * 60_000);
  return {
    resourceType: 'Encounter',
    id: uuid(rnd),
    meta: meta(1, end),
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: cls },
    type: [{ coding: [{ system: 'http://snomed.info/sct', code, display }], text: display }],
    subject: { reference: `Patient/${patientId}` },
    period: { start: start.toISOString(), end: end.toISOString() },
    serviceProvider: { reference: 'Organization/demo-clinic' },
  };
}

const quantity = (value: number, unit: string) => ({ value: Math.round(value * 10) / 10, unit, system: 'http://unitsofmeasure.org', code: unit });
const loinc = (code: string, display: string) => ({ coding: [{ system: 'http://loinc.org', code, display }], text: display });
const category = (code: string) => [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code }] }];

/** One Synthea-style observation: a vital sign, a blood-pressure panel with components, a lab or a smoking status. */
export function syntheticObservation(rnd: () => number, patientId: string, encounterId: string | undefined, at: Date, id = uuid(rnd), version = 1): FhirResource {
  const base = {
    resourceType: 'Observation',
    id,
    meta: meta(version, at),
    status: 'final',
    subject: { reference: `Patient/${patientId}` },
    ...(encounterId ? { encounter: { reference: `Encounter/${encounterId}` } } : {}),
    effectiveDateTime: at.toISOString(),
    issued: at.toISOString(),
  };
  const kind = rnd();
  if (kind < 0.25) return { ...base, category: category('vital-signs'), code: loinc('29463-7', 'Body Weight'), valueQuantity: quantity(50 + rnd() * 60, 'kg') };
  if (kind < 0.45) return { ...base, category: category('vital-signs'), code: loinc('8302-2', 'Body Height'), valueQuantity: quantity(150 + rnd() * 45, 'cm') };
  if (kind < 0.7) {
    return {
      ...base,
      category: category('vital-signs'),
      code: loinc('85354-9', 'Blood pressure panel with all children optional'),
      component: [
        { code: loinc('8462-4', 'Diastolic Blood Pressure'), valueQuantity: quantity(60 + rnd() * 35, 'mm[Hg]') },
        { code: loinc('8480-6', 'Systolic Blood Pressure'), valueQuantity: quantity(100 + rnd() * 50, 'mm[Hg]') },
      ],
    };
  }
  if (kind < 0.9) return { ...base, category: category('laboratory'), code: loinc('2339-0', 'Glucose'), valueQuantity: quantity(65 + rnd() * 80, 'mg/dL') };
  return {
    ...base,
    category: category('survey'),
    code: loinc('72166-2', 'Tobacco smoking status'),
    valueCodeableConcept: { coding: [{ system: 'http://snomed.info/sct', code: rnd() < 0.8 ? '266919005' : '449868002', display: 'Smoking status' }], text: 'Smoking status' },
  };
}

export function syntheticCondition(rnd: () => number, patientId: string, encounterId: string, at: Date): FhirResource {
  const [code, display] = pick(rnd, CONDITIONS);
  const resolved = rnd() < 0.4;
  return {
    resourceType: 'Condition',
    id: uuid(rnd),
    meta: meta(1, at),
    clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: resolved ? 'resolved' : 'active' }] },
    verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }] },
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis' }] }],
    code: { coding: [{ system: 'http://snomed.info/sct', code, display }], text: display },
    subject: { reference: `Patient/${patientId}` },
    encounter: { reference: `Encounter/${encounterId}` },
    onsetDateTime: at.toISOString(),
    ...(resolved ? { abatementDateTime: new Date(at.getTime() + 14 * 864e5).toISOString() } : {}),
    recordedDate: at.toISOString(),
  };
}

/**
 * A whole demo population as change events would carry it: every patient's records, then a later
 * round of changes (some patients move or change name: version 2; a few records deleted).
 */
export function syntheticPopulation(patients: number, seed = 42): { resources: FhirResource[]; updates: FhirResource[]; deletes: string[] } {
  const rnd = random(seed);
  const resources: FhirResource[] = [];
  const updates: FhirResource[] = [];
  const deletes: string[] = [];
  for (let p = 0; p < patients; p++) {
    const patient = syntheticPatient(rnd);
    resources.push(patient);
    let when = new Date(Date.UTC(2020, 0, 1) + Math.floor(rnd() * 3 * 365) * 864e5);
    for (let e = 0, n = 2 + Math.floor(rnd() * 5); e < n; e++) {
      const encounter = syntheticEncounter(rnd, patient.id!, when);
      resources.push(encounter);
      for (let o = 0, m = 2 + Math.floor(rnd() * 4); o < m; o++) resources.push(syntheticObservation(rnd, patient.id!, encounter.id, when));
      if (rnd() < 0.3) resources.push(syntheticCondition(rnd, patient.id!, encounter.id!, when));
      when = new Date(when.getTime() + (20 + Math.floor(rnd() * 200)) * 864e5);
    }
    if (rnd() < 0.2) updates.push(syntheticPatient(random(seed + p + 1), patient.id, 2, new Date(Date.UTC(2025, 0, 1))));
  }
  for (const r of resources) if (r.resourceType === 'Observation' && rnd() < 0.02) deletes.push(`Observation/${r.id}`);
  return { resources, updates, deletes };
}
