/**
 * Why PostgreSQL could not be reached, in words /readyz may show to anyone: the kind of failure and its code, never
 * the driver's message (it can hold the host, port, user or a path) and never the URL (it can hold the password).
 */
const bySqlState: Record<string, string> = {
  '28P01': 'PostgreSQL refused the password',
  28000: 'PostgreSQL refused the login (pg_hba.conf rules, user or client certificate)',
  '3D000': 'the database does not exist',
  '57P03': 'PostgreSQL is starting up or shutting down',
  53300: 'PostgreSQL has no connection slot left (max_connections)'
}

const bySystemCode: Record<string, string> = {
  ECONNREFUSED: 'PostgreSQL refused the connection (is it running and listening?)',
  ECONNRESET: 'PostgreSQL closed the connection',
  ENOTFOUND: 'the PostgreSQL host name does not resolve',
  EAI_AGAIN: 'the PostgreSQL host name does not resolve',
  ETIMEDOUT: 'connecting to PostgreSQL timed out',
  EHOSTUNREACH: 'the PostgreSQL host is unreachable',
  ENETUNREACH: 'the PostgreSQL host is unreachable'
}

/** Node's certificate verification codes (openssl's names) and its ERR_TLS_* codes. */
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_)/

export function describePostgresError (error: unknown): string {
  const { code, message } = (typeof error === 'object' && error !== null ? error : {}) as { code?: unknown, message?: unknown }
  const text = typeof message === 'string' ? message : ''
  if (typeof code === 'string') {
    const known = bySqlState[code] ?? bySystemCode[code]
    if (known !== undefined) return known
    if (TLS_CODE.test(code)) return `the TLS handshake with PostgreSQL failed (${code})`
    if (/^[0-9A-Z]{5}$/.test(code)) return `PostgreSQL answered with SQLSTATE ${code}`
  }
  if (/timeout/i.test(text)) return 'connecting to PostgreSQL timed out'
  if (/does not support SSL/i.test(text)) return 'PostgreSQL does not offer TLS, which audit.tls or the URL asks for'
  // The store's own refusal to run against a newer schema: its text names versions only.
  if (/^audit database schema version \d+ is newer/.test(text)) return text
  return 'PostgreSQL could not be opened'
}
