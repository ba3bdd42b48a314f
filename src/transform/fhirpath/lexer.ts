/**
 * FHIRPath tokens. The lexer serves two callers: the parser of the fast path, and the ViewDefinition
 * compiler, which replaces `%constant` tokens with literals without touching string contents.
 */

export type TokenKind =
  | 'string' // '...'
  | 'number' // 12, 1.5
  | 'long' // 12L
  | 'datetime' // @2020-01-01, @T12:00
  | 'identifier' // name or `quoted name`
  | 'special' // $this, $index, $total
  | 'variable' // %name, %`name`, %'name'
  | 'op' // punctuation and symbolic operators
  | 'eof';

export interface Token {
  kind: TokenKind;
  /** Decoded value: string contents, identifier name, variable name, operator text. */
  value: string;
  start: number;
  end: number;
}

export class LexError extends Error {
  override readonly name = 'LexError';
}

const OPERATORS = ['<=', '>=', '!=', '!~', '.', '[', ']', '(', ')', ',', '=', '~', '<', '>', '+', '-', '*', '/', '|', '&', '{', '}'];
const ESCAPES: Record<string, string> = { "'": "'", '"': '"', '`': '`', '\\': '\\', '/': '/', f: '\f', n: '\n', r: '\r', t: '\t' };

export function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (text.startsWith('//', i)) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl;
    } else if (text.startsWith('/*', i)) {
      const close = text.indexOf('*/', i + 2);
      if (close < 0) throw new LexError('unterminated comment');
      i = close + 2;
    } else if (c === "'" || c === '`') {
      const [value, end] = quoted(text, i);
      tokens.push({ kind: c === "'" ? 'string' : 'identifier', value, start: i, end });
      i = end;
    } else if (c === '%') {
      const next = text[i + 1];
      if (next === '`' || next === "'") {
        const [value, end] = quoted(text, i + 1);
        tokens.push({ kind: 'variable', value, start: i, end });
        i = end;
      } else {
        // `%vs-name` and `%ext-name` (FHIR's value set and extension shorthands) are the only names with '-'.
        const m = /^(?:(?:vs|ext)-[A-Za-z0-9_.-]+|[A-Za-z_][A-Za-z0-9_]*)/.exec(text.slice(i + 1));
        if (!m) throw new LexError(`bad variable at ${i}`);
        tokens.push({ kind: 'variable', value: m[0], start: i, end: i + 1 + m[0].length });
        i += 1 + m[0].length;
      }
    } else if (c === '$') {
      const m = /^\$(this|index|total)\b/.exec(text.slice(i));
      if (!m) throw new LexError(`bad special name at ${i}`);
      tokens.push({ kind: 'special', value: m[1]!, start: i, end: i + m[0].length });
      i += m[0].length;
    } else if (c === '@') {
      const m = /^@(T?[0-9][0-9:.TZ+-]*)/.exec(text.slice(i));
      if (!m) throw new LexError(`bad date/time literal at ${i}`);
      tokens.push({ kind: 'datetime', value: m[1]!, start: i, end: i + m[0].length });
      i += m[0].length;
    } else if (/[0-9]/.test(c)) {
      const m = /^[0-9]+(\.[0-9]+)?(L)?/.exec(text.slice(i))!;
      tokens.push({ kind: m[2] ? 'long' : 'number', value: m[2] ? m[0].slice(0, -1) : m[0], start: i, end: i + m[0].length });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i))!;
      tokens.push({ kind: 'identifier', value: m[0], start: i, end: i + m[0].length });
      i += m[0].length;
    } else {
      const op = OPERATORS.find((o) => text.startsWith(o, i));
      if (!op) throw new LexError(`unexpected ${JSON.stringify(c)} at ${i}`);
      tokens.push({ kind: 'op', value: op, start: i, end: i + op.length });
      i += op.length;
    }
  }
  tokens.push({ kind: 'eof', value: '', start: text.length, end: text.length });
  return tokens;
}

/** Reads a '...' or `...` literal starting at `start`; returns its decoded value and the index after it. */
function quoted(text: string, start: number): [string, number] {
  const q = text[start]!;
  let out = '';
  let i = start + 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === q) return [out, i + 1];
    if (c === '\\') {
      const e = text[i + 1];
      if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
        out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
        i += 6;
        continue;
      }
      if (e === undefined || !(e in ESCAPES)) throw new LexError(`bad escape at ${i}`);
      out += ESCAPES[e];
      i += 2;
      continue;
    }
    out += c;
    i++;
  }
  throw new LexError(`unterminated ${q === "'" ? 'string' : 'identifier'}`);
}

/** A FHIRPath string literal for `s`, safe to splice into an expression. */
export function stringLiteral(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t')}'`;
}
