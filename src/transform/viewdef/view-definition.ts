import { ConfigError } from '../../config/config-error.js';
import { isResourceType } from '../fhirpath/model.js';

/**
 * A SQL on FHIR v2 ViewDefinition, checked for shape and read into typed form. Every node keeps `at`, its
 * JSON pointer inside the view, so later errors (FHIRPath syntax, unknown constants, unionAll branches
 * that differ) can name the exact place.
 */

export interface ViewDefinition {
  name?: string;
  resource: string;
  constants: Constant[];
  where: WhereClause[];
  select: SelectNode[];
}

export interface Constant {
  at: string;
  name: string;
  /** The value[x] key, e.g. `valueDate`. */
  key: string;
  /** The FHIR type of the value[x] element, e.g. `string`, `dateTime`, `positiveInt`. */
  type: string;
  value: unknown;
}

export interface WhereClause {
  at: string;
  path: string;
}

export interface SelectNode {
  at: string;
  column: ColumnDef[];
  select: SelectNode[];
  unionAll: SelectNode[];
  forEach?: string;
  forEachOrNull?: string;
  repeat?: string[];
}

export interface ColumnDef {
  at: string;
  name: string;
  path: string;
  type?: string;
  collection: boolean;
  tags: Array<{ name: string; value: string }>;
}

/** SQL on FHIR's name rule for views and columns: usable unquoted in every database. */
const NAME = /^[A-Za-z][A-Za-z0-9_]*$/;
const COMMON = ['id', 'extension', 'modifierExtension', 'description'];
const SELECT_KEYS = new Set([...COMMON, 'column', 'select', 'unionAll', 'forEach', 'forEachOrNull', 'repeat']);
const COLUMN_KEYS = new Set([...COMMON, 'name', 'path', 'type', 'collection', 'tag']);

export class ViewReader {
  constructor(private readonly file: string) {}

  fail(at: string, expected: string): never {
    throw new ConfigError(this.file, at, expected);
  }

  read(json: unknown): ViewDefinition {
    const v = this.object(json, '');
    if (v.resourceType !== undefined && v.resourceType !== 'ViewDefinition') this.fail('/resourceType', 'expected "ViewDefinition"');
    const name = v.name === undefined ? undefined : this.name(v.name, '/name');
    const resource = this.string(v.resource, '/resource', 'a FHIR resource type');
    if (!isResourceType(resource)) this.fail('/resource', `expected a FHIR R4 resource type, got ${JSON.stringify(resource)}`);
    const constants = this.array(v.constant, '/constant').map((c, i) => this.constant(c, `/constant/${i}`));
    const where = this.array(v.where, '/where').map((w, i) => {
      const at = `/where/${i}`;
      return { at, path: this.string(this.object(w, at).path, `${at}/path`, 'a FHIRPath expression') };
    });
    if (v.select === undefined) this.fail('', 'missing required key "select"');
    const select = this.array(v.select, '/select').map((s, i) => this.select(s, `/select/${i}`));
    if (select.length === 0) this.fail('/select', 'expected at least one select');
    return { name, resource, constants, where, select };
  }

  private select(json: unknown, at: string): SelectNode {
    const s = this.object(json, at);
    this.knownKeys(s, SELECT_KEYS, at);
    const iterators = ['forEach', 'forEachOrNull', 'repeat'].filter((k) => s[k] !== undefined);
    if (iterators.length > 1) this.fail(at, `expected at most one of forEach, forEachOrNull and repeat, got ${iterators.join(' and ')}`);
    const node: SelectNode = {
      at,
      column: this.array(s.column, `${at}/column`).map((c, i) => this.column(c, `${at}/column/${i}`)),
      select: this.array(s.select, `${at}/select`).map((c, i) => this.select(c, `${at}/select/${i}`)),
      unionAll: this.array(s.unionAll, `${at}/unionAll`).map((c, i) => this.select(c, `${at}/unionAll/${i}`)),
    };
    if (s.forEach !== undefined) node.forEach = this.string(s.forEach, `${at}/forEach`, 'a FHIRPath expression');
    if (s.forEachOrNull !== undefined) node.forEachOrNull = this.string(s.forEachOrNull, `${at}/forEachOrNull`, 'a FHIRPath expression');
    if (s.repeat !== undefined) {
      node.repeat = this.array(s.repeat, `${at}/repeat`).map((p, i) => this.string(p, `${at}/repeat/${i}`, 'a FHIRPath expression'));
      if (node.repeat.length === 0) this.fail(`${at}/repeat`, 'expected at least one FHIRPath expression');
    }
    return node;
  }

  private column(json: unknown, at: string): ColumnDef {
    const c = this.object(json, at);
    this.knownKeys(c, COLUMN_KEYS, at);
    const col: ColumnDef = {
      at,
      name: this.name(c.name, `${at}/name`),
      path: this.string(c.path, `${at}/path`, 'a FHIRPath expression'),
      collection: false,
      tags: this.array(c.tag, `${at}/tag`).map((t, i) => {
        const tag = this.object(t, `${at}/tag/${i}`);
        return { name: this.string(tag.name, `${at}/tag/${i}/name`, 'a tag name'), value: this.string(tag.value, `${at}/tag/${i}/value`, 'a tag value') };
      }),
    };
    if (c.type !== undefined) col.type = this.string(c.type, `${at}/type`, 'a FHIR type code');
    if (c.collection !== undefined) {
      if (typeof c.collection !== 'boolean') this.fail(`${at}/collection`, 'expected true or false');
      col.collection = c.collection;
    }
    return col;
  }

  private constant(json: unknown, at: string): Constant {
    const c = this.object(json, at);
    const name = this.name(c.name, `${at}/name`);
    const values = Object.keys(c).filter((k) => /^value[A-Z]/.test(k));
    if (values.length !== 1) this.fail(at, `expected exactly one value[x] for constant ${JSON.stringify(name)}, got ${values.length}`);
    const key = values[0]!;
    const type = key.slice(5, 6).toLowerCase() + key.slice(6);
    return { at, name, key, type, value: c[key] };
  }

  private name(value: unknown, at: string): string {
    const s = this.string(value, at, 'a name');
    if (!NAME.test(s)) this.fail(at, `expected a name of letters, digits and _ starting with a letter, got ${JSON.stringify(s)}`);
    return s;
  }

  private knownKeys(o: Record<string, unknown>, known: Set<string>, at: string): void {
    for (const k of Object.keys(o)) if (!known.has(k)) this.fail(`${at}/${k}`, `unknown key ${JSON.stringify(k)}`);
  }

  private object(value: unknown, at: string): Record<string, unknown> {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) this.fail(at, 'expected an object');
    return value as Record<string, unknown>;
  }

  private array(value: unknown, at: string): unknown[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) this.fail(at, 'expected an array');
    return value;
  }

  private string(value: unknown, at: string, what: string): string {
    if (value === undefined) this.fail(at, `missing ${what}`);
    if (typeof value !== 'string' || value === '') this.fail(at, `expected ${what} (a non-empty string), got ${JSON.stringify(value)}`);
    return value;
  }
}
