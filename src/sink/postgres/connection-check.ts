import pg from 'pg';

/**
 * Connects once before a command starts its work, so that a database it cannot reach is one clear line
 * naming host, port, database and user (never the password) rather than a driver's bare
 * `connect ECONNREFUSED 127.0.0.1:5432`, which does not say which setting to fix.
 */
export async function checkConnection(url: string, timeoutMs = 10_000): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  client.on('error', () => {}); // a connection that dies after the check is no concern of the check
  try {
    await client.connect();
  } catch (err) {
    throw new DatabaseUnreachable(`cannot connect to ${describeTarget(url)}: ${reasonOf(err, url)}`);
  } finally {
    await client.end().catch(() => {});
  }
}

export class DatabaseUnreachable extends Error {
  override readonly name = 'DatabaseUnreachable';
}

/** `Postgres at db.example:5432, database "fhir" as user "fhir_rte"`, from a connection URL. */
export function describeTarget(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'Postgres (the database URL cannot be parsed; expected postgres://user:password@host:port/database)';
  }
  const user = decodeURIComponent(u.username) || process.env.PGUSER || 'the current user';
  const host = u.searchParams.get('host') ?? (u.hostname || 'localhost');
  const port = u.port || u.searchParams.get('port') || '5432';
  const database = decodeURIComponent(u.pathname.slice(1)) || user;
  return `Postgres at ${host}:${port}, database ${JSON.stringify(database)} as user ${JSON.stringify(user)}`;
}

const REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused (is Postgres running, on that port?)',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  '28P01': 'password authentication failed',
  '3D000': 'the database does not exist',
};

function reasonOf(err: unknown, url: string): string {
  const e = err as { code?: string; message?: string; errors?: Array<{ code?: string }> };
  // Node reports a host with several addresses (localhost: ::1 and 127.0.0.1) as an AggregateError.
  const code = e.code ?? e.errors?.[0]?.code;
  const text = (code && REASONS[code]) ?? e.message ?? String(err);
  const password = passwordOf(url);
  return password ? text.replaceAll(password, '****') : text;
}

function passwordOf(url: string): string | undefined {
  try {
    return decodeURIComponent(new URL(url).password) || undefined;
  } catch {
    return undefined;
  }
}
