#!/usr/bin/env -S node --max-semi-space-size=64
// A 64 MiB young generation: fhir-rte makes short-lived objects for every event (parsed JSON, rows,
// SQL parameters); with V8's default, scavenges and premature promotion took a third of its CPU.
import { run } from '../dist/src/cli/main.js';

await run(process.argv);
