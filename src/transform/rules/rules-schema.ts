import { IDENTIFIER_PATTERN } from '../../config/identifier.js';

/**
 * JSON Schema of a rules file, compatible with Smile CDR's Realtime Export Rules Definition (same key
 * names and enums), plus fhir-rte's optional `where` filter per transformer.
 */
const identifier = { type: 'string', pattern: IDENTIFIER_PATTERN, description: 'letters, digits and _, at most 63, not starting with a digit' } as const;

const column = {
  type: 'object',
  additionalProperties: false,
  required: ['columnName', 'fhirPath', 'columnType'],
  properties: {
    columnName: identifier,
    fhirPath: { type: 'string', minLength: 1 },
    columnType: { enum: ['STRING', 'INT', 'LONG', 'DECIMAL', 'BOOLEAN', 'DATE', 'TIMESTAMP', 'JSON'] },
    multiplePrimitiveStrategy: { enum: ['ERROR', 'FIRST', 'CONCAT', 'JSON_ARRAY'] },
    maximumSize: { type: 'integer', minimum: 1, maximum: 10485760 },
  },
} as const;

const tableBody = {
  tableName: identifier,
  columns: { type: 'array', items: { $ref: '#/definitions/column' } },
  childTables: { type: 'array', items: { $ref: '#/definitions/childTable' } },
};

export const rulesSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['transformers'],
  definitions: {
    column,
    childTable: {
      type: 'object',
      additionalProperties: false,
      required: ['fhirPath'],
      properties: { fhirPath: { type: 'string', minLength: 1 }, childTransformerName: { type: 'string', minLength: 1 }, ...tableBody },
    },
  },
  properties: {
    transformers: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['resourceType', 'tableName', 'columns'],
        properties: {
          resourceType: { type: 'string', pattern: '^[A-Z][A-Za-z]+$', description: 'a FHIR resource type' },
          where: { type: 'string', minLength: 1 },
          ...tableBody,
        },
      },
    },
    namedTransformers: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'columns'],
        properties: { name: { type: 'string', minLength: 1 }, ...tableBody },
      },
    },
    retainAllHistory: { type: 'boolean' },
    concatenationDelimiter: { type: 'string' },
    overflowStrategy: { enum: ['TRUNCATE', 'ERROR'] },
  },
} as const;

export type ColumnType = (typeof column.properties.columnType.enum)[number];
export type MultiplePrimitiveStrategy = (typeof column.properties.multiplePrimitiveStrategy.enum)[number];

export interface RulesColumn {
  columnName: string;
  fhirPath: string;
  columnType: ColumnType;
  multiplePrimitiveStrategy?: MultiplePrimitiveStrategy;
  maximumSize?: number;
}

export interface RulesTableBody {
  tableName?: string;
  columns?: RulesColumn[];
  childTables?: RulesChildTable[];
}

export interface RulesChildTable extends RulesTableBody {
  fhirPath: string;
  childTransformerName?: string;
}

export interface RulesFile {
  transformers: Array<RulesTableBody & { resourceType: string; tableName: string; columns: RulesColumn[]; where?: string }>;
  namedTransformers?: Array<RulesTableBody & { name: string; columns: RulesColumn[] }>;
  retainAllHistory?: boolean;
  concatenationDelimiter?: string;
  overflowStrategy?: 'TRUNCATE' | 'ERROR';
}
