import r4 from 'fhirpath/fhir-context/r4';
import { child, resourceType, typeSpecifier, type ChoiceOption, type PathType } from './model.js';
import { parse, type Expr } from './parser.js';

/**
 * A load-time check that a transformer's FHIRPath names elements that exist in FHIR R4: `Patient.gendr`
 * would otherwise give nothing, for every resource, and an empty column is all anyone would ever see.
 *
 * The check is certain or silent. It follows a path only while the model says what type each step has
 * (member steps, choices, ofType(), the functions that keep their input's type), and reports a member that
 * the known type lacks. Wherever the type becomes unknown (an abstract Resource, resolve(), an arbitrary
 * function, a primitive, a variable) it stops, so it never rejects a path that could give values.
 */

const pathsDefinedElsewhere = (r4 as unknown as { pathsDefinedElsewhere: Record<string, string> }).pathsDefinedElsewhere;

/** A step's static type: known, a choice not yet narrowed by ofType(), or unknown (`undefined`). */
type Static = PathType | { choice: ChoiceOption[] } | undefined;

/** Functions whose result has the type of their input. */
const SAME_TYPE = new Set(['where', 'first', 'last', 'single', 'tail', 'skip', 'take', 'distinct', 'intersect', 'exclude', 'union', 'combine', 'trace']);
/** Functions whose arguments are evaluated on each item of their input ($this). */
const ITERATING = new Set(['where', 'select', 'all', 'exists', 'repeat']);
/** Functions whose arguments are evaluated like the expression they stand in; others' arguments are not checked. */
const ENCLOSING = new Set(['combine', 'union', 'intersect', 'exclude', 'subsetOf', 'supersetOf']);

/**
 * The first member of `expression` that its type does not have, as a message (`Patient has no element
 * "gendr"`), or undefined. `focus` is the type the expression is evaluated on; undefined skips the check.
 * An expression that does not parse here is left to fhirpath.js, which compiles every expression anyway.
 */
export function unknownElement(expression: string, focus: PathType | undefined): string | undefined {
  if (!focus) return undefined;
  let ast: Expr;
  try {
    ast = parse(expression);
  } catch {
    return undefined;
  }
  const problems: string[] = [];
  typeOf(ast, focus, focus, problems);
  return problems[0];
}

function typeOf(e: Expr, focus: Static, root: PathType, problems: string[]): Static {
  switch (e.kind) {
    case 'member':
      return member(e.base === null ? focus : typeOf(e.base, focus, root, problems), e.name, e.base === null, problems);
    case 'call':
      return call(e, e.base === null ? focus : typeOf(e.base, focus, root, problems), focus, root, problems);
    case 'indexer':
      typeOf(e.index, focus, root, problems);
      return typeOf(e.base, focus, root, problems);
    case 'binary':
      typeOf(e.left, focus, root, problems);
      typeOf(e.right, focus, root, problems);
      return undefined;
    case 'unary':
      typeOf(e.operand, focus, root, problems);
      return undefined;
    case 'type-op': {
      const operand = typeOf(e.operand, focus, root, problems);
      return e.op === 'as' ? narrow(operand, e.type) : undefined;
    }
    case 'special':
      return e.name === 'this' ? focus : undefined;
    case 'variable':
      return e.name === 'resource' || e.name === 'rootResource' ? root : undefined;
    default:
      return undefined;
  }
}

function member(base: Static, name: string, first: boolean, problems: string[]): Static {
  if (!base || 'choice' in base) return undefined;
  // `Patient.name` on a Patient: a leading type name filters by type.
  if (first && name === base.type) return base;
  if (!checkable(base) || name.startsWith('_')) return undefined;
  const found = child(base.path, name);
  if (found?.kind === 'element') return found.type;
  if (found?.kind === 'choice') return { choice: found.options };
  const elsewhere = pathsDefinedElsewhere[`${base.path}.${name}`];
  if (elsewhere) return { type: 'BackboneElement', path: elsewhere };
  // A capitalised first step may name another type (`Observation.code` on a Patient gives nothing, but is
  // no misspelling of an element); only lower-case members are held to the model.
  if (first && /^[A-Z]/.test(name)) return undefined;
  problems.push(`${describe(base)} has no element ${JSON.stringify(name)} in FHIR R4`);
  return undefined;
}

function call(e: Extract<Expr, { kind: 'call' }>, input: Static, focus: Static, root: PathType, problems: string[]): Static {
  const argFocus = ITERATING.has(e.name) ? input : ENCLOSING.has(e.name) ? focus : undefined;
  const args = e.args.map((a) => (argFocus ? typeOf(a, argFocus, root, problems) : undefined));
  if (SAME_TYPE.has(e.name)) return input;
  if (e.name === 'select') return args[0];
  if ((e.name === 'ofType' || e.name === 'as') && e.args[0]?.kind === 'member' && e.args[0].base === null) return narrow(input, e.args[0].name);
  if (e.name === 'extension') return { type: 'Extension', path: 'Extension' };
  return undefined;
}

/** The type ofType()/as select: a choice's option, a resource type, or a FHIR type. */
function narrow(input: Static, name: string): Static {
  const type = typeSpecifier(name);
  if (!type) return undefined;
  if (input && 'choice' in input) return input.choice.find((o) => o.type === type);
  if (/^[A-Z]/.test(type) && type !== 'Resource' && type !== 'Element') return type === input?.type ? input : resourceType(type);
  return undefined;
}

/** Only complex types and resources have a model of their members; primitives and abstract types do not. */
function checkable(t: PathType): boolean {
  if (t.type.startsWith('System.') || /^[a-z]/.test(t.type)) return false;
  return !['Resource', 'DomainResource', 'Element', 'BackboneElement'].includes(t.type) || t.path.includes('.');
}

function describe(t: PathType): string {
  return t.path.includes('.') ? `${t.path} (${t.type})` : t.type;
}
