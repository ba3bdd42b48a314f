#!/usr/bin/env -S node --max-semi-space-size=16 --heap-growing-percent=100
// A 16 MiB young generation (semi-space), chosen on numbers (BENCHMARKS.md, load and backfill): what
// survives a scavenge is mostly the batches in flight, waiting on the database, so a larger young
// generation buys few scavenges but costs its size in RSS. `fhir-rte load` of 600k Synthea resources
// peaked at 222 MB with 16 MiB, 260 MB with 32 and 334 MB with 64, for 0-9% more CPU than 64 (a backfill:
// the same CPU per resource for 16, 32 and 64).
// The old space grows to twice what the last full collection kept, not V8's up to four times: what
// survives there is mostly batches promoted while they waited on the database, dead soon after, and a
// full collection of fhir-rte's small live heap costs ~25 ms. A backfill peaked ~100 MB lower for <1% CPU.
import { run } from '../dist/src/cli/main.js';

await run(process.argv);
