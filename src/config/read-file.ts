import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './config-error.js';

/** Reads a JSON or YAML file; a missing or unparsable file is a ConfigError naming it. */
export function readStructuredFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(file, '', code === 'ENOENT' ? 'file not found' : `cannot be read (${code ?? (err as Error).message})`);
  }
  try {
    return file.endsWith('.json') ? JSON.parse(text) : parseYaml(text, { prettyErrors: true });
  } catch (err) {
    const kind = file.endsWith('.json') ? 'JSON' : 'YAML';
    // The yaml package's message ends with a code frame (the line, a caret under the column): keep it.
    const [first, ...frame] = (err as Error).message.trimEnd().split('\n');
    const shown = frame.length ? `${first}\n${frame.map((l) => (l ? `    ${l}` : l)).join('\n')}` : first;
    throw new ConfigError(file, '', `not valid ${kind}: ${shown}`);
  }
}
