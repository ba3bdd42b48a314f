import type { UserInvocationTable } from 'fhirpath';

/**
 * SQL on FHIR's getResourceKey() and getReferenceKey([type]). A key is `Type/id`, the same text as the
 * source resource system column (`source_resource_id`, `_source_resource_id` in a view table), so a view's keys join with fhir-rte's own tables and with other views.
 * Both the fast path and fhirpath.js call these two functions, so they cannot disagree.
 */

export function resourceKeyOf(node: unknown): string | undefined {
  if (!node || typeof node !== 'object') return undefined;
  const { resourceType, id } = node as { resourceType?: unknown; id?: unknown };
  return typeof resourceType === 'string' && typeof id === 'string' ? `${resourceType}/${id}` : undefined;
}

/**
 * `Patient/1`, `Patient/1/_history/2` and `https://server/fhir/Patient/1` all give `Patient/1`. Contained
 * (`#x`), logical (`urn:uuid:`) and conditional (`Patient?identifier=`) references have no key.
 */
export function referenceKeyOf(node: unknown, type?: string): string | undefined {
  if (!node || typeof node !== 'object') return undefined;
  const reference = (node as { reference?: unknown }).reference;
  if (typeof reference !== 'string') return undefined;
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(reference);
  if (!m || reference.includes('?')) return undefined;
  if (type !== undefined && m[1] !== type) return undefined;
  return `${m[1]}/${m[2]}`;
}

function typeName(spec: unknown): string | undefined {
  return spec && typeof spec === 'object' ? (spec as { name?: string }).name : undefined;
}

/** For fhirpath.js, which hands user functions plain values (not its ResourceNode wrappers). */
export const keyFunctions: UserInvocationTable = {
  getResourceKey: {
    fn: (inputs: unknown[]) => inputs.map((x) => resourceKeyOf(x)).filter((k) => k !== undefined),
    arity: { 0: [] },
  },
  getReferenceKey: {
    fn: (inputs: unknown[], spec?: unknown) =>
      inputs.map((x) => referenceKeyOf(x, typeName(spec))).filter((k) => k !== undefined),
    arity: { 0: [], 1: ['TypeSpecifier'] },
  },
} as unknown as UserInvocationTable;
