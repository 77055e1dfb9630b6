/**
 * Slack requests with two replicas on one real PostgreSQL: a signed request captured and sent again to the other
 * replica within Slack's 5-minute window is refused there too, and the store keeps a hash, not the signature.
 */
import pg from 'pg'
import t from 'tap'
import { startPostgres } from '../../testing/postgres-process.js'
import { startRegistry } from '../../testing/registry-process.js'
import { ADMIN_KEY, sha256Hex, startGateway } from '../fixtures/gateway.js'
import { SIGNING_SECRET, slackClient } from '../fixtures/slack.js'

const registry = await startRegistry()
t.teardown(() => registry.stop())
const postgres = await startPostgres()
t.teardown(() => postgres.stop())
const url = await postgres.createDatabase('slack_replicas')

const POLICY = `
apiKeys:
  - { name: admin, sha256: ${sha256Hex(ADMIN_KEY)} }
roles:
  cleaner:
    - { actions: [delete], repositories: ["chat/**"] }
bindings:
  - { role: cleaner, subjects: ["slack:T1/UALICE"] }
`
const replica = async (): Promise<Awaited<ReturnType<typeof startGateway>>> => await startGateway(t, {
  registries: { default: { url: registry.url } },
  policy: POLICY,
  config: { audit: { driver: 'postgres', url }, chat: { slack: { signingSecret: SIGNING_SECRET, responseOrigins: ['http://127.0.0.1:9'] } } }
})
const [a, b] = [await replica(), await replica()]
const [slackA, slackB] = [slackClient(a.app, 'http://127.0.0.1:9/hook'), slackClient(b.app, 'http://127.0.0.1:9/hook')]

t.test('a signed request replayed to the other replica is refused there; a new one is not', async t => {
  const form = { team_id: 'T1', user_id: 'UALICE', text: 'help', trigger_id: '1.2.3' }
  const timestamp = Math.floor(Date.now() / 1000)
  t.match(await slackA.send('/chat/slack/commands', form, { timestamp }), { status: 200, body: { text: /image-delete/ } }, 'answered by A')
  t.match(await slackB.send('/chat/slack/commands', form, { timestamp }), { status: 401, body: { code: 'UNAUTHENTICATED', detail: /replay/ } },
    'the same bytes, sent to B: refused')
  t.match(await slackA.send('/chat/slack/commands', form, { timestamp }), { status: 401, body: { detail: /replay/ } }, 'and to A again')
  t.match(await slackB.send('/chat/slack/commands', { ...form, trigger_id: '1.2.4' }, { timestamp }), { status: 200 }, 'another request is answered by B')
  const db = new pg.Client({ connectionString: url })
  await db.connect()
  t.teardown(() => db.end())
  const { rows } = await db.query<{ id: string }>("SELECT id FROM gateway_plans WHERE kind = 'slack-signature'")
  t.equal(rows.length, 2, 'one record per request, whichever replica got it')
  t.ok(rows.every(row => /^[0-9a-f]{64}$/.test(row.id)), 'kept as hashes')
})
