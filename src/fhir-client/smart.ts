import { randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import { fetch as undiciFetch, type Dispatcher } from 'undici';
import type { Authenticator } from './auth.js';
import { FhirServerError } from './fhir-error.js';

export type SmartAlg = 'RS384' | 'ES384';

/** SMART Backend Services: the key is loaded and checked against `alg` at config load. */
export interface SmartAuthConfig {
  type: 'smart';
  tokenUrl: string;
  clientId: string;
  privateKey: KeyObject;
  alg: SmartAlg;
  kid?: string;
  scope: string;
}

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** A token is renewed this long before the server says it expires, so a request never carries a dying one. */
const EXPIRY_MARGIN_MS = 30_000;

interface Token {
  header: string;
  renewAt: number;
}

/**
 * A client-credentials grant authenticated by a signed JWT (SMART App Launch, Backend Services). The token
 * is cached until shortly before `expires_in` runs out and shared by concurrent requests. Token endpoint
 * faults are FhirServerErrors sorted like the FHIR server's own, so the client's one retry loop handles both:
 * 429, 5xx and lost connections are transient, any other 4xx refuses our credentials (fatal). Neither the
 * key, the assertion nor the token is ever put into a message.
 */
export class SmartBackendServices implements Authenticator {
  private token: Promise<Token> | undefined;

  constructor(
    private readonly config: SmartAuthConfig,
    private readonly timeoutMs: number,
    private readonly dispatcher?: Dispatcher,
  ) {}

  async headers(signal?: AbortSignal): Promise<Record<string, string>> {
    const cached = this.token;
    const current = cached ?? (this.token = this.fetchToken(signal));
    let token: Token;
    try {
      token = await current;
    } catch (err) {
      if (this.token === current) this.token = undefined;
      throw err;
    }
    // A token fetched for this request is used even if its life is shorter than the way here took.
    if (cached === undefined || Date.now() < token.renewAt) return { authorization: token.header };
    if (this.token === cached) this.token = undefined;
    return this.headers(signal);
  }

  /** The FHIR server refused our token: worth one more try only when it was a cached one (revoked early). */
  rejected(): boolean {
    const had = this.token !== undefined;
    this.token = undefined;
    return had;
  }

  private async fetchToken(signal?: AbortSignal): Promise<Token> {
    const { tokenUrl, clientId, scope } = this.config;
    const body = new URLSearchParams({ grant_type: 'client_credentials', scope, client_assertion_type: ASSERTION_TYPE, client_assertion: await this.assertion() });
    const timeout = AbortSignal.timeout(this.timeoutMs);
    let res: Awaited<ReturnType<typeof undiciFetch>>;
    let text: string;
    try {
      const via = this.dispatcher ? { dispatcher: this.dispatcher } : {};
      res = await undiciFetch(tokenUrl, { method: 'POST', body, headers: { accept: 'application/json' }, signal: signal ? AbortSignal.any([signal, timeout]) : timeout, ...via });
      text = await res.text();
    } catch (err) {
      signal?.throwIfAborted();
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = timeout.aborted ? `no answer within ${this.timeoutMs} ms` : (cause?.code ?? cause?.message ?? (err as Error).message);
      throw new FhirServerError('transient', tokenUrl, `the SMART token endpoint ${tokenUrl} could not be reached: ${why}`);
    }
    const answer = parseOrUndefined(text) as { access_token?: unknown; token_type?: unknown; expires_in?: unknown; error?: unknown; error_description?: unknown } | undefined;
    if (!res.ok) {
      const oauth = [answer?.error, answer?.error_description].filter((t) => typeof t === 'string' && t !== '').join(': ');
      const said = oauth ? ` (${oauth})` : '';
      if (res.status === 429 || res.status >= 500) throw new FhirServerError('transient', tokenUrl, `the SMART token endpoint ${tokenUrl} answered HTTP ${res.status}${said}`, res.status);
      throw new FhirServerError('auth', tokenUrl, `the SMART token endpoint ${tokenUrl} refused client ${clientId} (HTTP ${res.status})${said}; check fhirServer.auth (clientId, privateKey, alg, kid, scope)`, res.status, oauth || undefined);
    }
    if (typeof answer?.access_token !== 'string' || answer.access_token === '') {
      throw new FhirServerError('auth', tokenUrl, `the SMART token endpoint ${tokenUrl} answered HTTP ${res.status} without an access_token`, res.status);
    }
    const lifetimeMs = typeof answer.expires_in === 'number' && answer.expires_in > 0 ? answer.expires_in * 1000 : 300_000;
    // Short-lived tokens keep a tenth of their life as margin rather than the whole fixed margin.
    const renewAt = Date.now() + lifetimeMs - Math.min(EXPIRY_MARGIN_MS, lifetimeMs / 10);
    return { header: `Bearer ${answer.access_token}`, renewAt };
  }

  /** A fresh client assertion: single use (random jti), valid five minutes. */
  private assertion(): Promise<string> {
    const { clientId, tokenUrl, alg, kid, privateKey } = this.config;
    return new SignJWT({})
      .setProtectedHeader({ alg, typ: 'JWT', ...(kid === undefined ? {} : { kid }) })
      .setIssuer(clientId)
      .setSubject(clientId)
      .setAudience(tokenUrl)
      .setJti(randomUUID())
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
  }
}

function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
