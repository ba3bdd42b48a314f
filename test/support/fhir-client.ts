import { authenticator } from '../../src/fhir-client/auth.js';
import { FhirClient, type FhirClientOptions } from '../../src/fhir-client/fhir-client.js';
import { silent } from './sink.js';

/** A client of a stand-in server, without auth, with short timeouts and retries; a test overrides what it is about. */
export function testFhirClient(baseUrl: string, overrides: Partial<FhirClientOptions> = {}): FhirClient {
  return new FhirClient({
    baseUrl,
    auth: authenticator({ type: 'none' }),
    timeoutMs: 5000,
    maxAttempts: 3,
    retry: { initialMs: 20, maxMs: 100 },
    retryAfterMaxMs: 1000,
    logger: silent,
    ...overrides,
  });
}
