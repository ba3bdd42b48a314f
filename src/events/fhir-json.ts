/**
 * FHIR JSON with its numbers exactly as written. A FHIR decimal keeps the precision it is written with
 * (`1.50` is not `1.5`), and `12345678901234567890.12` does not fit a JS number, but JSON.parse keeps
 * neither. Every source, `rebuild` and dead-letter replay parse with parseFhirJson(): it parses with
 * JSON.parse and notes, beside the parsed objects, the written text of every number that a JS number
 * would print differently. The objects stay plain JSON, so everything else reads them as before; what
 * needs the exact text (a DECIMAL column, lowBoundary(), storing the resource again) asks writtenText().
 */

/** container → key → written text, for the numbers whose JS value prints otherwise. */
const written = new WeakMap<object, Map<string, string>>();
/** Every parsed object or array that holds such a number, directly or deeper down. */
const holding = new WeakSet<object>();

/** A number as it was written, where a JS number would print it otherwise: what a FHIRPath result carries out. */
export class WrittenNumber {
  constructor(readonly text: string) {}
  valueOf(): number {
    return Number(this.text);
  }
  toString(): string {
    return this.text;
  }
  /** Plain JSON.stringify can only print the JS number; stringifyFhirJson() prints the text. */
  toJSON(): number {
    return Number(this.text);
  }
}

/** The text the number at `container[key]` was written with, when it differs from how the JS number prints. */
export function writtenText(container: unknown, key: string | number): string | undefined {
  return container !== null && typeof container === 'object' ? written.get(container)?.get(String(key)) : undefined;
}

/** True when `value` is, or holds somewhere inside, a number written otherwise than its JS value prints. */
export function holdsWrittenNumbers(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (value instanceof WrittenNumber || holding.has(value)) return true;
  return Array.isArray(value) && value.some(holdsWrittenNumbers);
}

/** Marks a number token rewritten as a string; the random part keeps it apart from any string in the input. */
const MARK = `\u0000${Math.random().toString(36).slice(2)}#`;
const MARK_JSON = JSON.stringify(MARK).slice(1, -1);

/** JSON.parse, keeping the written text of every number whose JS value prints otherwise. */
export function parseFhirJson(text: string): unknown {
  const at = numbersWrittenOtherwise(text);
  if (at.length === 0) return JSON.parse(text); // the common case
  // Each such number becomes a marked string for JSON.parse, then a number again beside its noted text.
  let rewritten = '';
  let from = 0;
  for (let i = 0; i < at.length; i += 2) {
    rewritten += `${text.slice(from, at[i])}"${MARK_JSON}${text.slice(at[i], at[i + 1])}"`;
    from = at[i + 1]!;
  }
  let value: unknown;
  try {
    value = JSON.parse(rewritten + text.slice(from));
  } catch (err) {
    JSON.parse(text); // invalid JSON: the error names positions in the text as given
    throw err;
  }
  restoreNumbers(value);
  return value;
}

/** `value`, which JSON.parse made of `text`, as parseFhirJson(text) would have made it. */
export function withWrittenNumbers(value: unknown, text: string): unknown {
  return numbersWrittenOtherwise(text).length === 0 ? value : parseFhirJson(text);
}

/**
 * Start and end offsets of the number tokens (outside strings) whose JS value does not print as written.
 * Strings are skipped with indexOf, the fast part: text outside them is short. Invalid JSON gives any
 * offsets; JSON.parse reports it.
 */
function numbersWrittenOtherwise(text: string): number[] {
  const at: number[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      let j = text.indexOf('"', i + 1);
      while (j > 0 && escaped(text, j)) j = text.indexOf('"', j + 1);
      if (j < 0) return at;
      i = j + 1;
    } else if (c === 45 /* - */ || (c >= 48 && c <= 57)) {
      let j = i + 1;
      while (j < n && isNumberChar(text.charCodeAt(j))) j++;
      const token = text.slice(i, j);
      if (String(Number(token)) !== token) at.push(i, j);
      i = j;
    } else {
      i++;
    }
  }
  return at;
}

/** A quote preceded by an odd number of backslashes is inside the string. */
function escaped(text: string, quote: number): boolean {
  let k = quote - 1;
  while (text.charCodeAt(k) === 92 /* \ */) k--;
  return (quote - k) % 2 === 0;
}

function isNumberChar(c: number): boolean {
  return (c >= 48 && c <= 57) || c === 46 || c === 101 || c === 69 || c === 43 || c === 45; // 0-9 . e E + -
}

/** Turns the marked strings back into numbers, noting their text; true when `node` held any. */
function restoreNumbers(node: unknown): boolean {
  if (node === null || typeof node !== 'object') return false;
  let holds = false;
  const o = node as Record<string, unknown>;
  for (const key of Array.isArray(node) ? node.keys() : Object.keys(node)) {
    const v = o[key];
    if (typeof v === 'string') {
      if (!v.startsWith(MARK)) continue;
      const source = v.slice(MARK.length);
      o[key] = Number(source);
      let m = written.get(node);
      if (!m) written.set(node, (m = new Map()));
      m.set(String(key), source);
      holds = true;
    } else if (typeof v === 'object' && restoreNumbers(v)) {
      holds = true;
    }
  }
  if (holds) holding.add(node);
  return holds;
}

/** JSON.stringify that prints every number as written (parsed by parseFhirJson, or a WrittenNumber). */
export function stringifyFhirJson(value: unknown): string {
  return mayHold(value) ? exact(value) : JSON.stringify(value);
}

/** holdsWrittenNumbers(), also for an object built around such values (a row, a result list). */
function mayHold(value: unknown): boolean {
  if (holdsWrittenNumbers(value)) return true;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  for (const k in value) if (holdsWrittenNumbers((value as Record<string, unknown>)[k])) return true;
  return false;
}

function exact(value: unknown): string {
  if (value instanceof WrittenNumber) return value.text;
  if (!mayHold(value)) return JSON.stringify(value) ?? 'null';
  const member = (container: object, k: string | number, v: unknown): string | undefined =>
    typeof v === 'number' ? (writtenText(container, k) ?? JSON.stringify(v)) : v === undefined || typeof v === 'function' ? undefined : exact(v);
  if (Array.isArray(value)) return `[${value.map((v, i) => member(value, i, v) ?? 'null').join(',')}]`;
  const parts: string[] = [];
  for (const [k, v] of Object.entries(value as object)) {
    const text = member(value as object, k, v);
    if (text !== undefined) parts.push(`${JSON.stringify(k)}:${text}`);
  }
  return `{${parts.join(',')}}`;
}

/** A shallow copy of a parsed object with some members replaced, keeping the written text of the others. */
export function withMembers<T extends object>(source: T, changes: Partial<T>): T {
  const copy = { ...source, ...changes };
  const texts = written.get(source);
  if (texts) {
    const kept = new Map([...texts].filter(([k]) => !(k in changes)));
    if (kept.size) written.set(copy, kept);
  }
  if (holding.has(source)) holding.add(copy);
  return copy;
}
