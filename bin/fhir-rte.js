#!/usr/bin/env -S node --max-semi-space-size=64 --heap-growing-percent=100
// A 64 MiB young generation: fhir-rte makes short-lived objects for every event (parsed JSON, rows,
// SQL parameters); with V8's default, scavenges and premature promotion took a third of its CPU.
// The old space grows to twice what the last full collection kept, not V8's up to four times: what
// survives there is mostly batches promoted while they waited on the database, dead soon after, and a
// full collection of fhir-rte's small live heap costs ~25 ms. A backfill peaked ~100 MB lower for <1% CPU.
import { run } from '../dist/src/cli/main.js';

await run(process.argv);
