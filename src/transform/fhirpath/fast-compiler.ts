import type { Expr } from './parser.js';
import { child, derivesFrom, fhirName, isResourceType, primitiveKind, typeSpecifier, type ChoiceOption, type PathType } from './model.js';
import { referenceKeyOf, resourceKeyOf } from './keys.js';
import { joinStrings } from './sof-functions.js';
import { holdsWrittenNumbers, writtenText, WrittenNumber } from '../../events/fhir-json.js';

/**
 * Compiles the common, simple FHIRPath forms into plain closures over JSON: member access, first(),
 * where() with equalities, ofType() on choices, exists(), join(), extension(url), the key functions.
 * Everything else is left to fhirpath.js: a node that cannot be compiled has no `fn`, and neither has any
 * expression containing it. Types are still inferred as far as the model allows, for the callers that
 * need them (choice resolution in nested contexts, column types, where() must be boolean).
 *
 * Members of a primitive (`.value`, `.id`, `.extension` after a string or number) are not compiled:
 * fhirpath.js reads them off its own representation of the value and the `_element` sibling.
 * At run time a compiled function throws BAIL when the data holds something it does not model (a
 * primitive's `_element` extension, a missing variable); the caller then asks fhirpath.js instead.
 */

export type Collection = unknown[];
export interface Env {
  vars: Record<string, unknown> | undefined;
  /** Read numbers as written: one whose JS value prints otherwise becomes a WrittenNumber (see CompiledPath.values). */
  exact?: boolean;
}
export type Fn = (focus: Collection, env: Env) => Collection;

export const BAIL: unique symbol = Symbol('fhirpath fast path bail-out');

export interface Compiled {
  fn?: Fn;
  /** Static type of every item of the result, when the model tells it. */
  type?: PathType;
  /** The result is one of several `value[x]` choices; ofType() narrows it. */
  choice?: ChoiceOption[];
  /** For a choice read straight off its parents: the parents, so ofType() can read only the wanted keys. */
  choiceParents?: Fn;
}

const BOOLEAN: PathType = { type: 'boolean', path: 'boolean' };
const STRING: PathType = { type: 'string', path: 'string' };
const INTEGER: PathType = { type: 'integer', path: 'integer' };
const EXTENSION: PathType = { type: 'Extension', path: 'Extension' };
const BOOLEAN_FUNCTIONS = new Set([
  'exists', 'empty', 'not', 'all', 'allTrue', 'anyTrue', 'allFalse', 'anyFalse', 'subsetOf', 'supersetOf',
  'isDistinct', 'hasValue', 'startsWith', 'endsWith', 'contains', 'matches', 'matchesFull', 'is', 'memberOf',
  'convertsToBoolean', 'convertsToInteger', 'convertsToDecimal', 'convertsToString', 'convertsToDate',
  'convertsToDateTime', 'convertsToTime', 'convertsToQuantity', 'comparable', 'conformsTo', 'subsumes', 'subsumedBy',
]);
const PASS_THROUGH = new Set(['first', 'last', 'single', 'tail', 'distinct', 'where', 'skip', 'take']);
const BOOLEAN_OPERATORS = new Set(['=', '!=', '~', '!~', '<', '>', '<=', '>=', 'and', 'or', 'xor', 'implies', 'in', 'contains']);
/** Variables fhirpath.js defines itself; the fast path does not know their values. */
const BUILT_IN_VARIABLES = new Set(['context', 'resource', 'rootResource', 'ucum', 'sct', 'loinc', 'factory', 'terminologies']);

/**
 * @param focusType type of the input items; `undefined` when unknown, in which case member access is left
 *   to fhirpath.js (which may know more, e.g. from a resource's resourceType).
 */
export function compileExpr(e: Expr, focusType: PathType | undefined): Compiled {
  switch (e.kind) {
    case 'literal': {
      const v = e.value;
      const type = e.type === 'String' ? STRING : e.type === 'Boolean' ? BOOLEAN : e.type === 'Integer' ? INTEGER : { type: 'decimal', path: 'decimal' };
      return { fn: () => [v], type };
    }
    case 'empty':
      return { fn: () => [] };
    case 'special':
      return e.name === 'this' ? { fn: (focus) => focus, type: focusType } : e.name === 'index' ? { type: INTEGER } : {};
    case 'variable':
      return variable(e.name);
    case 'member':
      return member(e.base ? compileExpr(e.base, focusType) : { fn: (f) => f, type: focusType }, e.name, e.base === null);
    case 'call':
      return call(e, e.base ? compileExpr(e.base, focusType) : { fn: (f) => f, type: focusType });
    case 'indexer':
      return indexer(compileExpr(e.base, focusType), e.index);
    case 'binary':
      return binary(e.op, compileExpr(e.left, focusType), compileExpr(e.right, focusType));
    case 'type-op':
      return e.op === 'is' ? { type: BOOLEAN } : {};
    case 'unary':
    case 'opaque-literal':
      return {};
  }
}

function variable(name: string): Compiled {
  if (BUILT_IN_VARIABLES.has(name) || name.startsWith('vs-') || name.startsWith('ext-')) return {};
  return {
    fn: (_focus, env) => {
      const v = env.vars?.[name];
      if (v === undefined) throw BAIL; // fhirpath.js reports the undefined variable
      return v === null ? [] : Array.isArray(v) ? v : [v];
    },
    type: name === 'rowIndex' ? INTEGER : undefined,
  };
}

/** Appends `v` (a JSON value or array) to `out`, as FHIRPath flattens arrays and drops nulls. */
function push(out: unknown[], v: unknown): void {
  if (v === undefined || v === null) return;
  if (Array.isArray(v)) {
    for (const x of v) if (x !== null && x !== undefined) out.push(x);
  } else {
    out.push(v);
  }
}

/** Access of JSON keys on every item; a `_key` sibling (primitive extension) is fhirpath.js's business. */
function access(keys: string[]): (focus: Collection, env: Env) => Collection {
  const shadow = keys.map((k) => `_${k}`);
  if (keys.length === 1) {
    const key = keys[0]!;
    const under = shadow[0]!;
    return (focus, env) => {
      if (env.exact) return exactAccess(focus, keys, shadow);
      const out: unknown[] = [];
      for (const item of focus) {
        if (item === null || typeof item !== 'object') continue;
        const o = item as Record<string, unknown>;
        if (o[under] !== undefined) throw BAIL;
        push(out, o[key]);
      }
      return out;
    };
  }
  return (focus, env) => {
    if (env.exact) return exactAccess(focus, keys, shadow);
    const out: unknown[] = [];
    for (const item of focus) {
      if (item === null || typeof item !== 'object') continue;
      const o = item as Record<string, unknown>;
      for (let i = 0; i < keys.length; i++) {
        if (o[shadow[i]!] !== undefined) throw BAIL;
        push(out, o[keys[i]!]);
      }
    }
    return out;
  };
}

/** access() reading numbers as written; a WrittenNumber in the focus is a primitive, with no members. */
function exactAccess(focus: Collection, keys: string[], shadow: string[]): Collection {
  const out: unknown[] = [];
  for (const item of focus) {
    if (item === null || typeof item !== 'object' || item instanceof WrittenNumber) continue;
    const o = item as Record<string, unknown>;
    for (let i = 0; i < keys.length; i++) {
      if (o[shadow[i]!] !== undefined) throw BAIL;
      const v = o[keys[i]!];
      if (!holdsWrittenNumbers(o)) push(out, v);
      else if (typeof v === 'number') out.push(asWritten(o, keys[i]!, v));
      else if (Array.isArray(v)) for (let j = 0; j < v.length; j++) push(out, typeof v[j] === 'number' ? asWritten(v, j, v[j] as number) : v[j]);
      else push(out, v);
    }
  }
  return out;
}

function asWritten(container: object, key: string | number, v: number): unknown {
  const text = writtenText(container, key);
  return text === undefined ? v : new WrittenNumber(text);
}

function then(base: Fn, step: (c: Collection, env: Env) => Collection): Fn {
  return (focus, env) => step(base(focus, env), env);
}

function member(base: Compiled, name: string, atRoot: boolean): Compiled {
  const parent = base.type;
  if (atRoot && /^[A-Z]/.test(name)) {
    // `Patient.name`: a leading type name filters the input; only the trivially true case is compiled.
    return parent && parent.type === name ? base : {};
  }
  if (!parent || base.choice) return {};
  const c = child(parent.path, name);
  if (!c) return {};
  // A primitive's members are fhirpath.js's own: `.id` and `.extension` live in the `_element` sibling,
  // and it reads other names off its internal value (a number's `.value` is the number itself).
  if (primitiveKind(parent.type)) return c.kind === 'element' ? { type: c.type } : {};
  if (c.kind === 'choice') {
    const fn = base.fn && then(base.fn, access(c.options.map((o) => o.key)));
    const types = new Set(c.options.map((o) => o.type));
    return { fn, choice: c.options, choiceParents: base.fn, type: types.size === 1 ? c.options[0] : undefined };
  }
  return { fn: base.fn && then(base.fn, access([name])), type: c.type };
}

function indexer(base: Compiled, index: Expr): Compiled {
  if (index.kind !== 'literal' || index.type !== 'Integer' || !base.fn) return { type: base.type, choice: base.choice };
  const n = index.value as number;
  return { fn: then(base.fn, (c) => (n < c.length ? [c[n]] : [])), type: base.type, choice: base.choice };
}

function call(e: Extract<Expr, { kind: 'call' }>, base: Compiled): Compiled {
  const { name, args } = e;
  const input = base.fn;
  const typeOnly: Compiled = BOOLEAN_FUNCTIONS.has(name)
    ? { type: BOOLEAN }
    : PASS_THROUGH.has(name)
      ? { type: base.type, choice: base.choice }
      : name === 'count' || name === 'length'
        ? { type: INTEGER }
        : {};
  if (!input) return typeOnly;
  switch (`${name}/${args.length}`) {
    case 'first/0':
      return { ...typeOnly, fn: then(input, (c) => (c.length ? [c[0]] : [])) };
    case 'last/0':
      return { ...typeOnly, fn: then(input, (c) => (c.length ? [c[c.length - 1]] : [])) };
    case 'exists/0':
      return { type: BOOLEAN, fn: then(input, (c) => [c.length > 0]) };
    case 'empty/0':
      return { type: BOOLEAN, fn: then(input, (c) => [c.length === 0]) };
    case 'count/0':
      return { type: INTEGER, fn: then(input, (c) => [c.length]) };
    case 'not/0':
      return isBoolean(base) ? { type: BOOLEAN, fn: then(input, (c) => not(c)) } : typeOnly;
    case 'where/1':
    case 'exists/1':
      return filter(name, input, base, args[0]!);
    case 'ofType/1':
      return ofType(input, base, args[0]!);
    case 'join/0':
    case 'join/1':
      return join(input, args[0]);
    case 'extension/1':
      return extension(input, base, args[0]!);
    case 'getResourceKey/0':
      return { type: STRING, fn: then(input, (c) => keys(c, resourceKeyOf)) };
    case 'getReferenceKey/0':
    case 'getReferenceKey/1': {
      const type = args[0] && typeName(args[0]);
      if (args[0] && !type) return { type: STRING };
      return { type: STRING, fn: then(input, (c) => keys(c, (x) => referenceKeyOf(x, type))) };
    }
  }
  return typeOnly;
}

function isBoolean(c: Compiled): boolean {
  return !!c.type && fhirName(c.type.type) === 'boolean';
}

function keys(c: Collection, key: (x: unknown) => string | undefined): Collection {
  const out: unknown[] = [];
  for (const x of c) {
    const k = key(x);
    if (k !== undefined) out.push(k);
  }
  return out;
}

function not(c: Collection): Collection {
  if (c.length === 0) return [];
  if (c.length > 1 || typeof c[0] !== 'boolean') throw BAIL;
  return [!c[0]];
}

/** where(criteria) and exists(criteria): criteria must be boolean, evaluated once per item. */
function filter(name: string, input: Fn, base: Compiled, arg: Expr): Compiled {
  const type = name === 'where' ? base.type : BOOLEAN;
  if (base.choice) return { type };
  const crit = compileExpr(arg, base.type);
  if (!crit.fn || !isBoolean(crit)) return { type };
  const test = crit.fn;
  const where: Fn = (focus, env) => {
    const c = input(focus, env);
    const out: unknown[] = [];
    for (const item of c) {
      const r = test([item], env);
      if (r.length === 1 && r[0] === true) out.push(item);
      else if (r.length > 1) throw BAIL;
    }
    return out;
  };
  if (name === 'where') return { type, choice: base.choice, fn: where };
  return { type, fn: (focus, env) => [where(focus, env).length > 0] };
}

function typeName(arg: Expr): string | undefined {
  if (arg.kind === 'member') {
    if (arg.base === null) return arg.name;
    const head = typeName(arg.base);
    return head && `${head}.${arg.name}`;
  }
  return undefined;
}

function ofType(input: Fn, base: Compiled, arg: Expr): Compiled {
  const spec = typeName(arg);
  const wanted = spec && typeSpecifier(spec);
  if (!wanted) return {};
  if (base.choice) {
    // Every option left derives from the wanted type (Age, Count... from Quantity), so that type describes them.
    const options = base.choice.filter((o) => derivesFrom(o.type, wanted));
    const type = options.length === 1 ? options[0] : { type: wanted, path: wanted };
    const parents = base.choiceParents;
    if (!parents) return { type };
    return { type, fn: options.length === 0 ? () => [] : then(parents, access(options.map((o) => o.key))) };
  }
  const t = base.type;
  if (!t || primitiveKind(t.type)) return {};
  if (t.type === 'Resource' || t.type === 'DomainResource') {
    if (!isResourceType(wanted)) return {};
    return { type: { type: wanted, path: wanted }, fn: then(input, (c) => c.filter((x) => (x as { resourceType?: unknown })?.resourceType === wanted)) };
  }
  return derivesFrom(t.type, wanted) ? { type: t, fn: input } : { fn: () => [] };
}

function join(input: Fn, sepArg: Expr | undefined): Compiled {
  if (sepArg && !(sepArg.kind === 'literal' && sepArg.type === 'String')) return { type: STRING };
  const sep = sepArg ? (sepArg.value as string) : '';
  return {
    type: STRING,
    fn: then(input, (c) => [joinStrings(c, sep)]),
  };
}

function extension(input: Fn, base: Compiled, arg: Expr): Compiled {
  if (arg.kind !== 'literal' || arg.type !== 'String') return { type: EXTENSION };
  const url = arg.value as string;
  // On a primitive, extensions live in the `_element` sibling, which only fhirpath.js reaches.
  if (base.choice || !base.type || primitiveKind(base.type.type)) return { type: EXTENSION };
  const fn = then(input, (c) => {
    const out: unknown[] = [];
    for (const item of c) {
      if (item === null || typeof item !== 'object' || item instanceof WrittenNumber) throw BAIL;
      const exts = (item as { extension?: unknown }).extension;
      if (!Array.isArray(exts)) continue;
      for (const x of exts) if ((x as { url?: unknown })?.url === url) out.push(x);
    }
    return out;
  });
  return { type: EXTENSION, fn };
}

function binary(op: string, left: Compiled, right: Compiled): Compiled {
  const type = BOOLEAN_OPERATORS.has(op) ? BOOLEAN : undefined;
  if (!left.fn || !right.fn) return { type };
  const l = left.fn;
  const r = right.fn;
  if (op === '=' || op === '!=') {
    const lk = left.type && primitiveKind(left.type.type);
    const rk = right.type && primitiveKind(right.type.type);
    if (!lk || lk !== rk || !(lk === 'string' || lk === 'boolean' || lk === 'integer')) return { type };
    const negate = op === '!=';
    return { type, fn: (focus, env) => equals(l(focus, env), r(focus, env), negate) };
  }
  if ((op === 'and' || op === 'or') && isBoolean(left) && isBoolean(right)) {
    return { type, fn: op === 'and' ? (f, env) => and(l(f, env), r(f, env)) : (f, env) => or(l(f, env), r(f, env)) };
  }
  return { type };
}

function equals(a: Collection, b: Collection, negate: boolean): Collection {
  if (a.length === 0 || b.length === 0) return [];
  let same = a.length === b.length;
  for (let i = 0; same && i < a.length; i++) same = plain(a[i]) === plain(b[i]);
  return [same !== negate];
}

function plain(v: unknown): unknown {
  return v instanceof WrittenNumber ? v.valueOf() : v;
}

function truth(c: Collection): boolean | undefined {
  if (c.length === 0) return undefined;
  if (c.length > 1 || typeof c[0] !== 'boolean') throw BAIL;
  return c[0];
}

function and(a: Collection, b: Collection): Collection {
  const x = truth(a);
  const y = truth(b);
  if (x === false || y === false) return [false];
  return x === true && y === true ? [true] : [];
}

function or(a: Collection, b: Collection): Collection {
  const x = truth(a);
  const y = truth(b);
  if (x === true || y === true) return [true];
  return x === false && y === false ? [false] : [];
}
