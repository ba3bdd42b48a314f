import type { Dispatcher } from 'undici';
import { SmartBackendServices, type SmartAuthConfig } from './smart.js';

/**
 * How fhir-rte proves who it is to the FHIR server. The client asks for headers before every request and
 * tells the authenticator when the server refused them, so a token-based scheme (SMART Backend Services,
 * smart.ts: its token cached until it expires) is one more implementation without changing the client.
 */
export interface Authenticator {
  /** Headers for the next request (an Authorization header, or none). */
  headers(signal?: AbortSignal): Promise<Record<string, string>>;
  /**
   * The server answered 401 to these headers. Returns true when fresh ones may succeed (a cached token
   * that expired early): the client then retries once. Static credentials cannot improve, so they say false.
   */
  rejected?(): boolean;
}

export type AuthConfig =
  | { type: 'none' }
  | { type: 'basic'; username: string; password: string }
  | { type: 'bearer'; token: string }
  | SmartAuthConfig;

/** `dispatcher`: the FHIR client's TLS settings (tls.ts), for a token endpoint behind the same private CA. */
export function authenticator(config: AuthConfig, options: { timeoutMs?: number; dispatcher?: Dispatcher } = {}): Authenticator {
  switch (config.type) {
    case 'smart':
      return new SmartBackendServices(config, options.timeoutMs ?? 30_000, options.dispatcher);
    case 'none':
      return staticHeaders({});
    case 'basic':
      return staticHeaders({ authorization: `Basic ${Buffer.from(`${config.username}:${config.password}`).toString('base64')}` });
    case 'bearer':
      return staticHeaders({ authorization: `Bearer ${config.token}` });
  }
}

function staticHeaders(headers: Record<string, string>): Authenticator {
  return { headers: async () => headers, rejected: () => false };
}
