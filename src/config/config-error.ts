import type { ErrorObject } from 'ajv';

/**
 * A configuration or transformer file that cannot be used. The message always names the file, the JSON
 * path inside it and what was expected, so an operator can fix it without reading our source.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly file: string,
    readonly path: string,
    readonly expected: string,
  ) {
    super(`${file}: ${path || '/'}: ${expected}`);
  }
}

/** Several problems found in one file, reported together so a user fixes them in one go. */
export class ConfigErrors extends Error {
  override readonly name = 'ConfigErrors';
  constructor(readonly errors: ConfigError[]) {
    super(errors.map((e) => e.message).join('\n'));
  }
}

/** Turns ajv's errors into ConfigErrors, keeping only the most specific one per path. */
export function fromAjvErrors(file: string, errors: ErrorObject[], root = ''): ConfigErrors {
  const seen = new Set<string>();
  const out: ConfigError[] = [];
  for (const e of significant(errors)) {
    const err = new ConfigError(file, root + e.instancePath, describe(e));
    if (!seen.has(err.message)) out.push(err);
    seen.add(err.message);
  }
  return new ConfigErrors(out);
}

/** oneOf/anyOf failures repeat every branch's complaint; the branch errors alone are clearer. */
function significant(errors: ErrorObject[]): ErrorObject[] {
  const specific = errors.filter((e) => e.keyword !== 'oneOf' && e.keyword !== 'anyOf' && e.keyword !== 'if');
  return specific.length ? specific : errors;
}

function describe(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown key ${JSON.stringify(p.additionalProperty)}`;
    case 'required':
      return `missing required key ${JSON.stringify(p.missingProperty)}`;
    case 'type':
      return `expected ${String(p.type)}`;
    case 'enum':
      return `expected one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'pattern':
      return `expected a value matching ${String(p.pattern)}${e.parentSchema?.description ? ` (${e.parentSchema.description})` : ''}`;
    default:
      return `expected a value that ${e.message ?? 'is valid'}`;
  }
}
