import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../src/config/config.js';

/**
 * docker-compose.yml cannot be started here (no Docker engine), so its consistency with fhir-rte is
 * checked: each fhir-rte service's environment, loaded as fhir-rte loads it, configures what the stack's
 * comments promise, and the subscribe service points HAPI at the receiver's real address.
 */
const ROOT = join(import.meta.dirname, '..');
interface Service {
  image?: string;
  build?: string;
  profiles?: string[];
  command?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  ports?: string[];
}
const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
const { services } = compose;
/** The environment as compose passes it: `${NAME:-default}` with NAME unset. */
const envOf = (s: Service) => Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v).replace(/\$\{\w+:-([^}]*)\}/g, '$1')]));

it('the default stack runs fhir-rte in REST-hook mode on 0.0.0.0 with a secret, reading HAPI', () => {
  const rte = services['fhir-rte']!;
  expect(rte.profiles).toBeUndefined();
  const config = loadConfig(undefined, {}, envOf(rte));
  expect(config.kafka).toBeUndefined();
  expect(config.http).toEqual({ host: '0.0.0.0', port: 8090 });
  expect(config.resthook?.secret).toBeTruthy();
  expect(config.fhirServer?.baseUrl.replace(/\/$/, '')).toBe('http://hapi:8080/fhir');
  expect(config.database.url).toContain('@postgres:5432/');
  expect(rte.ports).toContain('8090:8090');
  expect(rte.command).toEqual(['start']);
});

it('the subscribe service points HAPI at the receiver with the same secret, once HAPI and fhir-rte are up', () => {
  const sub = services.subscribe!;
  const rte = services['fhir-rte']!;
  const endpoint = sub.command![sub.command!.indexOf('--endpoint') + 1]!;
  const receiver = loadConfig(undefined, {}, envOf(rte));
  expect(sub.command![0]).toBe('subscribe');
  expect(endpoint).toBe(`http://fhir-rte:${receiver.http.port}${receiver.resthook!.path}`);
  const config = loadConfig(undefined, {}, envOf(sub));
  expect(config.resthook?.secret).toBe(receiver.resthook!.secret);
  expect(config.fhirServer?.baseUrl).toBe(receiver.fhirServer!.baseUrl);
  expect(Object.keys(sub.depends_on ?? {}).sort()).toEqual(['fhir-rte', 'hapi']);
});

it('Kafka mode stays available under the kafka profile, without a receiver', () => {
  for (const name of ['kafka', 'kafka-init', 'fhir-rte-kafka']) expect(services[name]?.profiles).toEqual(['kafka']);
  const config = loadConfig(undefined, {}, envOf(services['fhir-rte-kafka']!));
  expect(config.kafka?.brokers).toEqual(['kafka:9092']);
  expect(config.resthook).toBeUndefined();
});

it('every environment variable the fhir-rte services set is one fhir-rte reads', () => {
  const source = readFileSync(join(ROOT, 'src', 'config', 'config.ts'), 'utf8');
  for (const name of ['fhir-rte', 'subscribe', 'fhir-rte-kafka']) {
    for (const key of Object.keys(services[name]!.environment ?? {})) expect(source, `${name}: ${key}`).toContain(`env.${key}`);
  }
});
