/**
 * Runs the fhir-rte CLI from the TypeScript sources (through tsx), so process tests exercise the current
 * code even when dist/ is stale. Same behaviour as bin/fhir-rte.js.
 */
import { main } from '../../src/cli/main.js';

main(process.argv).catch((err: unknown) => {
  process.stderr.write(`fhir-rte: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
