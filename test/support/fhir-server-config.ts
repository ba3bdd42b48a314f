import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config/config.js';

/**
 * fhir-rte's configuration with a `fhirServer` section, read (and validated) from a file as a user would
 * write it, with no environment: for wiring `fhirServerReads` (src/sources/resthook/fhir-server-reads.ts)
 * the way `fhir-rte start` does.
 */
export function configWithFhirServer(baseUrl: string, fhirServer: Record<string, unknown> = {}): Config {
  const file = join(mkdtempSync(join(tmpdir(), 'fhir-rte-config-')), 'fhir-rte.json');
  writeFileSync(file, JSON.stringify({ fhirServer: { baseUrl, ...fhirServer } }));
  return loadConfig(file, {}, {});
}
