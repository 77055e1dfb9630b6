import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError, configFileFrom, loadConfig } from '../../src/config/load.js'

const dir = mkdtempSync(join(tmpdir(), 'rdg-config-'))
function file (name: string, text: string): string {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

t.test('the environment alone configures one registry with defaults', async t => {
  const config = loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:5000', REGISTRY_USERNAME: 'u', REGISTRY_PASSWORD: 'p' })
  t.equal(config.host, '127.0.0.1')
  t.equal(config.port, 8080)
  t.equal(config.logLevel, 'info')
  t.same(config.graphql, { graphiql: false, introspection: true, maxDepth: 8, maxFields: 200, maxMutationsPerDocument: 1, maxAuditEventsPerDocument: 1, maxRegistryReadsPerDocument: 1 })
  t.same(config.limits, { bodyBytes: 65536, requestsPerWindow: 600, windowMs: 60000, failedAuthPerWindow: 30, coTagScansPerCaller: 2 })
  t.same(config.metrics, { enabled: true, public: false })
  t.equal(config.shutdownTimeoutMs, 10000)
  t.same(config.registries.default, {
    url: 'http://127.0.0.1:5000',
    username: 'u',
    password: 'p',
    timeouts: { connectMs: 2000, requestMs: 10000 },
    tls: { insecure: false },
    tokenRealmOrigins: [],
    tokenCacheSize: 10000,
    connections: 16,
    untagStrategy: 'swap',
    defaultMode: 'auto'
  })
  t.same(config.audit, { driver: 'sqlite', path: './data/audit.db', poolSize: 10, statementTimeoutMs: 10_000, lockWaitMs: 60_000, reconcileIntervalMs: 300_000, reconcileAfterMs: 300_000, connectRetry: { initialMs: 500, maxMs: 30_000 }, retentionDays: 90, listScanLimit: 1000 })
  t.same({ pages: config.tagListMaxPages, bytes: config.tagListMaxBytes, scan: config.coTagScanLimit }, { pages: 10000, bytes: 33554432, scan: 50000 }, 'co-tag check limits')
  t.ok(Object.isFrozen(config.registries.default), 'config is frozen')
  t.same(config.cleanups, {
    maxTags: 100_000, concurrency: 16, plansPerCaller: 2, runConcurrency: 4, maxDeletions: 100, heartbeatMs: 5000, staleAfterMs: 30_000, cancelWaitMs: 10_000, pollMs: 1000
  })
  t.same(config.retention, { runAs: 'retention', policies: [] })
})

t.test('the example file is valid and documents every key', async t => {
  const config = loadConfig(['--config', new URL('../../config.example.yaml', import.meta.url).pathname], {})
  t.same(Object.keys(config.registries), ['default', 'mirror'])
  t.equal(config.policyFile, './policy.yaml')
  t.same(config.audit, { driver: 'sqlite', path: './data/audit.db', poolSize: 10, statementTimeoutMs: 10_000, lockWaitMs: 60_000, reconcileIntervalMs: 300_000, reconcileAfterMs: 300_000, connectRetry: { initialMs: 500, maxMs: 30_000 }, retentionDays: 90, listScanLimit: 1000 })
  t.equal(loadConfig(['--config', new URL('../../config.example.yaml', import.meta.url).pathname], { AUDIT_DB: 'x.db' }).audit.retentionDays, 90, 'AUDIT_DB keeps the other audit keys')
  t.equal(config.registries.default?.tls.caFile, '/etc/ssl/private-ca.pem')
})

t.test('environment overrides a file', async t => {
  const path = file('multi.yaml', 'defaultRegistry: main\nregistries:\n  main: { url: "http://127.0.0.1:1" }\n  other: { url: "https://other.example" }\n')
  const config = loadConfig([`--config=${path}`], { PORT: '9000', HOST: '0.0.0.0', LOG_LEVEL: 'warn', POLICY_FILE: 'p.yaml', REGISTRY_URL: 'http://127.0.0.1:2', AUDIT_DB: '/var/lib/rdg/audit.db' })
  t.equal(config.audit.path, '/var/lib/rdg/audit.db')
  t.equal(config.port, 9000)
  t.equal(config.host, '0.0.0.0')
  t.equal(config.logLevel, 'warn')
  t.equal(config.policyFile, 'p.yaml')
  t.equal(config.registries.main?.url, 'http://127.0.0.1:2')
  t.equal(config.registries.other?.url, 'https://other.example')
  t.equal(loadConfig([], { CONFIG_FILE: path }).registries.main?.url, 'http://127.0.0.1:1', 'CONFIG_FILE names the file')
  t.same(config.chat, {}, 'no Slack without a signing secret')
  const slack = file('slack.yaml', 'registries:\n  default: { url: "http://127.0.0.1:1" }\nchat:\n  slack: { signingSecret: from-the-file, announce: true }\n')
  t.match(loadConfig([`--config=${slack}`], { SLACK_SIGNING_SECRET: 'from-the-environment' }).chat.slack,
    { signingSecret: 'from-the-environment', announce: true, responseOrigins: ['https://hooks.slack.com'], planTtlMs: 600_000 }, 'SLACK_SIGNING_SECRET overrides the file and keeps the rest')
  t.equal(loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', SLACK_SIGNING_SECRET: 'only-the-environment' }).chat.slack?.signingSecret, 'only-the-environment')
  const mattermost = file('mattermost.yaml', 'registries:\n  default: { url: "http://127.0.0.1:1" }\nchat:\n  mattermost: { token: from-the-file, publicUrl: "https://gateway.example" }\n')
  t.match(loadConfig([`--config=${mattermost}`], { MATTERMOST_TOKEN: 'token-from-env', MATTERMOST_ACTION_SECRET: 'action-secret-from-env' }).chat.mattermost,
    { token: 'token-from-env', actionSecret: 'action-secret-from-env', publicUrl: 'https://gateway.example', planTtlMs: 600_000 }, 'MATTERMOST_TOKEN and MATTERMOST_ACTION_SECRET override the file and keep the rest')
  t.throws(() => loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', MATTERMOST_TOKEN: 'only-a-token' }), /actionSecret|publicUrl/, 'a token alone is not a Mattermost configuration')
  t.same(loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,' }).trustProxy, ['10.0.0.0/8', '127.0.0.1'], 'TRUST_PROXY')
  t.same(loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1' }).trustProxy, [], 'no proxy is trusted by default')
  t.throws(() => loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', TRUST_PROXY: 'everyone' }), /trustProxy/, 'only addresses and CIDR ranges')
  const cursorSecret = 'cursor-secret-from-the-environment-0123'
  t.match(loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', BROWSE_CURSOR_SECRET: cursorSecret }).browse, { cursorSecret, catalogPageSize: 1000 }, 'BROWSE_CURSOR_SECRET')
  t.throws(() => loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', BROWSE_CURSOR_SECRET: 'short' }), /cursorSecret/, 'a cursor secret of fewer than 32 characters')
  const browsing = file('browse.yaml', 'registries:\n  default: { url: "http://127.0.0.1:1" }\nbrowse: { tagTtlMs: 0 }\n')
  t.match(loadConfig([`--config=${browsing}`], { BROWSE_CURSOR_SECRET: cursorSecret }).browse, { cursorSecret, tagTtlMs: 0 }, 'BROWSE_CURSOR_SECRET keeps the file\'s browse keys')
  const origins = loadConfig([`--config=${path}`], { REGISTRY_TOKEN_REALM_ORIGINS: 'https://auth.docker.io, https://gitlab.example.com,' })
  t.same(origins.registries.main?.tokenRealmOrigins, ['https://auth.docker.io', 'https://gitlab.example.com'], 'REGISTRY_TOKEN_REALM_ORIGINS, comma-separated, for the default registry')
  t.same(origins.registries.other?.tokenRealmOrigins, [])
  t.throws(() => loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:5000', REGISTRY_TOKEN_REALM_ORIGINS: 'https://auth.example.com/token' }), /tokenRealmOrigins\/0: must match pattern|tokenRealmOrigins\.0/)
  const untag = loadConfig([`--config=${path}`], { REGISTRY_UNTAG_STRATEGY: 'native', REGISTRY_DEFAULT_MODE: 'untag' }).registries
  t.match(untag.main, { url: 'http://127.0.0.1:1', untagStrategy: 'native', defaultMode: 'untag' }, 'the untag keys override the default registry only')
  t.match(untag.other, { untagStrategy: 'swap', defaultMode: 'auto' })
})

t.test('errors name the key and the rule', async t => {
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['', {}, /no registry configured/],
    ['port: 99999\nregistries: { default: { url: "http://x" } }', {}, /port: must be <= 65535/],
    ['registries: { default: { url: "ftp://x" } }', {}, /registries\.default\.url: must match pattern/],
    ['registries: { default: { url: "http://x", timeouts: { requestMs: 0 } } }', {}, /registries\.default\.timeouts\.requestMs: must be >= 1/],
    ['registries: { default: { url: "http://x", colour: red } }', {}, /registries\.default: must not have additional properties \(unknown: colour\)/],
    ['registries: { default: { url: "http://x" } }\ndefaultRegistry: nope', {}, /defaultRegistry: must name a key of registries \(have: default\)/],
    ['registries: { default: { url: "http://x" } }', { PORT: 'eighty' }, /port: must be integer/],
    ['registries: { default: { url: "http://x" } }', { LOG_LEVEL: 'loud' }, /logLevel/],
    ['registries: [a]', {}, /registries: must be object/],
    ['colour: red\nregistries: { default: { url: "http://x" } }', {}, /\(top level\): must not have additional properties \(unknown: colour\)/],
    ['registries: { default: 7 }', {}, /registries.default: must be object/],
    ['registries: { default: { url: "http://x", untagStrategy: delete-by-tag } }', {}, /registries\.default\.untagStrategy/],
    ['registries: { default: { url: "http://x" } }', { REGISTRY_DEFAULT_MODE: 'everything' }, /registries\.default\.defaultMode/],
    ['- a list', {}, /must be a YAML mapping/],
    ['registries: [unclosed', {}, /not valid YAML/],
    ['registries: { default: { url: "http://x" } }\nretention: { policies: [{ name: a, repositories: [app], rules: { select: [{ regex: "(a)\\\\1" }] } }] }', {},
      /retention\.policies\[0\]\.rules\.select\[0\]\.regex is refused: .*linear-time engine/],
    ['registries: { default: { url: "http://x" } }\nretention: { policies: [{ name: a, repositories: [app], rules: {} }, { name: a, repositories: [b], rules: {} }] }', {},
      /retention\.policies\[1\]\.name: a is the name of an earlier policy/],
    ['registries: { default: { url: "http://x" } }\nretention: { policies: [{ name: a, registry: nope, repositories: [app], rules: {} }] }', {},
      /retention\.policies\[0\]\.registry: must name a key of registries/],
    ['registries: { default: { url: "http://x" } }\nretention: { policies: [{ name: a, repositories: [app], rules: { deleteOlderThan: soon } }] }', {},
      /retention\.policies\.0\.rules\.deleteOlderThan|retention\.policies\[0\]\.rules\.deleteOlderThan/]
  ]
  for (const [text, env, expected] of cases) {
    const path = file('bad.yaml', text)
    t.throws(() => loadConfig(['--config', path], env), expected, `${text} ${JSON.stringify(env)}`)
  }
  t.throws(() => loadConfig(['--config', join(dir, 'missing.yaml')], {}), /cannot read config file/)
  t.throws(() => configFileFrom(['--config'], {}), ConfigError)
  t.throws(() => configFileFrom(['--config'], {}), /--config needs a file name/)
})

t.test('an empty file with the environment is enough', async t => {
  const path = file('empty.yaml', '')
  t.equal(loadConfig(['--config', path], { REGISTRY_URL: 'http://127.0.0.1:3' }).registries.default?.url, 'http://127.0.0.1:3')
})

t.test('issue 14: audit.driver postgres takes its URL from audit.url or DATABASE_URL, and needs one', async t => {
  const path = file('pg.yaml', 'registries:\n  default: { url: "http://127.0.0.1:1" }\naudit:\n  driver: postgres\n  poolSize: 4\n')
  const config = loadConfig([`--config=${path}`], { DATABASE_URL: 'postgres://rdg:s3cret@127.0.0.1:5432/rdg' })
  t.match(config.audit, { driver: 'postgres', url: 'postgres://rdg:s3cret@127.0.0.1:5432/rdg', poolSize: 4, statementTimeoutMs: 10_000 })
  t.throws(() => loadConfig([`--config=${path}`], {}), /audit\.url: required with audit\.driver postgres/)
  t.throws(() => loadConfig([`--config=${path}`], { DATABASE_URL: 'mysql://x' }), /audit\.url/)
  t.equal(loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1' }).audit.driver, 'sqlite', 'SQLite stays the default')
  t.match(loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', DATABASE_URL: 'postgresql://h/db' }).audit, { driver: 'sqlite', url: 'postgresql://h/db' },
    'DATABASE_URL alone does not switch the driver')
})

t.test('issue 14: with driver postgres, audit.reconcileAfterMs is above lockWaitMs plus the slowest registry\'s timeouts', async t => {
  const yaml = (after: number): string => file('reconcile.yaml', `registries:
  default: { url: "http://127.0.0.1:1", timeouts: { connectMs: 100, requestMs: 400 } }
  slow: { url: "http://127.0.0.1:2", timeouts: { connectMs: 1000, requestMs: 9000 } }
audit: { driver: postgres, url: "postgres://h/db", lockWaitMs: 5000, reconcileAfterMs: ${after} }
`)
  t.equal(loadConfig(['--config', yaml(15_000)], {}).audit.reconcileAfterMs, 15_000, 'the minimum itself is accepted')
  t.throws(() => loadConfig(['--config', yaml(14_999)], {}),
    /audit\.reconcileAfterMs: must be at least 15000 with driver postgres \(audit\.lockWaitMs 5000 \+ the slowest registry's connectMs \+ requestMs 10000\)/)
  t.equal(loadConfig(['--config', file('sqlite.yaml', 'registries: { default: { url: "http://x" } }\naudit: { reconcileAfterMs: 0 }\n')], {}).audit.reconcileAfterMs, 0,
    'one SQLite replica has no request in flight elsewhere')
})

t.test('cleanups.staleAfterMs holds at least three heartbeats, so a late beat does not stop a live run', async t => {
  const yaml = (stale: number): string => file('heartbeat.yaml', `registries: { default: { url: "http://x" } }
cleanups: { heartbeatMs: 1000, staleAfterMs: ${stale} }
`)
  t.equal(loadConfig(['--config', yaml(3000)], {}).cleanups.staleAfterMs, 3000, 'three beats are enough')
  t.throws(() => loadConfig(['--config', yaml(2999)], {}), /cleanups\.staleAfterMs: must be at least 3 × cleanups\.heartbeatMs \(3000\)/)
})

t.test('issue 14: audit.tls names PEM files; TLS is set either there or in the URL, and a client certificate comes with its key', async t => {
  const path = file('pg-tls.yaml', 'registries:\n  default: { url: "http://127.0.0.1:1" }\naudit:\n  driver: postgres\n  tls: { caFile: /etc/rdg/ca.pem, servername: db.internal }\n')
  const config = loadConfig([`--config=${path}`], { DATABASE_URL: 'postgres://rdg@10.0.0.5/rdg' })
  t.same(config.audit.tls, { caFile: '/etc/rdg/ca.pem', servername: 'db.internal', rejectUnauthorized: true })
  t.throws(() => loadConfig([`--config=${path}`], { DATABASE_URL: 'postgres://rdg@10.0.0.5/rdg?sslmode=verify-full' }), /audit\.tls: give TLS either in audit\.tls or as ssl parameters of audit\.url, not both/)
  t.equal(loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', DATABASE_URL: 'postgres://h/db?sslmode=verify-full' }).audit.tls, undefined, 'the URL alone may say it')
  const halfPair = file('pg-half.yaml', 'registries:\n  default: { url: "http://127.0.0.1:1" }\naudit:\n  driver: postgres\n  url: postgres://h/db\n  tls: { certFile: /etc/rdg/client.pem }\n')
  t.throws(() => loadConfig([`--config=${halfPair}`], {}), /audit\.tls: certFile and keyFile go together/)
})

t.test('issue 13: webhooks take their secret and URL from WEBHOOK_<NAME>_*, need a secret to sign, have unique names', async t => {
  const secret = `whsec_${Buffer.from('twenty-four bytes or more, ok').toString('base64')}`
  const path = file('hooks.yaml', `registries:
  default: { url: "http://127.0.0.1:1" }
notifications:
  webhooks:
    - { name: ci-main, url: "http://127.0.0.1:2/hook" }
    - { name: chat, url: "http://127.0.0.1:3/hook", format: slack, events: [deleted, refused] }
`)
  const config = loadConfig(['--config', path], { WEBHOOK_CI_MAIN_SECRET: secret, WEBHOOK_CHAT_URL: 'https://hooks.slack.com/services/T/B/x' })
  t.same(config.notifications.webhooks, [
    { name: 'ci-main', url: 'http://127.0.0.1:2/hook', secret, events: ['deleted', 'untagged', 'restored', 'approved', 'cleanup.planned', 'cleanup.finished', 'cleanup.failed'], format: 'standard', timeoutMs: 10_000 },
    { name: 'chat', url: 'https://hooks.slack.com/services/T/B/x', events: ['deleted', 'refused'], format: 'slack', timeoutMs: 10_000 }
  ])
  t.same(config.notifications.retry, { firstDelayMs: 5000, maxDelayMs: 3_600_000 })
  t.throws(() => loadConfig(['--config', path], {}), /notifications\.webhooks\.0\.secret: required with format standard .*WEBHOOK_CI_MAIN_SECRET/)
  const badSecret = 'whsec_short'
  const error = (() => { try { loadConfig(['--config', path], { WEBHOOK_CI_MAIN_SECRET: badSecret }) } catch (error) { return error as Error } })()
  t.match(error?.message, /notifications\.webhooks\.0\.secret: must match pattern/)
  t.notOk(error?.message.includes(badSecret), 'the error never quotes the secret')
  const twice = file('twice.yaml', `registries:
  default: { url: "http://127.0.0.1:1" }
notifications:
  webhooks:
    - { name: a, url: "http://127.0.0.1:2/hook", format: slack }
    - { name: a, url: "http://127.0.0.1:3/hook", format: slack, events: [] }
`)
  t.throws(() => loadConfig(['--config', twice], {}), /notifications\.webhooks\.1\.events/, 'an empty event list is refused')
  const same = file('same.yaml', `registries:
  default: { url: "http://127.0.0.1:1" }
notifications:
  webhooks:
    - { name: a, url: "http://127.0.0.1:2/hook", format: slack }
    - { name: a, url: "http://127.0.0.1:3/hook", format: slack }
`)
  t.throws(() => loadConfig(['--config', same], {}), /notifications\.webhooks\.1\.name: a is the name of an earlier webhook/)
  const odd = file('odd.yaml', 'registries:\n  default: { url: "http://127.0.0.1:1" }\nnotifications:\n  webhooks: ["not a webhook", { url: "http://x/" }]\n')
  t.throws(() => loadConfig(['--config', odd], { WEBHOOK_A_SECRET: secret }), /notifications\.webhooks\.0: must be object/)
  const tuned = file('tuned.yaml', 'registries:\n  default: { url: "http://127.0.0.1:1" }\nnotifications:\n  pollMs: 50\n')
  t.equal(loadConfig(['--config', tuned], { WEBHOOK_A_SECRET: secret }).notifications.pollMs, 50)
  t.same(loadConfig([], { REGISTRY_URL: 'http://127.0.0.1:1', WEBHOOK_A_SECRET: secret }).notifications.webhooks, [], 'no webhooks by default')
})
