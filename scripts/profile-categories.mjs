// Sorts a .cpuprofile of bench/_sink-profile.js into the sink's cost categories (BENCHMARKS.md, sink, 'Where the time goes'):
// each sample goes to the category of its deepest frame that belongs to one. node scripts/profile-categories.mjs FILE.cpuprofile
// DETAIL=<category prefix> also lists the frames inside that category.
import { readFileSync } from 'node:fs';
const p = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const byId = new Map(p.nodes.map(n => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const rules = [
  ['idle', f => f.functionName === '(idle)'],
  ['GC', f => f.functionName === '(garbage collector)'],
  ['bench input (not the sink)', f => /bench\/(sink|_sink-profile)\.js/.test(f.url) && /upsert|generate/.test(f.functionName) || /synthetic-data|from-fhir/.test(f.url)],
  ['row ids (SHA-1)', f => f.functionName === 'rowId'],
  ['content digest (SHA-256)', f => f.functionName === 'contentOf'],
  ['FHIRPath and row values', f => /dist\/src\/transform\/|node_modules\/fhirpath/.test(f.url)],
  ['parameter building (node-postgres arrays)', f => /pg\/lib\/utils\.js/.test(f.url)],
  ['SQL protocol, socket, results (node-postgres)', f => /node_modules\/(pg|pg-protocol|pg-pool|pg-types)\/|node:net|node:internal\/stream|node:internal\/net/.test(f.url) || ['writev', 'writeBuffer', 'writeUtf8String'].includes(f.functionName)],
  ['statements: rows, state rows and documents as parameters (sink)', f => /dist\/src\/sink\/postgres\/(statements|postgres-sink)\.js/.test(f.url) && !['transaction','apply','applyChunks','applyIsolating','retrying'].includes(f.functionName) || /instant\.js/.test(f.url)],
  ['planning and guard', f => /dist\/src\/sink\/(plan|guard)\.js/.test(f.url) || f.functionName === 'resourceKey'],
];
const sums = new Map();
let total = 0; const detail = new Map();
for (let i = 0; i < p.samples.length; i++) {
  const dt = p.timeDeltas[i] ?? 0; total += dt;
  let cat = 'other (start-up, Postgres process, async plumbing)';
  for (let cur = p.samples[i]; cur !== undefined; cur = parent.get(cur)) {
    const f = byId.get(cur).callFrame;
    const hit = rules.find(([, r]) => r(f));
    if (hit) { cat = hit[0]; break; }
  }
  sums.set(cat, (sums.get(cat) ?? 0) + dt);
  if (process.env.DETAIL && cat.startsWith(process.env.DETAIL)) { let c = p.samples[i]; for (; c !== undefined; c = parent.get(c)) { const f = byId.get(c).callFrame; if (rules.find(([, r]) => r(f))) break; } const f = byId.get(c).callFrame; const k = f.functionName + ":" + f.url.split("/").pop() + ":" + f.lineNumber; detail.set(k, (detail.get(k) ?? 0) + dt); }
}
const skip = new Set(['idle', 'bench input (not the sink)', 'other (start-up, Postgres process, async plumbing)']);
const sinkTotal = [...sums].filter(([k]) => !skip.has(k)).reduce((a, [, v]) => a + v, 0);
for (const [k, v] of [...sums].sort((a, b) => b[1] - a[1])) console.log(`${k.padEnd(70)} ${(v / 1e6).toFixed(2).padStart(6)} s ${(100 * v / total).toFixed(1).padStart(5)}% of profile${skip.has(k) ? '' : `  ${(100 * v / sinkTotal).toFixed(1).padStart(5)}% of sink`}`);
console.log('total', (total / 1e6).toFixed(2), 's; sink', (sinkTotal / 1e6).toFixed(2), 's');
for (const [k, v] of [...detail].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log("   ", k, (v / 1e6).toFixed(2));
