import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import type { UserInvocationTable } from 'fhirpath';

/**
 * The one door to FHIRPath. Every expression a transformer uses is compiled here once, at load, so a
 * syntax error surfaces before anything is consumed, and evaluation is a plain function call after that.
 */

export interface FhirPathOptions {
  /** Path of the node an expression is evaluated on, e.g. `Patient.name`, so choice types resolve. */
  base?: string;
  /** Extra functions (getResourceKey, getReferenceKey, ...). */
  functions?: UserInvocationTable;
}

export interface CompiledPath {
  readonly expression: string;
  evaluate(node: unknown, vars?: Record<string, unknown>): unknown[];
}

export class FhirPathSyntaxError extends Error {
  override readonly name = 'FhirPathSyntaxError';
  constructor(
    readonly expression: string,
    cause: string,
  ) {
    super(`invalid FHIRPath ${JSON.stringify(expression)}: ${cause}`);
  }
}

export function compilePath(expression: string, options: FhirPathOptions = {}): CompiledPath {
  let fn: (node: unknown, vars?: Record<string, unknown>) => unknown[];
  try {
    const path = options.base ? { base: options.base, expression } : expression;
    fn = fhirpath.compile(path, r4, { userInvocationTable: options.functions }) as typeof fn;
  } catch (err) {
    throw new FhirPathSyntaxError(expression, firstLine((err as Error).message));
  }
  return { expression, evaluate: (node, vars) => fn(node, vars) };
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}
