import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { Agent } from 'undici';

/** fhirServer.tls: PEM files (paths resolved against the config file's directory). */
export interface FhirTlsConfig {
  /** CA certificates to trust, in place of Node's public roots (a private CA). */
  ca?: string;
  /** A client certificate and its key, for a server that asks for one (mutual TLS). */
  cert?: string;
  key?: string;
  /** false accepts any server certificate: for a test server only. Default true. */
  rejectUnauthorized?: boolean;
}

/**
 * Connections to the FHIR server with the configured trust and client certificate: one undici Agent (the
 * HTTP client behind Node's fetch), kept alive and shared by every request of the client. The files are read
 * and checked together now (a key that does not match its certificate is refused here, not at the first
 * request); errors name the setting and the path, never the content.
 */
export function tlsDispatcher(tls: FhirTlsConfig): Agent {
  const ca = tls.ca === undefined ? undefined : pem(tls.ca, 'fhirServer.tls.ca');
  const cert = tls.cert === undefined ? undefined : pem(tls.cert, 'fhirServer.tls.cert');
  const key = tls.key === undefined ? undefined : pem(tls.key, 'fhirServer.tls.key');
  if ((cert === undefined) !== (key === undefined)) throw new Error('fhirServer.tls: a client certificate needs both cert and key');
  try {
    createSecureContext({ ca, cert, key });
  } catch (err) {
    throw new Error(`fhirServer.tls: ${[tls.ca, tls.cert, tls.key].filter(Boolean).join(', ')} do not make a TLS context: ${(err as { code?: string }).code ?? (err as Error).message}`);
  }
  return new Agent({ connect: { ca, cert, key, rejectUnauthorized: tls.rejectUnauthorized ?? true } });
}

function pem(path: string, setting: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${setting}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Certificate checks that fail the same way on every try: a server not trusted, or our certificate refused. */
const VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
/**
 * Alerts of a server that refuses the handshake: a TLS 1.2 server without the client certificate it asks for
 * answers handshake_failure (40). A TLS 1.3 server learns of the missing certificate only after the client
 * thinks the handshake done, and closes the connection: indistinguishable from a restart, so that stays transient.
 */
const REFUSED_ALERT = /^ERR_SSL_.*ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA|CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED|HANDSHAKE_FAILURE)$/;

/** What was wrong when a request failed for a certificate (ours or the server's), else undefined: retrying cannot fix it. */
export function tlsProblem(cause: { code?: string; message?: string } | undefined): string | undefined {
  const code = cause?.code;
  if (!code || (!VERIFY_CODES.has(code) && !REFUSED_ALERT.test(code))) return undefined;
  // OpenSSL's own text for an alert is a line of internals; the code says it.
  if (REFUSED_ALERT.test(code)) return `the server refused the handshake (fhir-rte's client certificate, or its absence) (${code})`;
  return `the server's certificate is not trusted (${code}: ${cause?.message ?? ''})`;
}
