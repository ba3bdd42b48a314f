/**
 * SQL identifiers that come from configuration (tables, columns, schemas). They are validated against a
 * strict pattern, folded to lower case so analysts can write them unquoted, and always quoted in SQL.
 */
export const IDENTIFIER_PATTERN = '^[A-Za-z_][A-Za-z0-9_]{0,62}$';
const IDENTIFIER = new RegExp(IDENTIFIER_PATTERN);

export function isIdentifier(name: string): boolean {
  return IDENTIFIER.test(name);
}

/** Double-quotes a validated identifier. Refuses anything that did not pass validation. */
export function quoteIdent(name: string): string {
  if (!IDENTIFIER.test(name)) throw new Error(`refusing to quote invalid SQL identifier ${JSON.stringify(name)}`);
  return `"${name}"`;
}

export function qualified(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}
