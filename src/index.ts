/** The library API of fhir-rte (the package's main entry). */
export type { ChangeEvent, FhirResource, Origin } from './events/change-event.js';
export type { Transformer, TableSpec, ColumnSpec, Row, RowSet } from './transform/transformer.js';
