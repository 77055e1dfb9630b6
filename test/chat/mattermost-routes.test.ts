/**
 * Issue 13: deleting from Mattermost. A test client posts exactly as Mattermost does (token in the form and the
 * Authorization header; unsigned JSON button posts), and the registry is a real distribution 2.8.2.
 */
import t, { type Test } from 'tap'
import { request } from 'undici'
import { buttonMac } from '../../src/chat/mattermost/secrets.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { ADMIN_KEY, sha256Hex, startGateway } from '../fixtures/gateway.js'
import { ACTION_SECRET, COMMAND_TOKEN, mattermostClient, mmButtons, mmId, PUBLIC_URL, TEAM } from '../fixtures/mattermost.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }

const ALICE = `mattermost:${TEAM}/${mmId('alice')}`
const CAROL = `mattermost:${TEAM}/${mmId('carol')}`
const POLICY = `
apiKeys:
  - name: admin
    sha256: ${sha256Hex(ADMIN_KEY)}
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
  cleaner:
    - actions: [delete, restore]
      repositories: ["chat/**"]
  gated:
    - actions: [delete, restore]
      repositories: ["gated/**"]
      approval: required
  approver:
    - actions: [approve]
      repositories: ["gated/**"]
bindings:
  - role: admin
    subjects: ["apikey:admin"]
  - role: cleaner
    subjects: ["${ALICE}", "mattermost:${TEAM}/${mmId('bob')}"]
  - role: gated
    subjects: ["${ALICE}"]
  - role: approver
    subjects: ["${CAROL}", "${ALICE}"]
protectedTags:
  - tags: [latest]
`
const settings = { token: COMMAND_TOKEN, actionSecret: ACTION_SECRET, publicUrl: PUBLIC_URL }
const gateway = await startGateway(t, {
  registries: { default: { url: registry.url, defaultMode: 'auto' } },
  policy: POLICY,
  config: { chat: { mattermost: settings } }
})
const mm = mattermostClient(gateway.app)

async function tagsOf (name: string): Promise<string[]> {
  const response = await request(`${registry.url}/v2/${name}/tags/list`)
  const body = await response.body.json() as { tags: string[] | null }
  return (body.tags ?? []).sort()
}

async function audit (name: string): Promise<any[]> {
  return (await gateway.rest('GET', `/audit?name=${encodeURIComponent(name)}&limit=100`)).body.items
}

t.test('a missing or wrong token, in the form or the header, is refused before anything is read', async t => {
  const refused = { status: 401, body: { code: 'UNAUTHENTICATED', detail: /slash command token/ } }
  t.match(await mm.command('alice', 'help', { form: { token: 'wrong-token-of-some-length' } }), refused, 'wrong form token')
  t.match(await mm.command('alice', 'help', { form: { token: '' } }), refused, 'empty form token')
  t.match(await mm.command('alice', 'help', { authorization: null }), refused, 'no Authorization header')
  t.match(await mm.command('alice', 'help', { authorization: 'Token wrong' }), refused, 'wrong header token')
  t.match(await mm.command('alice', 'help', { authorization: `Bearer ${COMMAND_TOKEN}` }), refused, 'not the Token scheme')
  t.match(await mm.post('/chat/mattermost/commands', JSON.stringify({ token: COMMAND_TOKEN, team_id: TEAM, user_id: mmId('alice') }),
    { 'content-type': 'application/json', authorization: `Token ${COMMAND_TOKEN}` }), refused, 'a JSON body is not a slash command')
  const apiKey = await gateway.app.inject({ method: 'POST', url: '/chat/mattermost/commands', headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(apiKey.statusCode, 401, 'an API key does not replace the token')
  t.match(await mm.command('alice', 'help'), { status: 200, body: { response_type: 'ephemeral', text: /\/image-delete/ } })
  const noText = new URLSearchParams({ token: COMMAND_TOKEN, team_id: TEAM, user_id: mmId('alice') }).toString()
  t.match(await mm.post('/chat/mattermost/commands', noText, { 'content-type': 'application/x-www-form-urlencoded', authorization: `Token ${COMMAND_TOKEN}` }),
    { status: 200, body: { text: /\/image-delete/ } }, 'no text at all is asking for help')
})

t.test('bad ids and bad input are answered at once, with no plan and no upstream call', async t => {
  t.match(await mm.command('alice', 'help', { form: { user_id: 'ALICE' } }), { status: 400, body: { code: 'INVALID_REQUEST', field: 'user_id', rule: 'mattermost-id' } })
  t.match(await mm.command('alice', 'help', { form: { team_id: 'T1' } }), { status: 400, body: { field: 'team_id' } })
  t.match(await mm.command('alice', 'chat/app:v1 mode=nuke'), { status: 200, body: { text: /^I did not understand that/ } })
  t.match(await mm.command('alice', 'Chat/App:v1'), { status: 200, body: { text: /^INVALID_REFERENCE: / } })
  t.match(await mm.command('nobody', 'chat/app:v1'), { status: 200, body: { text: /^Cannot plan that: FORBIDDEN: mattermost:t+\/nobody0+ may not read/ } })
})

t.test('a protected tag: the reason and no button; status shows a plan without buttons', async t => {
  await pushImage(target, 'chat/protected', ['latest', 'v1'], 'schema2')
  const denied = await mm.command('alice', 'chat/protected:latest')
  t.match(denied.body, { response_type: 'ephemeral', text: /\*\*Not allowed:\*\* PROTECTED\\_TAG: mattermost:t+\/alice0+ may not delete chat\/protected:latest .*protectedTags\\\[0\\\]/ })
  t.same(mmButtons(denied.body), {})
  const status = await mm.command('bob', 'status chat/protected:v1')
  t.match(status.body.text, /\*\*Plan:\*\* untag `chat\/protected:v1` only .*\nAlso tagged `latest`: those tags keep it\.\nYou may delete it\./s)
  t.same(mmButtons(status.body), {})
  const refused = await mm.command('bob', 'status chat/protected:latest')
  t.match(refused.body.text, /You may not delete it: PROTECTED\\_TAG/)
  t.same(await tagsOf('chat/protected'), ['latest', 'v1'])
})

/** Alice plans a gated image and presses Request approval; the answer names the command an approver runs. */
async function requestApproval (t: Test, image: string): Promise<string> {
  const plan = (await mm.command('alice', image)).body
  t.match(plan.attachments[0].text, /\n\*\*Approval required:\*\* someone else who may approve it must confirm\.$/)
  const buttons = mmButtons(plan)
  t.same(Object.keys(buttons).sort(), ['cancel', 'request_approval'], 'Request approval takes Delete\'s place')
  t.match(buttons.request_approval.integration.context, { action: 'request_approval', id: /^cp_/, team: TEAM, mac: /^[A-Za-z0-9_-]{43}$/ })
  const asked = (await mm.click('alice', buttons.request_approval)).body
  const id = /an approver runs `\/image-delete approve (cp_[A-Za-z0-9_-]{32})`$/.exec(asked.update?.message)?.[1]
  t.ok(id, 'the answer gives the approval command')
  return id as string
}

t.test('approval: requested by button, refused to the requester and to one without approve, run once for an approver, undone by the requester', async t => {
  const image = await pushImage(target, 'gated/app', ['g'], 'schema2')
  const plan = (await mm.command('alice', 'gated/app:g')).body
  t.match(await mm.click('bob', mmButtons(plan).request_approval), { body: { ephemeral_text: /Only the person who asked/ } }, 'only the requester asks')
  const asked = (await mm.click('alice', mmButtons(plan).request_approval)).body
  const expected = new RegExp(`^${ALICE} asks for approval to delete \`gated/app:g\` \\(\`${image.digest}\`, mode auto, registry default\\): ` +
    'an approver runs `/image-delete approve cp_[A-Za-z0-9_-]{32}`$')
  t.match(asked, { update: { message: expected, props: { attachments: [] } } })
  t.match(await mm.click('alice', mmButtons(plan).request_approval), { body: { ephemeral_text: /no longer works/ } }, 'the plan became the request')
  const id = /approve (cp_\S+)`$/.exec(asked.update.message)?.[1] as string

  t.match(await mm.command('alice', `approve ${id}`), { status: 200, body: { response_type: 'ephemeral', text: /^You cannot approve this: FORBIDDEN: mattermost:t+\/alice0+ may not approve a deletion of their own/ } })
  t.match(await mm.command('bob', `approve ${id}`), { body: { text: /^You cannot approve this: FORBIDDEN: mattermost:t+\/bob0+ may not approve gated\/app:g/ } })
  t.same(await tagsOf('gated/app'), ['g'], 'nothing ran yet, and the request is still there')

  const [first, second] = await Promise.all([mm.command('carol', `approve ${id}`), mm.command('carol', `approve ${id}`)])
  const answers = [first.body, second.body]
  const approved = answers.find(answer => answer.response_type === 'in_channel')
  t.match(approved?.attachments?.[0]?.text, new RegExp(`^Deleted \`gated/app@${image.digest}\`.*\nApproved by ${CAROL} for ${ALICE}\\.$`, 's'), 'one approval ran the plan')
  t.ok(answers.find(answer => /^There is no such approval request/.test(answer.text)), 'the other was told it is gone')
  t.same(await tagsOf('gated/app'), [])
  t.match(await mm.command('carol', `approve ${id}`), { body: { response_type: 'ephemeral', text: /^There is no such approval request/ } }, 'approved once')

  const records = await audit('gated/app')
  t.match(records.filter(record => record.outcome === 'deleted'), [{
    subject: ALICE, approvedBy: CAROL, transport: 'mattermost', decision: { allow: true, reason: new RegExp(`; approved by ${CAROL}: ${CAROL} may approve gated/app:g`) }
  }], 'one deletion, the record names both people')
  t.equal(records.filter(record => record.outcome === 'denied' && record.action === 'delete' && record.transport === 'mattermost').length, 2, 'both refused approvals are audited')

  const undo = mmButtons(approved).undo
  t.match(undo.integration.context, { action: 'undo', team: TEAM })
  t.match(await mm.click('carol', undo), { body: { ephemeral_text: /Only the person who asked/ } }, 'Undo is the requester\'s')
  t.match(await mm.click('alice', undo), { body: { update: { message: `Restored \`gated/app:g\`: \`g\` point at \`${image.digest}\` again.` } } })
  t.same(await tagsOf('gated/app'), ['g'])
})

t.test('approval: a moved tag is refused with PLAN_STALE; unknown ids and a bare approve change nothing', async t => {
  await pushImage(target, 'gated/stale', ['s'], 'schema2')
  const id = await requestApproval(t, 'gated/stale:s')
  const moved = await pushImage(target, 'gated/stale', ['s'], 'schema2')
  t.match(await mm.command('carol', `approve ${id}`), { body: { response_type: 'ephemeral', text: /^Not deleted: PLAN_STALE: / } }, 'an approved plan is still re-checked')
  t.match(await mm.command('carol', `approve ${id}`), { body: { text: /^There is no such approval request/ } }, 'a stale request is used up')
  t.same(await tagsOf('gated/stale'), ['s'])
  const now = await request(`${registry.url}/v2/gated/stale/manifests/s`, { method: 'HEAD', headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } })
  await now.body.dump()
  t.equal(now.headers['docker-content-digest'], moved.digest)

  t.match(await mm.command('carol', 'approve cp_' + 'x'.repeat(32)), { body: { text: /^There is no such approval request/ } }, 'an id never issued')
  t.match(await mm.command('carol', 'approve not-an-id'), { body: { text: /^There is no such approval request/ } }, 'a malformed id')
  t.match(await mm.command('carol', ' approve '), { body: { text: /^Which request\? Give its id\.\n.*`\/image-delete approve <id>`/s } })
  const plan = (await mm.command('alice', 'gated/stale:s')).body
  t.match(await mm.click('alice', mmButtons(plan).cancel), { body: { update: { message: 'Cancelled: `gated/stale:s` was not deleted.' } } }, 'a request can be cancelled instead')
  t.match(await mm.click('alice', mmButtons(plan).request_approval), { body: { ephemeral_text: /no longer works/ } })
})

t.test('a shared tag: the plan says untag; someone else cannot click; a double click runs once; undo puts it back', async t => {
  const image = await pushImage(target, 'chat/shared', ['pr-1', 'pr-1-rc'], 'schema2')
  const plan = (await mm.command('alice', 'chat/shared:pr-1')).body
  t.match(plan, { response_type: 'ephemeral', attachments: [{ text: /^\*\*Plan:\*\* untag `chat\/shared:pr-1` only .*\nAlso tagged `pr-1-rc`: those tags keep it/s }] })
  const { delete: deleteButton, cancel } = mmButtons(plan)
  t.match(deleteButton, { id: 'delete', type: 'button', style: 'danger', integration: { url: 'https://gateway.example.com/chat/mattermost/actions' } })
  t.match(deleteButton.integration.context, { action: 'delete', id: /^cp_[A-Za-z0-9_-]{32}$/, team: TEAM, mac: /^[A-Za-z0-9_-]{43}$/ }, 'the context carries an opaque id and its MAC')
  t.equal(cancel.integration.context.id, deleteButton.integration.context.id)

  t.match(await mm.click('bob', deleteButton), { status: 200, body: { ephemeral_text: /Only the person who asked/ } })
  t.same(await tagsOf('chat/shared'), ['pr-1', 'pr-1-rc'], 'Bob\'s click changed nothing')

  const [first, second] = await Promise.all([mm.click('alice', deleteButton), mm.click('alice', deleteButton)])
  const answers = [first.body, second.body]
  const deleted = answers.find(answer => /^Untagged `chat\/shared:pr-1`/.test(answer.update?.message))
  t.ok(deleted, 'one click ran the plan')
  t.ok(answers.find(answer => /no longer works/.test(answer.ephemeral_text)), 'the other was told the button is used')
  t.same(await tagsOf('chat/shared'), ['pr-1-rc'])
  t.match((await audit('chat/shared')).filter(record => record.action === 'delete'),
    [{ transport: 'mattermost', subject: ALICE, outcome: 'deleted', deleteAction: 'untagged' }], 'one execution, audited with transport mattermost')

  const undo = mmButtons(deleted).undo
  t.match(undo, { id: 'undo', integration: { context: { action: 'undo' } } })
  t.match(await mm.click('bob', undo), { body: { ephemeral_text: /Only the person who asked/ } })
  t.match(await mm.click('alice', undo), { body: { update: { message: `Restored \`chat/shared:pr-1\`: \`pr-1\` point at \`${image.digest}\` again.`, props: { attachments: [] } } } })
  t.same(await tagsOf('chat/shared'), ['pr-1', 'pr-1-rc'])
  t.match(await mm.click('alice', undo), { body: { ephemeral_text: /no longer works/ } }, 'undo is single-use too')
  t.match(await mm.click('alice', deleteButton), { body: { ephemeral_text: /no longer works/ } }, 'a replayed plan id is refused')
})

t.test('a forged or altered button context is refused before the plan is looked at', async t => {
  await pushImage(target, 'chat/forged', ['f'], 'schema2')
  const plan = (await mm.command('alice', 'chat/forged:f')).body
  const button = mmButtons(plan).delete
  const context = button.integration.context
  const forged = (change: Record<string, unknown>): any => ({ ...button, integration: { ...button.integration, context: { ...context, ...change } } })
  const refused = { status: 401, body: { code: 'UNAUTHENTICATED', detail: /not one the gateway made/ } }
  t.match(await mm.click('alice', forged({ mac: 'A'.repeat(43) })), refused, 'a made-up MAC')
  t.match(await mm.click('alice', forged({ mac: undefined })), refused, 'no MAC')
  t.match(await mm.click('alice', forged({ id: 'cp_' + 'x'.repeat(32) })), refused, 'another plan id under this MAC')
  t.match(await mm.click('alice', forged({ action: 'undo' })), refused, 'another action under this MAC')
  t.match(await mm.click('alice', forged({ action: 'request_approval' })), refused, 'Request approval under a Delete button\'s MAC')
  t.match(await mm.click('alice', forged({ team: mmId('other') })), refused, 'another team under this MAC')
  const otherSecret = buttonMac('some-other-secret-0123456789', { action: 'delete', id: context.id, team: TEAM })
  t.match(await mm.click('alice', forged({ mac: otherSecret })), refused, 'a MAC made with another secret')
  t.match(await mm.post('/chat/mattermost/actions', 'null', { 'content-type': 'application/json' }), refused, 'no body at all')
  t.match(await mm.post('/chat/mattermost/actions', JSON.stringify({ user_id: mmId('alice') }), { 'content-type': 'application/json' }), refused, 'no context')
  const unknownAction = { action: 'rm', id: context.id, team: TEAM }
  t.match(await mm.click('alice', forged({ ...unknownAction, mac: buttonMac(ACTION_SECRET, unknownAction) })), refused, 'an action the gateway never makes')
  t.match(await mm.click('alice', button, { user_id: 'Alice' }), { status: 400, body: { field: 'user_id' } }, 'a valid context with a malformed user')
  t.same(await tagsOf('chat/forged'), ['f'])
  t.match(await mm.click('alice', mmButtons(plan).cancel), { body: { update: { message: 'Cancelled: `chat/forged:f` was not deleted.', props: { attachments: [] } } } })
  t.match(await mm.click('alice', button), { body: { ephemeral_text: /no longer works/ } }, 'cancel used the plan up')
  t.same(await tagsOf('chat/forged'), ['f'])
})

t.test('a plan whose tag moved is refused with PLAN_STALE and changes nothing', async t => {
  await pushImage(target, 'chat/stale', ['x'], 'schema2')
  const button = mmButtons((await mm.command('alice', 'chat/stale:x')).body).delete
  const moved = await pushImage(target, 'chat/stale', ['x'], 'schema2')
  t.match(await mm.click('alice', button), { body: { update: { message: /^Not deleted: PLAN_STALE: plan plan\\_[0-9a-f]+ no longer holds/ } } })
  t.same(await tagsOf('chat/stale'), ['x'])
  const now = await request(`${registry.url}/v2/chat/stale/manifests/x`, { method: 'HEAD', headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } })
  await now.body.dump()
  t.equal(now.headers['docker-content-digest'], moved.digest)
})

t.test('a digest deletion says what went; an undo that cannot run says why', async t => {
  const image = await pushImage(target, 'chat/digest', ['d'], 'schema2')
  const deleted = (await mm.click('alice', mmButtons((await mm.command('alice', 'chat/digest:d mode=digest')).body).delete)).body
  t.match(deleted.update.message, `Deleted \`chat/digest@${image.digest}\` (\`d\`; space is freed at the registry's next garbage collection). Audit id \``)
  await pushImage(target, 'chat/digest', ['d'], 'schema2')
  t.match(await mm.click('alice', mmButtons(deleted).undo), { body: { update: { message: /^Not restored: TAG_EXISTS: chat\/digest:d now points at another manifest/ } } })
})

t.test('chat users are rate-limited one by one, like any caller', async t => {
  const limited = await startGateway(t, {
    registries: { default: { url: registry.url } },
    policy: POLICY,
    config: { limits: { requestsPerWindow: 2 }, chat: { mattermost: settings } }
  })
  const client = mattermostClient(limited.app)
  t.equal((await client.command('alice', 'help')).status, 200)
  t.equal((await client.command('alice', 'help')).status, 200)
  t.match(await client.command('alice', 'help'), { status: 429, body: { code: 'RATE_LIMITED' } })
  t.equal((await client.command('bob', 'help')).status, 200, 'another user has a budget of their own')
})
