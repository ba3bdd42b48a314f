/** The library API of fhir-rte (the package's main entry). */
export type { ChangeEvent, FhirResource, Origin } from './events/change-event.js';
export type { Transformer, TableSpec, ColumnSpec, Row, RowSet } from './transform/transformer.js';
export { RULES_SYSTEM_COLUMNS, VIEW_SYSTEM_COLUMNS, type SystemColumns } from './transform/system-columns.js';
export { ERROR_CLASSES, type ErrorClass } from './deadletter/error-class.js';
export { compileView, type CompiledView, type ViewColumn } from './transform/viewdef/compile-view.js';
export { isViewDefinition, loadViewDefinition, viewTransformer } from './transform/viewdef/view-transformer.js';
export { parseFhirJson, stringifyFhirJson, WrittenNumber } from './events/fhir-json.js';
