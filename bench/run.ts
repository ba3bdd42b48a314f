/**
 * `npm run bench` runs every benchmark; `npm run bench -- NAME` runs one. Each benchmark is bench/<NAME>.ts,
 * starts whatever it needs, and prints as its last line
 * `NAME: fhir-rte <value> <unit>; <peer or limit> <value> <unit>; ratio <r>`.
 */
import { readdirSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const all = readdirSync(here)
  .filter((f) => f.endsWith('.js') && !['run.js', 'report.js'].includes(f) && !f.startsWith('_'))
  .map((f) => f.replace(/\.js$/, ''));
const wanted = process.argv.slice(2);
const unknown = wanted.filter((n) => !all.includes(n));
if (unknown.length) {
  console.error(`unknown benchmark ${unknown.join(', ')}; known: ${all.join(', ')}`);
  process.exit(2);
}
for (const name of wanted.length ? wanted : all) {
  // A busy machine shows in the benchmark's own output: figures taken beside other work are not comparable.
  const [one, five, fifteen] = loadavg().map((l) => l.toFixed(2));
  console.log(`${name}: load average at start ${one}, ${five}, ${fifteen} (${availableParallelism()} cores)`);
  const mod = (await import(`./${name}.js`)) as { run: () => Promise<void> };
  await mod.run();
}
process.exit(0);
