// Issue 13, webhooks end to end: deletions through the gateway against the real registry, delivered to receivers on loopback.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pathToFileURL } from 'node:url'
import pino from 'pino'
import { Webhook } from 'standardwebhooks'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { stringify } from 'yaml'
import { HOST } from '../../testing/ports.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { ADMIN_KEY, sha256Hex, startGateway, type Gateway } from '../fixtures/gateway.js'
import { startReceiver, type Receiver } from '../fixtures/webhook-receiver.js'

const SECRET = `whsec_${Buffer.from('webhook secret for the e2e tests!').toString('base64')}`
const FORGED = `whsec_${Buffer.from('a forged secret, just as long ok!').toString('base64')}`
const TEAM_KEY = 'rdg_team-a-auditor-key-long-enough-0002'
const CLEANER_KEY = 'rdg_ci-cleaner-no-audit-key-long-0003'
const REQUESTER_KEY = 'rdg_gated-requester-key-long-enough-04'
const APPROVER_KEY = 'rdg_gated-approver-key-long-enough-005'

const POLICY = {
  apiKeys: [
    { name: 'admin', sha256: sha256Hex(ADMIN_KEY) },
    { name: 'team-a', sha256: sha256Hex(TEAM_KEY) },
    { name: 'cleaner', sha256: sha256Hex(CLEANER_KEY) },
    { name: 'requester', sha256: sha256Hex(REQUESTER_KEY) },
    { name: 'approver', sha256: sha256Hex(APPROVER_KEY) }
  ],
  roles: {
    admin: [{ actions: ['*'], repositories: ['**'] }],
    teamAuditor: [{ actions: ['audit', 'delete'], repositories: ['team-a/**'] }],
    cleaner: [{ actions: ['delete'], repositories: ['**'] }],
    gated: [{ actions: ['delete'], repositories: ['gated/**'], approval: 'required' }],
    approver: [{ actions: ['approve'], repositories: ['gated/**'] }]
  },
  bindings: [
    { role: 'admin', subjects: ['apikey:admin'] },
    { role: 'teamAuditor', subjects: ['apikey:team-a'] },
    { role: 'cleaner', subjects: ['apikey:cleaner'] },
    { role: 'gated', subjects: ['apikey:requester'] },
    { role: 'approver', subjects: ['apikey:approver'] }
  ]
}

const registry = await startRegistry()
t.teardown(() => registry.stop())
const target = { url: registry.url }

function notifications (receiver: Receiver, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    webhooks: [{ name: 'ci', url: receiver.url, secret: SECRET, events: ['deleted', 'untagged', 'restored', 'refused'], timeoutMs: 1000, ...overrides }],
    pollMs: 20,
    retry: { firstDelayMs: 50, maxDelayMs: 200 }
  }
}

/** A gateway whose pino lines are kept, to show that no secret reaches them. */
async function gatewayWith (t: Test, receiver: Receiver, overrides: Record<string, unknown> = {}): Promise<{ gateway: Gateway, lines: string[] }> {
  const lines: string[] = []
  const sink = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(chunk.toString('utf8')); done() } })
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url } },
    policy: stringify(POLICY),
    logger: pino({ level: 'info' }, sink),
    config: { notifications: notifications(receiver, overrides), metrics: { public: true } }
  })
  return { gateway, lines }
}

async function until<T> (what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

t.test('a deletion through the gateway → one event, verified with the standardwebhooks package; a forged secret fails; no secret in the logs', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const { gateway, lines } = await gatewayWith(t, receiver)
  const image = await pushImage(target, 'team-a/app', ['v1'], 'oci')
  const deleted = await gateway.rest('DELETE', '/images/team-a/app/v1')
  t.equal(deleted.status, 200)
  const received = await receiver.nth(1)
  const event = new Webhook(SECRET).verify(received.body, received.headers as Record<string, string>) as Record<string, any>
  t.match(event, {
    id: `evt_${deleted.body.auditId as string}`,
    type: 'image.deleted',
    data: { auditId: deleted.body.auditId, transport: 'rest', subject: 'apikey:admin', registry: 'default', name: 'team-a/app', tag: 'v1', digest: image.digest, removedTags: ['v1'] }
  })
  t.throws(() => new Webhook(FORGED).verify(received.body, received.headers as Record<string, string>), /No matching signature/)

  const delivered = await until('delivered', async () => {
    const page = await gateway.rest('GET', '/notifications/deliveries?status=delivered')
    return page.body.items.length === 1 ? page.body.items[0] : undefined
  })
  t.match(delivered, { eventId: event.id, endpoint: 'ci', eventType: 'image.deleted', name: 'team-a/app', tag: 'v1', attempts: 1, lastStatus: 204 })
  const metrics = await gateway.app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /gateway_webhook_attempts_total\{endpoint="ci",result="delivered"\} 1/)
  t.match(metrics.body, /gateway_webhook_outbox\{endpoint="ci",status="delivered"\} 1/)

  const denied = await gateway.rest('DELETE', '/images/other/app/v1', { key: TEAM_KEY })
  t.equal(denied.status, 403)
  const refused = JSON.parse((await receiver.nth(2)).body) as Record<string, any>
  t.match(refused, { type: 'image.refused', data: { subject: 'apikey:team-a', name: 'other/app', reason: /./ } })
  t.equal(receiver.received.length, 2)
  const log = lines.join('')
  t.match(log, /webhook delivered/, 'the capture saw the worker')
  t.notOk(log.includes(SECRET.slice('whsec_'.length)), 'no secret in the logs')
  t.notOk(log.includes(receiver.url), 'no webhook URL in the logs')
})

t.test('the receiver is down, then up: the event arrives after a retry', async t => {
  const receiver = await startReceiver({ up: false })
  t.teardown(() => receiver.down())
  const { gateway } = await gatewayWith(t, receiver, { format: 'standard' })
  await pushImage(target, 'team-a/down', ['v1'], 'schema2')
  t.equal((await gateway.rest('DELETE', '/images/team-a/down/v1')).status, 200, 'the API answers whatever the endpoint does')
  const retried = await until('a failed attempt', async () => (await gateway.rest('GET', '/notifications/deliveries?status=pending')).body.items[0]?.lastError)
  t.equal(retried, 'no answer: ECONNREFUSED')
  await receiver.up()
  const received = await receiver.nth(1)
  t.ok(new Webhook(SECRET).verify(received.body, received.headers as Record<string, string>))
  await until('delivered', async () => (await gateway.rest('GET', '/notifications/deliveries?status=delivered')).body.items.length === 1)
})

t.test('GET /notifications/deliveries: refuses callers without audit, shows an auditor only its images, pages, checks its input', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const { gateway } = await gatewayWith(t, receiver)
  await pushImage(target, 'team-a/list', ['a'], 'oci')
  await pushImage(target, 'team-a/list', ['b'], 'schema2')
  await pushImage(target, 'team-b/list', ['a'], 'oci')
  for (const path of ['team-a/list/a', 'team-a/list/b', 'team-b/list/a']) t.equal((await gateway.rest('DELETE', `/images/${path}`)).status, 200)
  await until('three delivered', async () => (await gateway.rest('GET', '/notifications/deliveries?status=delivered')).body.items.length === 3)

  const cleaner = await gateway.rest('GET', '/notifications/deliveries', { key: CLEANER_KEY })
  t.equal(cleaner.status, 403)
  t.match(cleaner.body, { code: 'FORBIDDEN', detail: /needs the audit action/ })
  t.equal((await gateway.rest('GET', '/notifications/deliveries', { key: null })).status, 401)

  const team = await gateway.rest('GET', '/notifications/deliveries', { key: TEAM_KEY })
  t.same(team.body.items.map((item: { name: string, tag: string }) => `${item.name}:${item.tag}`), ['team-a/list:b', 'team-a/list:a'], 'newest first, team-a only')
  const first = await gateway.rest('GET', '/notifications/deliveries?limit=1')
  t.equal(first.body.items[0].name, 'team-b/list')
  const second = await gateway.rest('GET', `/notifications/deliveries?limit=1&cursor=${first.body.nextCursor as string}`)
  t.equal(second.body.items[0].tag, 'b')
  t.notOk(JSON.stringify(first.body).includes(receiver.url), 'never the URL')

  const badCursor = await gateway.rest('GET', '/notifications/deliveries?cursor=bm9wZQ')
  t.match(badCursor, { status: 400, body: { code: 'INVALID_REQUEST', field: 'cursor' } })
  t.equal((await gateway.rest('GET', '/notifications/deliveries?status=lost')).status, 400)
  t.equal((await gateway.rest('GET', '/notifications/deliveries?limit=0')).status, 400)
  t.equal((await gateway.rest('GET', '/notifications/deliveries?extra=1')).status, 400)
})

t.test('an approval is announced when it is given (image.approved), and the deletion it allows names the approver', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const { gateway } = await gatewayWith(t, receiver, { events: ['approved', 'deleted'] })
  await pushImage(target, 'gated/app', ['v1'], 'oci')
  const dry = await gateway.rest('DELETE', '/images/gated/app/v1?dryRun=true', { key: REQUESTER_KEY })
  const planId = dry.body.planId as string
  t.equal((await gateway.rest('POST', `/plans/${planId}/approve`, { key: APPROVER_KEY })).status, 200)
  const approved = await receiver.nth(1)
  const event = new Webhook(SECRET).verify(approved.body, approved.headers as Record<string, string>) as Record<string, any>
  t.match(event, { type: 'image.approved', data: { subject: 'apikey:approver', name: 'gated/app', tag: 'v1', reason: new RegExp(`approves ${planId} of apikey:requester$`) } })
  t.equal((await gateway.rest('POST', `/plans/${planId}/execute`, { key: REQUESTER_KEY })).status, 200)
  const deleted = JSON.parse((await receiver.nth(2)).body) as Record<string, any>
  t.match(deleted, { type: 'image.deleted', data: { subject: 'apikey:requester', approvedBy: 'apikey:approver', name: 'gated/app' } })
})

t.test('PostgreSQL, two replicas on one database: a deletion and its undo are each delivered once, whichever replica claims them', async t => {
  const postgres = await startPostgres()
  t.teardown(() => postgres.stop())
  const url = await postgres.createDatabase('hooks')
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const config = { audit: { driver: 'postgres', url }, notifications: notifications(receiver) }
  const replicas = await Promise.all([0, 1].map(async () => await startGateway(t, { registries: { default: { url: registry.url } }, policy: stringify(POLICY), config })))
  const [one, two] = replicas as [Gateway, Gateway]
  await pushImage(target, 'team-a/pg', ['v1'], 'oci')
  const deleted = await one.rest('DELETE', '/images/team-a/pg/v1')
  t.equal(deleted.status, 200)
  t.equal((await two.rest('POST', `/deletions/${deleted.body.auditId as string}/restore`)).status, 200)
  await receiver.nth(2)
  await until('both delivered', async () => (await two.rest('GET', '/notifications/deliveries?status=delivered')).body.items.length === 2)
  await new Promise(resolve => setTimeout(resolve, 300))
  const events = receiver.received.map(received => new Webhook(SECRET).verify(received.body, received.headers as Record<string, string>) as { type: string })
  t.same(events.map(event => event.type).sort(), ['image.deleted', 'image.restored'], 'each once')
})

/** The gateway as its own process (src/server.ts through tap's loader), so it can be killed with SIGKILL. */
async function gatewayProcess (t: Test, configFile: string): Promise<{ child: ChildProcess, address: string, stdout: () => string }> {
  const server = pathToFileURL(join(import.meta.dirname, '../../src/server.ts')).href
  const code = `const { serve } = await import(${JSON.stringify(server)})
const running = await serve(['--config', ${JSON.stringify(configFile)}], { WEBHOOK_CI_SECRET: process.env.WEBHOOK_CI_SECRET })
process.stderr.write('listening ' + running.address + '\\n')`
  const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '--eval', code], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let out = ''
  let err = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { out += chunk })
  const address = await new Promise<string>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      err += chunk
      const match = /listening (\S+)/.exec(err)
      if (match !== null) resolve(match[1] as string)
    })
    child.once('exit', status => { reject(new Error(`gateway exited with ${String(status)}: ${err}`)) })
  })
  return { child, address, stdout: () => out }
}

t.test('kill -9 between the audit commit and the delivery: the next process delivers the event', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  receiver.answer = 'hang'
  const dir = mkdtempSync(join(tmpdir(), 'rdg-webhooks-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const policyFile = join(dir, 'policy.yaml')
  writeFileSync(policyFile, stringify(POLICY))
  const configFile = join(dir, 'config.yaml')
  writeFileSync(configFile, stringify({
    host: HOST,
    port: 0,
    logLevel: 'info',
    registries: { default: { url: registry.url, defaultMode: 'digest' } },
    policyFile,
    audit: { path: join(dir, 'audit.db') },
    notifications: { ...notifications(receiver), webhooks: [{ name: 'ci', url: receiver.url, events: ['deleted'], timeoutMs: 1000 }] }
  }))
  process.env.WEBHOOK_CI_SECRET = SECRET
  t.teardown(() => { delete process.env.WEBHOOK_CI_SECRET })

  const image = await pushImage(target, 'team-a/killed', ['v1'], 'oci')
  const first = await gatewayProcess(t, configFile)
  const deleted = await request(`${first.address}/images/team-a/killed/v1`, { method: 'DELETE', headers: { 'x-api-key': ADMIN_KEY } })
  const body = await deleted.body.json() as { auditId: string, digest: string }
  t.equal(deleted.statusCode, 200)
  t.equal(body.digest, image.digest)
  // The delivery is under way (the receiver holds it) and not recorded: now the process dies.
  await receiver.nth(1)
  first.child.kill('SIGKILL')
  await new Promise(resolve => first.child.once('exit', resolve))
  receiver.answer = 204

  const second = await gatewayProcess(t, configFile)
  const again = await receiver.nth(2)
  const event = new Webhook(SECRET).verify(again.body, again.headers as Record<string, string>) as { id: string }
  t.equal(event.id, `evt_${body.auditId}`, 'the same event, under the same id, from the next process')
  t.equal(again.headers['webhook-id'], receiver.received[0]?.headers['webhook-id'])
  await until('delivered', async () => {
    const page = await request(`${second.address}/notifications/deliveries`, { headers: { 'x-api-key': ADMIN_KEY } })
    const { items } = await page.body.json() as { items: Array<{ status: string, attempts: number }> }
    return items[0]?.status === 'delivered' ? items[0] : undefined
  })
  t.match(first.stdout(), /"msg":"audit delete team-a\/killed:v1/, 'the capture saw the first process log its deletion')
  await until('the second process logs its delivery', () => second.stdout().includes('"msg":"webhook delivered"'))
  for (const output of [first.stdout(), second.stdout()]) {
    t.notOk(output.includes(SECRET.slice('whsec_'.length)), 'no secret in the logs')
    t.notOk(output.includes(receiver.url), 'no webhook URL in the logs')
  }
  second.child.kill('SIGTERM')
  await new Promise(resolve => second.child.once('exit', resolve))
})
