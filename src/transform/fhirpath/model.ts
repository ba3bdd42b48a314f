import r4 from 'fhirpath/fhir-context/r4';

/**
 * What the fast path needs to know of the FHIR R4 model, read from fhirpath.js's own model data so both
 * paths agree: the type of each element, which elements are choices (`value[x]`), and the type hierarchy
 * that `ofType()` follows.
 */

interface ModelData {
  choiceTypePaths: Record<string, string[]>;
  pathsDefinedElsewhere: Record<string, string>;
  path2Type: Record<string, string | { code: string }>;
  type2Parent: Record<string, string>;
}
const model = r4 as unknown as ModelData;

/** The static type of a FHIRPath result, as far as the model tells it. */
export interface PathType {
  /** FHIR or System type name: `HumanName`, `code`, `System.String`, `Patient`, `BackboneElement`. */
  readonly type: string;
  /** Where children are looked up: the element path for backbone elements, the type name otherwise. */
  readonly path: string;
}

export interface ChoiceOption extends PathType {
  /** The JSON key of this choice, e.g. `valueQuantity`. */
  readonly key: string;
}

export type Child = { kind: 'element'; type: PathType } | { kind: 'choice'; options: ChoiceOption[] };

const SYSTEM_OF: Record<string, string> = {
  'System.String': 'string',
  'System.Boolean': 'boolean',
  'System.Integer': 'integer',
  'System.Decimal': 'decimal',
  'System.Date': 'date',
  'System.DateTime': 'dateTime',
  'System.Time': 'time',
};

export function isResourceType(name: string): boolean {
  let t: string | undefined = name;
  for (let guard = 0; t && guard < 10; guard++) {
    if (t === 'Resource') return true;
    t = model.type2Parent[t];
  }
  return false;
}

export function resourceType(name: string): PathType {
  return { type: name, path: name };
}

function typeAt(path: string): PathType | undefined {
  const raw = model.path2Type[path];
  if (raw === undefined) return undefined;
  const type = typeof raw === 'string' ? raw : raw.code;
  const element = type === 'BackboneElement' || type === 'Element';
  return { type, path: element ? path : type };
}

/** The child `name` of a node whose children are looked up under `parent` (a PathType.path). */
export function child(parent: string, name: string): Child | undefined {
  const base = model.pathsDefinedElsewhere[parent] ?? parent;
  const path = `${base}.${name}`;
  const choices = model.choiceTypePaths[path];
  if (choices) {
    const options: ChoiceOption[] = [];
    for (const suffix of choices) {
      const t = typeAt(path + suffix);
      if (t) options.push({ ...t, key: name + suffix });
    }
    return { kind: 'choice', options };
  }
  const t = typeAt(path);
  if (t) return { kind: 'element', type: { ...t, path: model.pathsDefinedElsewhere[t.path] ?? t.path } };
  // Elements every resource or element has, when the model lists them only on the base type.
  if (base !== 'DomainResource' && base !== 'Resource' && isResourceType(base)) {
    return child('DomainResource', name) ?? child('Resource', name);
  }
  return undefined;
}

/** The type of a `base` option such as `Patient.name` or `Observation.component`. */
export function typeOfPath(base: string): PathType | undefined {
  const [root, ...names] = base.split('.');
  if (!root || !isResourceType(root) && model.path2Type[root] === undefined && !model.type2Parent[root]) return undefined;
  let t: PathType = resourceType(root);
  for (const name of names) {
    const c = child(t.path, name);
    if (c?.kind !== 'element') return undefined;
    t = c.type;
  }
  return t;
}

/** The FHIR name of a type: `System.String` → `string`. */
export function fhirName(type: string): string {
  return SYSTEM_OF[type] ?? type;
}

/** True when `type` is `ancestor` or derives from it (code → string, Age → Quantity, Patient → Resource). */
export function derivesFrom(type: string, ancestor: string): boolean {
  let t: string | undefined = fhirName(type);
  for (let guard = 0; t && guard < 10; guard++) {
    if (t === ancestor) return true;
    t = model.type2Parent[t];
  }
  return false;
}

export type Primitive = 'string' | 'boolean' | 'integer' | 'decimal' | 'temporal' | 'other';

/** How values of a type behave in comparisons; only the first three are compared on the fast path. */
export function primitiveKind(type: string): Primitive | undefined {
  const t = fhirName(type);
  if (derivesFrom(t, 'string') || derivesFrom(t, 'uri') || t === 'base64Binary' || t === 'xhtml') return 'string';
  if (t === 'boolean') return 'boolean';
  if (derivesFrom(t, 'integer')) return 'integer';
  if (t === 'decimal') return 'decimal';
  if (t === 'date' || t === 'dateTime' || t === 'instant' || t === 'time') return 'temporal';
  if (/^[a-z]/.test(t)) return 'other';
  return undefined;
}

/** A name such as `Quantity`, `string`, `FHIR.code` or `System.Integer` as the FHIR type ofType() matches. */
export function typeSpecifier(name: string): string | undefined {
  const bare = name.startsWith('FHIR.') ? name.slice(5) : name;
  if (bare.startsWith('System.')) return SYSTEM_OF[bare];
  if (SYSTEM_OF[`System.${bare}`] && /^[A-Z]/.test(bare)) return SYSTEM_OF[`System.${bare}`];
  if (model.type2Parent[bare] || bare === 'Resource' || bare === 'Element') return bare;
  return undefined;
}
