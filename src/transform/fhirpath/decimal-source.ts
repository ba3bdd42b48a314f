/**
 * FHIR decimals keep the precision they are written with (`1.0` is not `1`), which lowBoundary() and
 * highBoundary() depend on, but JSON.parse forgets it. parseFhirJson() parses with JSON.parse and notes,
 * beside the parsed objects, the written text of every number that a JS number would not print the same
 * way. Resources parsed with plain JSON.parse still work: their decimals simply have the precision their
 * JS number prints with.
 */

const written = new WeakMap<object, Map<string, string>>();

/** The text a number was written with, when it differs from how the JS number prints. */
export function writtenNumber(container: unknown, key: string | number): string | undefined {
  return container !== null && typeof container === 'object' ? written.get(container)?.get(String(key)) : undefined;
}

const TOKENS = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const MARK = '\u0000#';

export function parseFhirJson(text: string): unknown {
  // Quick exit: without a fraction ending in 0 or an exponent, every number prints as written.
  if (!/\d\.\d*0(?!\d)|\d[eE]/.test(text)) return JSON.parse(text);
  let marked = false;
  const rewritten = text.replace(TOKENS, (t) => {
    if (t.startsWith('"') || String(Number(t)) === t) return t;
    marked = true;
    return `"\\u0000#${t}"`; // JSON text for MARK + t
  });
  if (!marked) return JSON.parse(text);
  return JSON.parse(rewritten, function (this: object, key: string, value: unknown) {
    if (typeof value !== 'string' || !value.startsWith(MARK)) return value;
    const source = value.slice(MARK.length);
    let m = written.get(this);
    if (!m) written.set(this, (m = new Map()));
    m.set(key, source);
    return Number(source);
  });
}
