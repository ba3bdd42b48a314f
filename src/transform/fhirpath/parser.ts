import { tokenize, type Token } from './lexer.js';

/**
 * A FHIRPath parser for the fast path. It accepts the whole grammar so that types can be inferred for any
 * expression, but it is never the authority on syntax: fhirpath.js compiles every expression too, and an
 * expression this parser rejects simply runs on fhirpath.js.
 */

export type Expr =
  | { kind: 'literal'; type: 'String' | 'Integer' | 'Decimal' | 'Boolean'; value: string | number | boolean }
  | { kind: 'opaque-literal'; text: string } // dates, times, longs, quantities: left to fhirpath.js
  | { kind: 'empty' }
  | { kind: 'special'; name: 'this' | 'index' | 'total' }
  | { kind: 'variable'; name: string }
  | { kind: 'member'; base: Expr | null; name: string }
  | { kind: 'call'; base: Expr | null; name: string; args: Expr[] }
  | { kind: 'indexer'; base: Expr; index: Expr }
  | { kind: 'unary'; op: '+' | '-'; operand: Expr }
  | { kind: 'binary'; op: string; left: Expr; right: Expr }
  | { kind: 'type-op'; op: 'is' | 'as'; operand: Expr; type: string };

export class ParseError extends Error {
  override readonly name = 'ParseError';
}

/** Binary operators by precedence, loosest first (FHIRPath grammar, section "Operator precedence"). */
const LEVELS: string[][] = [
  ['implies'],
  ['or', 'xor'],
  ['and'],
  ['in', 'contains'],
  ['=', '~', '!=', '!~'],
  ['<=', '<', '>', '>='],
  ['|'],
  ['is', 'as'],
  ['+', '-', '&'],
  ['*', '/', 'div', 'mod'],
];
const KEYWORD_OPS = new Set(['implies', 'or', 'xor', 'and', 'in', 'contains', 'is', 'as', 'div', 'mod']);

export function parse(text: string): Expr {
  const p = new Parser(tokenize(text));
  const e = p.expression(0);
  p.expectEnd();
  return e;
}

class Parser {
  private i = 0;
  constructor(private readonly tokens: Token[]) {}

  private peek(): Token {
    return this.tokens[this.i]!;
  }

  private isOp(t: Token, values: string[]): boolean {
    if (t.kind === 'op') return values.includes(t.value);
    return t.kind === 'identifier' && KEYWORD_OPS.has(t.value) && values.includes(t.value) && !this.quotedIdentifier(t);
  }

  /** A backtick-quoted identifier is never a keyword; the lexer keeps the raw span to tell. */
  private quotedIdentifier(t: Token): boolean {
    return t.end - t.start !== t.value.length;
  }

  private take(value: string): void {
    const t = this.peek();
    if (!((t.kind === 'op' || t.kind === 'identifier') && t.value === value)) throw new ParseError(`expected ${value} at ${t.start}`);
    this.i++;
  }

  expectEnd(): void {
    if (this.peek().kind !== 'eof') throw new ParseError(`unexpected input at ${this.peek().start}`);
  }

  expression(level: number): Expr {
    if (level >= LEVELS.length) return this.unary();
    const ops = LEVELS[level]!;
    let left = this.expression(level + 1);
    for (;;) {
      const t = this.peek();
      if (!this.isOp(t, ops)) return left;
      this.i++;
      if (t.value === 'is' || t.value === 'as') {
        left = { kind: 'type-op', op: t.value, operand: left, type: this.typeSpecifier() };
      } else {
        left = { kind: 'binary', op: t.value, left, right: this.expression(level + 1) };
      }
    }
  }

  private typeSpecifier(): string {
    const parts = [this.identifier()];
    while (this.isOp(this.peek(), ['.'])) {
      this.i++;
      parts.push(this.identifier());
    }
    return parts.join('.');
  }

  private identifier(): string {
    const t = this.peek();
    if (t.kind !== 'identifier') throw new ParseError(`expected a name at ${t.start}`);
    this.i++;
    return t.value;
  }

  private unary(): Expr {
    const t = this.peek();
    if (this.isOp(t, ['+', '-'])) {
      this.i++;
      return { kind: 'unary', op: t.value as '+' | '-', operand: this.unary() };
    }
    return this.postfix(this.term());
  }

  private postfix(base: Expr): Expr {
    for (;;) {
      const t = this.peek();
      if (this.isOp(t, ['.'])) {
        this.i++;
        base = this.invocation(base);
      } else if (this.isOp(t, ['['])) {
        this.i++;
        const index = this.expression(0);
        this.take(']');
        base = { kind: 'indexer', base, index };
      } else {
        return base;
      }
    }
  }

  private invocation(base: Expr | null): Expr {
    const t = this.peek();
    if (t.kind === 'special' && base === null) {
      this.i++;
      return { kind: 'special', name: t.value as 'this' | 'index' | 'total' };
    }
    const name = this.identifier();
    if (!this.isOp(this.peek(), ['('])) return { kind: 'member', base, name };
    this.i++;
    const args: Expr[] = [];
    if (!this.isOp(this.peek(), [')'])) {
      args.push(this.expression(0));
      while (this.isOp(this.peek(), [','])) {
        this.i++;
        args.push(this.expression(0));
      }
    }
    this.take(')');
    return { kind: 'call', base, name, args };
  }

  private term(): Expr {
    const t = this.peek();
    switch (t.kind) {
      case 'string':
        this.i++;
        return { kind: 'literal', type: 'String', value: t.value };
      case 'number':
        this.i++;
        return this.quantity(t) ?? { kind: 'literal', type: t.value.includes('.') ? 'Decimal' : 'Integer', value: Number(t.value) };
      case 'long':
      case 'datetime':
        this.i++;
        return { kind: 'opaque-literal', text: t.value };
      case 'variable':
        this.i++;
        return { kind: 'variable', name: t.value };
      case 'special':
      case 'identifier':
        if (t.kind === 'identifier' && (t.value === 'true' || t.value === 'false') && !this.quotedIdentifier(t)) {
          this.i++;
          return { kind: 'literal', type: 'Boolean', value: t.value === 'true' };
        }
        return this.invocation(null);
      case 'op':
        if (t.value === '(') {
          this.i++;
          const e = this.expression(0);
          this.take(')');
          return e;
        }
        if (t.value === '{') {
          this.i++;
          this.take('}');
          return { kind: 'empty' };
        }
    }
    throw new ParseError(`unexpected ${t.value || 'end'} at ${t.start}`);
  }

  /** `5 'mg'` or `4 days`: a quantity literal, which only fhirpath.js evaluates. */
  private quantity(number: Token): Expr | undefined {
    const t = this.peek();
    const unit =
      t.kind === 'string' ||
      (t.kind === 'identifier' && /^(year|month|week|day|hour|minute|second|millisecond)s?$/.test(t.value));
    if (!unit) return undefined;
    this.i++;
    return { kind: 'opaque-literal', text: `${number.value} ${t.value}` };
  }
}
