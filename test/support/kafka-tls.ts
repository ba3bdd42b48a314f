import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** PEM files for a TLS test: a CA, the broker's key+certificate (one file) for 127.0.0.1, a client's key and certificate. */
export interface TestCertificates {
  dir: string;
  caFile: string;
  brokerKeystoreFile: string;
  clientCertFile: string;
  clientKeyFile: string;
}

/** Made with the openssl command line (Node has no X.509 issuing of its own). */
export function makeCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-tls-'));
  const at = (f: string) => join(dir, f);
  const openssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.error) throw new Error(`cannot run openssl: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=fhir-rte test CA');
  writeFileSync(at('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const [name, cn] of [['broker', '127.0.0.1'], ['client', 'fhir-rte-client']] as const) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', 'san.ext');
  }
  // Kafka's PEM keystore: the (unencrypted PKCS#8) private key, then the certificate.
  writeFileSync(at('broker-keystore.pem'), readFileSync(at('broker.key'), 'utf8') + readFileSync(at('broker.pem'), 'utf8'));
  return { dir, caFile: at('ca.pem'), brokerKeystoreFile: at('broker-keystore.pem'), clientCertFile: at('client.pem'), clientKeyFile: at('client.key') };
}
