import { expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

/** fhir-rte's logger as the built CLI uses it, in a process of its own: its stderr is what an operator sees. */
const LOGGER = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'logger.js');

async function logged(format: string | undefined): Promise<string> {
  const script = `
    const { createLogger } = await import(${JSON.stringify(LOGGER)});
    createLogger('info').info({
      headers: { authorization: 'Bearer hdr-secret', 'x-signature': 'sig-secret' },
      auth: { token: 'tok-secret', password: 'pw-secret', privateKey: 'key-secret' },
      config: { http: { adminToken: 'adm-secret' } }, secret: 'plain-secret', gender: 'female',
    }, 'hello');`;
  const env = { ...process.env };
  delete env.FHIR_RTE_LOG_FORMAT;
  if (format) env.FHIR_RTE_LOG_FORMAT = format;
  const { stderr } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { env });
  return stderr;
}

it('logs JSON lines when stderr is not a terminal, with every known secret redacted', async () => {
  const out = await logged(undefined);
  const line = JSON.parse(out.trim()) as Record<string, unknown>;
  expect(line).toMatchObject({ msg: 'hello', gender: 'female', secret: '****', headers: { authorization: '****', 'x-signature': '****' } });
  expect(out).not.toMatch(/-secret/);
});

it('logs readable lines when asked (as on a terminal), redacted the same way', async () => {
  const out = await logged('pretty');
  expect(out).toMatch(/INFO.*hello/);
  expect(() => JSON.parse(out.trim())).toThrow();
  expect(out).toContain('****');
  expect(out).not.toMatch(/-secret/);
});
