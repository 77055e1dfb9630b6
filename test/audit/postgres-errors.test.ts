import t from 'tap'
import { describePostgresError } from '../../src/audit/postgres-errors.js'

t.test('issue 14: a failed PostgreSQL open in words safe for /readyz: the kind and code, never the driver text', async t => {
  const cases: Array<[unknown, RegExp]> = [
    [Object.assign(new Error('connect ECONNREFUSED 10.1.2.3:5432'), { code: 'ECONNREFUSED' }), /^PostgreSQL refused the connection/],
    [Object.assign(new Error('getaddrinfo ENOTFOUND db.internal'), { code: 'ENOTFOUND' }), /host name does not resolve/],
    [Object.assign(new Error('password authentication failed for user "rdg"'), { code: '28P01' }), /refused the password/],
    [Object.assign(new Error('no pg_hba.conf entry for host "10.0.0.1"'), { code: '28000' }), /refused the login/],
    [Object.assign(new Error('database "rdg" does not exist'), { code: '3D000' }), /database does not exist/],
    [Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }), /TLS handshake with PostgreSQL failed \(SELF_SIGNED_CERT_IN_CHAIN\)/],
    [Object.assign(new Error("Hostname/IP does not match certificate's altnames: Host: other.test"), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }), /TLS handshake .*ERR_TLS_CERT_ALTNAME_INVALID/],
    [Object.assign(new Error('relation "x" does not exist at /secret/path'), { code: '42P01' }), /^PostgreSQL answered with SQLSTATE 42P01$/],
    [new Error('Connection terminated due to connection timeout'), /timed out/],
    [new Error('The server does not support SSL connections'), /does not offer TLS/],
    [new Error('audit database schema version 9 is newer than this gateway knows (1): run a newer gateway or restore a backup'), /^audit database schema version 9 is newer/],
    [Object.assign(new Error('odd failure at postgres://rdg:s3cret@db/rdg'), { code: 'EWHATEVER' }), /^PostgreSQL could not be opened$/],
    ['a string', /^PostgreSQL could not be opened$/],
    [null, /^PostgreSQL could not be opened$/]
  ]
  for (const [error, expected] of cases) {
    const text = describePostgresError(error)
    t.match(text, expected, text)
    t.notMatch(text, /10\.|db\.internal|rdg|s3cret|\/secret/, 'names no host, user, path or password')
  }
})
