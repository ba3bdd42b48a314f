import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ERROR_CLASSES } from '../src/deadletter/error-class.js';

/** The README's table of error classes, as [class, meaning] rows. */
function documented(): Array<[string, string]> {
  const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Dead letters'));
  const lines = section.slice(section.indexOf('| `error_class` | meaning |')).split('\n');
  const table = lines.slice(2, lines.findIndex((l) => !l.startsWith('|')));
  return table.map((l) => {
    const m = /^\| `(\w+)` \| (.+) \|$/.exec(l);
    if (!m) throw new Error(`README: not a row of the error-class table: ${l}`);
    return [m[1]!, m[2]!];
  });
}

it('documents every dead-letter error class in the README, with the meaning the registry gives it', () => {
  expect(documented()).toEqual(Object.entries(ERROR_CLASSES));
});
