import { writtenText } from '../../events/fhir-json.js';

/** What fhir-rte reads of fhirpath.js's ResourceNode (its internal structures): a value and where it sits. */
export interface ResourceNodeLike {
  data: unknown;
  fhirNodeDataType?: string | null;
  parentResNode?: { data: unknown } | null;
  /** The member name; for a choice the name without its type (`value` for `valueQuantity`). */
  propName?: string | null;
  index?: number | null;
}

export function isResourceNode(x: unknown): x is ResourceNodeLike {
  return !!x && typeof x === 'object' && x.constructor?.name === 'ResourceNode';
}

/** The text a node's number was written with (see events/fhir-json.ts), when it prints otherwise. */
export function nodeWrittenText(node: ResourceNodeLike): string | undefined {
  const parent = node.parentResNode?.data;
  const name = node.propName;
  if (!name || parent === null || typeof parent !== 'object') return undefined;
  const own = written(parent as Record<string, unknown>, name, node.index);
  if (own !== undefined || (parent as Record<string, unknown>)[name] !== undefined) return own;
  // A choice element: the JSON key carries the type (`valueDecimal`), the node only the name.
  for (const key of Object.keys(parent)) {
    if (key.length > name.length && key.startsWith(name) && /[A-Z]/.test(key[name.length]!)) {
      const t = written(parent as Record<string, unknown>, key, node.index);
      if (t !== undefined) return t;
    }
  }
  return undefined;
}

function written(parent: Record<string, unknown>, key: string, index: number | null | undefined): string | undefined {
  return index != null ? writtenText(parent[key], index) : writtenText(parent, key);
}
