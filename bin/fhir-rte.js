#!/usr/bin/env -S node --max-semi-space-size=64
// A 64 MiB young generation: fhir-rte makes short-lived objects for every event (parsed JSON, rows,
// SQL parameters); with V8's default, scavenges and premature promotion took a third of its CPU.
import { main } from '../dist/src/cli/main.js';

main(process.argv).catch((err) => {
  process.stderr.write(`fhir-rte: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
