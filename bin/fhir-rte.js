#!/usr/bin/env -S node --max-semi-space-size=16 --heap-growing-percent=150
// Both chosen on numbers (BENCHMARKS.md, load and backfill). A 16 MiB young generation (semi-space): what
// survives a scavenge is mostly the batches in flight, waiting on the database, so a larger young
// generation buys few scavenges but costs its size in RSS: `fhir-rte load` of 600k Synthea resources
// peaked at 222 MB with 16 MiB, 260 MB with 32, 334 MB with 64 (growth 100 %), for 0-9% more CPU than 64.
// The old space grows to 2.5 times what the last full collection kept, not V8's up to four times: what
// survives there is mostly batches promoted while they waited on the database, dead soon after. A load of
// 200k resources with growth 100/150/200 % and V8's own: 222/242/277/334 MB for 13.2/12.3/11.9/12.0 s CPU.
import { run } from '../dist/src/cli/main.js';

await run(process.argv);
