import { Ajv } from 'ajv';
import { fromAjvErrors } from '../../config/config-error.js';
import type { Transformer } from '../transformer.js';
import { compileRules } from './compile-rules.js';
import { rulesSchema, type RulesFile } from './rules-schema.js';

const validate = new Ajv({ allErrors: true, strict: true }).compile(rulesSchema);

export function isRulesFile(json: unknown): boolean {
  return typeof json === 'object' && json !== null && 'transformers' in json;
}

export function loadRules(json: unknown, file: string): Transformer[] {
  if (!validate(json)) throw fromAjvErrors(file, validate.errors ?? []);
  return compileRules(json as RulesFile, file);
}
