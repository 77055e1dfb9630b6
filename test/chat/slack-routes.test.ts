/**
 * Issue 13: deleting from Slack. A test client signs as Slack does, a local server plays response_url, and the
 * registry is a real distribution 2.8.2.
 */
import t from 'tap'
import { request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { ADMIN_KEY, sha256Hex, startGateway } from '../fixtures/gateway.js'
import { buttons, responseUrlServer, slackClient, SIGNING_SECRET } from '../fixtures/slack.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const hooks = await responseUrlServer(t)

const FORCER_KEY = 'rdg_test-forcer-key-that-is-long-enough-0002'
const POLICY = `
apiKeys:
  - name: admin
    sha256: ${sha256Hex(ADMIN_KEY)}
  - name: forcer
    sha256: ${sha256Hex(FORCER_KEY)}
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
  trusted-forcer:
    - actions: [delete, force]
      repositories: ["gated/**"]
      tags: ["pr-*"]
bindings:
  - role: trusted-forcer
    subjects: ["apikey:forcer"]
  - role: admin
    subjects: ["apikey:admin"]
  - role: cleaner
    subjects: ["slack:T1/UALICE", "slack:T1/UBOB"]
  - role: gated
    subjects: ["slack:T1/UALICE", "apikey:forcer"]
  - role: approver
    subjects: ["slack:T1/UCAROL", "slack:T1/UALICE"]
protectedTags:
  - tags: [latest]
`

const gateway = await startGateway(t, {
  registries: { default: { url: registry.url, defaultMode: 'auto' } },
  policy: POLICY,
  config: { chat: { slack: { signingSecret: SIGNING_SECRET, responseOrigins: [hooks.origin], announce: true } } }
})
const slack = slackClient(gateway.app, hooks.url)

async function tagsOf (name: string): Promise<string[]> {
  const response = await request(`${registry.url}/v2/${name}/tags/list`)
  const body = await response.body.json() as { tags: string[] | null }
  return (body.tags ?? []).sort()
}

async function slackAudit (name: string): Promise<any[]> {
  const reply = await gateway.rest('GET', `/audit?name=${encodeURIComponent(name)}&limit=100`)
  return reply.body.items
}

t.test('a signature that does not match, an old timestamp and a replay are refused before anything is read', async t => {
  const bad = await slack.send('/chat/slack/commands', { team_id: 'T1', user_id: 'UALICE', text: 'help' }, { secret: 'not-the-secret' })
  t.match(bad, { status: 401, body: { code: 'UNAUTHENTICATED', detail: /does not match/ } })
  const old = await slack.send('/chat/slack/commands', { team_id: 'T1', user_id: 'UALICE', text: 'help' }, { timestamp: Math.floor(Date.now() / 1000) - 301 })
  t.match(old, { status: 401, body: { code: 'UNAUTHENTICATED', detail: /more than 5 minutes/ } })
  const form = { team_id: 'T1', user_id: 'UALICE', text: 'help' }
  const timestamp = Math.floor(Date.now() / 1000)
  t.match(await slack.send('/chat/slack/commands', form, { timestamp }), { status: 200, body: { response_type: 'ephemeral', text: /image-delete/ } })
  t.match(await slack.send('/chat/slack/commands', form, { timestamp }), { status: 401, body: { detail: /replay/ } }, 'the same signed request again')
  const json = await gateway.app.inject({ method: 'POST', url: '/chat/slack/commands', payload: { team_id: 'T1' } })
  t.match({ status: json.statusCode, body: json.json() }, { status: 400, body: { code: 'INVALID_REQUEST', rule: 'FST_ERR_CTP_INVALID_MEDIA_TYPE' } }, 'only form bodies are parsed here')
  const unsigned = await gateway.app.inject({ method: 'POST', url: '/chat/slack/commands', headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(unsigned.statusCode, 401, 'an API key does not replace the signature')
  t.equal(hooks.unread(), 0, 'nothing was posted')
})

t.test('help, bad input and a response_url on another origin are answered at once, with no plan', async t => {
  t.match(await slack.command('UALICE', ''), { status: 200, body: { text: /status <repository>:<tag>/ } })
  t.match(await slack.send('/chat/slack/commands', { team_id: 'T1', user_id: 'UALICE', response_url: hooks.url }), { status: 200, body: { text: /image-delete help/ } }, 'no text at all')
  t.match(await slack.command('UALICE', 'chat/app:v1 mode=nuke'), { status: 200, body: { text: /did not understand/ } })
  t.match(await slack.command('UALICE', 'status chat/app:v1 mode=untag'), { status: 200, body: { text: /did not understand/ } })
  t.match(await slack.command('UALICE', 'Chat/App:v1'), { status: 200, body: { text: /^INVALID_REFERENCE: / } })
  const elsewhere = await slack.command('UALICE', 'chat/app:v1', { response_url: 'https://attacker.example/hook' })
  t.match(elsewhere, { status: 400, body: { code: 'INVALID_REQUEST', field: 'response_url', rule: 'allowed-origin' } })
  const withCredentials = await slack.command('UALICE', 'chat/app:v1', { response_url: hooks.url.replace('http://', 'http://u:p@') })
  t.match(withCredentials, { status: 400, body: { field: 'response_url' } })
  t.match(await slack.command('UALICE', 'chat/app:v1', { response_url: 'not a url' }), { status: 400, body: { field: 'response_url' } })
  t.match(await slack.command('ualice', 'help'), { status: 400, body: { field: 'user_id' } }, 'not a Slack user id')
  t.match(await slack.command('UALICE', 'help', { team_id: '' }), { status: 400, body: { field: 'team_id' } })
  t.equal(hooks.unread(), 0, 'nothing was posted')
})

t.test('an unknown user is told why, and gets no button; the attempt is audited with transport slack', async t => {
  await pushImage(target, 'chat/unknown', ['v1'], 'schema2')
  t.match(await slack.command('UNOBODY', 'chat/unknown:v1'), { status: 200, body: { response_type: 'ephemeral', text: 'planning…' } })
  const message = await hooks.next()
  t.match(message.text, /^Cannot plan that: FORBIDDEN: slack:T1\/UNOBODY may not read chat\/unknown:v1 .*has no role/)
  t.same(buttons(message), {})
  t.match(await slackAudit('chat/unknown'), [{ transport: 'slack', subject: 'slack:T1/UNOBODY', outcome: 'denied' }])
  t.same(await tagsOf('chat/unknown'), ['v1'])
})

t.test('the policy\'s chatUsers give a Slack user groups, bound as chatgroup:<g>; the audit names them', async t => {
  await pushImage(target, 'chat/grouped', ['v1'], 'schema2')
  const policy = POLICY.replace('bindings:\n', 'bindings:\n  - role: cleaner\n    subjects: ["chatgroup:chat-cleaners"]\n') +
    'chatUsers:\n  - subjects: ["slack:T1/UDAVE"]\n    groups: [chat-cleaners]\n'
  const grouped = await startGateway(t, {
    registries: { default: { url: registry.url } },
    policy,
    config: { chat: { slack: { signingSecret: SIGNING_SECRET, responseOrigins: [hooks.origin] } } }
  })
  const client = slackClient(grouped.app, hooks.url)
  await client.command('UDAVE', 'chat/grouped:v1')
  t.type(buttons(await hooks.next()).delete, 'string', 'a member of the chat group gets the Delete button')
  await client.command('UERIN', 'chat/grouped:v1')
  t.match((await hooks.next()).text, /^Cannot plan that: FORBIDDEN: slack:T1\/UERIN may not read/, 'a user the policy gives no group does not')
  const records = (await grouped.rest('GET', '/audit?name=chat%2Fgrouped&limit=10')).body.items
  t.match(records.find((record: { subject: string }) => record.subject === 'slack:T1/UERIN'), { outcome: 'denied', groups: [] })
})

t.test('a protected tag: the plan shows the reason and no button', async t => {
  await pushImage(target, 'chat/protected', ['latest'], 'schema2')
  await slack.command('UALICE', 'chat/protected:latest')
  const message = await hooks.next()
  t.match(message.text, /Not allowed:\* PROTECTED_TAG: .*protected by protectedTags\[0\]/)
  t.same(buttons(message), {})
})

t.test('a shared tag: the plan says untag; someone else cannot click; a double click runs once; undo puts it back', async t => {
  const image = await pushImage(target, 'chat/shared', ['pr-1', 'pr-1-rc'], 'schema2')
  await slack.command('UALICE', 'chat/shared:pr-1')
  const plan = await hooks.next()
  t.match(plan, { response_type: 'ephemeral', text: /untag `chat\/shared:pr-1` only .*\nAlso tagged `pr-1-rc`: those tags keep it/ })
  const { delete: id, cancel } = buttons(plan)
  t.match(id, /^cp_[A-Za-z0-9_-]{32}$/, 'the button carries an opaque id only')
  t.equal(cancel, id)
  const deleteButton = plan.blocks[1].elements[0]
  t.match(deleteButton, { style: 'danger', confirm: { style: 'danger', confirm: { text: 'Delete' } } })

  t.equal((await slack.click('UBOB', 'delete', id as string)).status, 200)
  t.match(await hooks.next(), { replace_original: false, text: /Only the person who asked/ })
  t.same(await tagsOf('chat/shared'), ['pr-1', 'pr-1-rc'], 'Bob\'s click changed nothing')

  const [first, second] = await Promise.all([slack.click('UALICE', 'delete', id as string), slack.click('UALICE', 'delete', id as string)])
  t.same([first.status, second.status], [200, 200])
  const answers = [await hooks.next(), await hooks.next(), await hooks.next()]
  const deleted = answers.find(message => /^Untagged/.test(message.text))
  t.ok(deleted, 'one click ran the plan')
  t.ok(answers.find(message => /no longer works/.test(message.text)), 'the other was told the button is used')
  t.ok(answers.find(message => message.response_type === 'in_channel' && message.text === 'slack:T1/UALICE untagged `chat/shared:pr-1`.'), 'announced')
  t.same(await tagsOf('chat/shared'), ['pr-1-rc'])
  const deletions = (await slackAudit('chat/shared')).filter(record => record.action === 'delete')
  t.match(deletions, [{ transport: 'slack', subject: 'slack:T1/UALICE', outcome: 'deleted', deleteAction: 'untagged' }], 'one execution')

  const undo = buttons(deleted).undo as string
  t.match(await slack.click('UBOB', 'undo', undo), { status: 200 })
  t.match(await hooks.next(), { text: /Only the person who asked/ })
  await slack.click('UALICE', 'undo', undo)
  t.match(await hooks.next(), { replace_original: true, text: `Restored \`chat/shared:pr-1\`: \`pr-1\` point at \`${image.digest}\` again.` })
  t.match(await hooks.next(), { response_type: 'in_channel', text: /restored/ })
  t.same(await tagsOf('chat/shared'), ['pr-1', 'pr-1-rc'])
  await slack.click('UALICE', 'undo', undo)
  t.match(await hooks.next(), { text: /no longer works/ }, 'undo is single-use too')
})

t.test('a plan whose tag moved is refused with PLAN_STALE and changes nothing', async t => {
  await pushImage(target, 'chat/stale', ['x'], 'schema2')
  await slack.command('UALICE', 'chat/stale:x')
  const id = buttons(await hooks.next()).delete as string
  const moved = await pushImage(target, 'chat/stale', ['x'], 'schema2')
  await slack.click('UALICE', 'delete', id)
  t.match(await hooks.next(), { replace_original: true, text: /^Not deleted: PLAN_STALE: plan plan_[0-9a-f]+ no longer holds/ })
  t.same(await tagsOf('chat/stale'), ['x'])
  const now = await request(`${registry.url}/v2/chat/stale/manifests/x`, { method: 'HEAD', headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } })
  await now.body.dump()
  t.equal(now.headers['docker-content-digest'], moved.digest)
})

t.test('cancel drops the plan; status plans without buttons; unknown ids and a response_url elsewhere are refused', async t => {
  await pushImage(target, 'chat/cancel', ['c'], 'schema2')
  await slack.command('UALICE', 'chat/cancel:c mode=digest')
  const id = buttons(await hooks.next()).cancel as string
  await slack.click('UALICE', 'cancel', id)
  t.match(await hooks.next(), { replace_original: true, text: 'Cancelled: `chat/cancel:c` was not deleted.' })
  await slack.click('UALICE', 'delete', id)
  t.match(await hooks.next(), { text: /no longer works/ })
  await slack.click('UALICE', 'delete', 'cp_made-up')
  t.match(await hooks.next(), { text: /no longer works/ })
  t.match(await slack.click('UALICE', 'delete', id, 'https://attacker.example/x'), { status: 400, body: { field: 'response_url' } })
  t.same(await tagsOf('chat/cancel'), ['c'])

  t.match(await slack.command('UBOB', 'status chat/cancel:c'), { body: { text: 'checking…' } })
  const status = await hooks.next()
  t.match(status.text, /delete the image `sha256:[0-9a-f]{64}` of `chat\/cancel:c`.*\nYou may delete it\./s)
  t.same(buttons(status), {})
  await slack.command('UBOB', 'status chat/cancel:latest')
  t.match(await hooks.next(), { text: /Cannot plan that: NOT_FOUND/ })
})

t.test('malformed interactions are refused with the field at fault', async t => {
  const send = async (payload: string): Promise<any> => (await slack.send('/chat/slack/interactions', { payload })).body
  t.match(await send('{'), { code: 'INVALID_REQUEST', field: 'payload', rule: 'json' })
  t.match((await slack.send('/chat/slack/interactions', { team_id: 'T1', user_id: 'UALICE' })).body, { field: 'payload', rule: 'json' }, 'no payload: not read as a command')
  const command = await slack.command('UALICE', 'help', { payload: JSON.stringify({ type: 'block_actions', user: { id: 'UMALLORY', team_id: 'T1' }, actions: [{ action_id: 'undo' }] }) })
  t.match(command, { status: 200, body: { text: /image-delete/ } }, 'a payload field in a command is just ignored')
  t.match(await send('null'), { field: 'payload', rule: 'block-actions' })
  t.match(await send(JSON.stringify({ type: 'view_submission' })), { field: 'payload', rule: 'block-actions' })
  t.match(await send(JSON.stringify({ type: 'block_actions', actions: [] })), { rule: 'block-actions' })
  t.match(await send(JSON.stringify({ type: 'block_actions', actions: [{ action_id: 'rm' }] })), { field: 'payload.actions[0].action_id' })
  t.match(await send(JSON.stringify({ type: 'block_actions', user: { id: 'UALICE', team_id: 'T1' }, actions: [{ action_id: 'undo' }] })), { field: 'response_url' },
    'the team may come from the user (as in Enterprise Grid payloads)')
  t.equal(hooks.unread(), 0)
})

t.test('an undo that cannot run says why; a response_url that fails is given up on quietly', async t => {
  await pushImage(target, 'chat/undo', ['u'], 'schema2')
  await slack.command('UALICE', 'chat/undo:u mode=untag')
  await slack.click('UALICE', 'delete', buttons(await hooks.next()).delete as string)
  const deleted = await hooks.next()
  t.match(deleted.text, /^Untagged `chat\/undo:u`/)
  t.match(await hooks.next(), { response_type: 'in_channel' })
  await pushImage(target, 'chat/undo', ['u'], 'schema2')
  await slack.click('UALICE', 'undo', buttons(deleted).undo as string)
  t.match(await hooks.next(), { replace_original: true, text: /^Not restored: TAG_EXISTS: / })

  const image = await pushImage(target, 'chat/digest', ['d'], 'schema2')
  await slack.command('UALICE', 'chat/digest:d mode=digest')
  await slack.click('UALICE', 'delete', buttons(await hooks.next()).delete as string)
  t.match(await hooks.next(), { text: `Deleted \`chat/digest@${image.digest}\` (\`d\`; space is freed at the registry's next garbage collection). Audit id \`` })
  t.match(await hooks.next(), { response_type: 'in_channel', text: 'slack:T1/UALICE deleted `chat/digest:d`.' })

  await slack.command('UALICE', 'chat/undo:u', { response_url: `${hooks.origin}/fail` })
  for (let waited = 0; hooks.refused() === 0 && waited < 100; waited++) await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(hooks.refused(), 1, 'the plan was posted once, refused, and not retried')
  t.equal(hooks.unread(), 0)
})

t.test('chat users are rate-limited one by one, like any caller', async t => {
  const limited = await startGateway(t, {
    registries: { default: { url: registry.url } },
    policy: POLICY,
    config: { limits: { requestsPerWindow: 2 }, chat: { slack: { signingSecret: SIGNING_SECRET, responseOrigins: [hooks.origin] } } }
  })
  const client = slackClient(limited.app, hooks.url)
  t.equal((await client.command('UALICE', 'help')).status, 200)
  t.equal((await client.command('UALICE', 'help')).status, 200)
  t.match(await client.command('UALICE', 'help'), { status: 429, body: { code: 'RATE_LIMITED' } })
  t.equal((await client.command('UBOB', 'help')).status, 200, 'another user has a budget of their own')
})

t.test('forged signatures from Slack\'s shared addresses do not lock genuine Slack requests out', async t => {
  const guarded = await startGateway(t, {
    registries: { default: { url: registry.url } },
    policy: POLICY,
    config: { limits: { failedAuthPerWindow: 2 }, chat: { slack: { signingSecret: SIGNING_SECRET, responseOrigins: [hooks.origin] } } }
  })
  const client = slackClient(guarded.app, hooks.url)
  const form = { team_id: 'T1', user_id: 'UALICE', text: 'help' }
  // Someone else's Slack app aimed at this URL: its requests come from the same Slack addresses, signed wrongly.
  for (let attempt = 0; attempt < 5; attempt++) {
    t.match(await client.send('/chat/slack/commands', form, { secret: `another-app-${attempt}` }), { status: 401, body: { code: 'UNAUTHENTICATED' } })
  }
  t.equal((await client.send('/chat/slack/commands', form)).status, 200, 'the real app still gets through')
  t.equal((await guarded.rest('GET', '/me')).status, 200, 'and the address keeps its budget for API keys')
})

t.test('approval: the requester asks, cannot approve their own plan, someone without approve cannot, a second person can', async t => {
  const image = await pushImage(target, 'gated/app', ['g'], 'schema2')
  await slack.command('UALICE', 'gated/app:g')
  const plan = await hooks.next()
  t.match(plan.text, /\*Approval required:\* someone else who may approve it must confirm\.$/)
  const { request_approval: requestId, delete: deleteId } = buttons(plan)
  t.equal(deleteId, undefined, 'no Delete button')
  t.match(requestId, /^cp_/)

  await slack.click('UALICE', 'delete', requestId as string)
  t.match(await hooks.next(), { text: /^Not deleted: APPROVAL_REQUIRED: slack:T1\/UALICE may delete gated\/app:g in registry default only once someone else/ },
    'a Delete click made up for the plan is refused by the use case')
  await slack.command('UALICE', 'gated/app:g')
  await slack.click('UALICE', 'request_approval', buttons(await hooks.next()).request_approval as string)
  t.match(await hooks.next(), { replace_original: true, text: /^Approval requested for `gated\/app:g`/ })
  const request = await hooks.next()
  t.match(request, { response_type: 'in_channel', text: `slack:T1/UALICE asks to delete \`gated/app:g\` (\`${image.digest}\`). Someone else who may approve it can run it.` })
  const approveId = buttons(request).approve as string

  await slack.click('UALICE', 'approve', approveId)
  t.match(await hooks.next(), { response_type: 'ephemeral', text: /^You cannot approve this: FORBIDDEN: slack:T1\/UALICE may not approve a deletion of their own/ })
  await slack.click('UBOB', 'approve', approveId)
  t.match(await hooks.next(), { text: /^You cannot approve this: FORBIDDEN: slack:T1\/UBOB may not approve gated\/app:g/ })
  t.same(await tagsOf('gated/app'), ['g'], 'nothing ran yet')

  await slack.click('UCAROL', 'approve', approveId)
  const deleted = await hooks.next()
  t.match(deleted, { replace_original: true, text: new RegExp(`^Deleted \`gated/app@${image.digest}\``) })
  t.match(await hooks.next(), { response_type: 'in_channel', text: 'slack:T1/UCAROL approved deleting `gated/app:g` for slack:T1/UALICE.' })
  t.same(await tagsOf('gated/app'), [])
  await slack.click('UCAROL', 'approve', approveId)
  t.match(await hooks.next(), { text: /no longer works/ }, 'approved once')

  await pushImage(target, 'gated/app', ['h'], 'schema2')
  await slack.command('UALICE', 'gated/app:h')
  await slack.click('UALICE', 'request_approval', buttons(await hooks.next()).request_approval as string)
  await hooks.next()
  const stale = buttons(await hooks.next()).approve as string
  await pushImage(target, 'gated/app', ['h'], 'schema2')
  await slack.click('UCAROL', 'approve', stale)
  t.match(await hooks.next(), { replace_original: true, text: /^Not deleted: PLAN_STALE: / }, 'an approved plan is still re-checked')

  const records = await slackAudit('gated/app')
  t.match(records.find(record => record.outcome === 'deleted'), {
    subject: 'slack:T1/UALICE', approvedBy: 'slack:T1/UCAROL', transport: 'slack', decision: { allow: true, reason: /; approved by slack:T1\/UCAROL: slack:T1\/UCAROL may approve gated\/app:g/ }
  }, 'the record names both people')
  t.equal(records.filter(record => record.outcome === 'denied' && record.action === 'delete').length, 3, 'the made-up Delete and both refused approvals are audited')
  t.match(records.find(record => record.errorCode === 'APPROVAL_REQUIRED'), { outcome: 'denied' })
})

t.test('a forced deletion that would take a co-tag needing approval along is refused without it, over REST too', async t => {
  await pushImage(target, 'gated/forced', ['pr-1', 'v1'], 'schema2')
  const dry = await gateway.rest('DELETE', '/images/gated/forced/pr-1?mode=digest&force=true&dryRun=true', { key: FORCER_KEY })
  t.match(dry, { status: 200, body: { allowed: false, removedTags: ['pr-1', 'v1'], reason: /^APPROVAL_REQUIRED: apikey:forcer may delete gated\/forced:v1 / } })
  const real = await gateway.rest('DELETE', '/images/gated/forced/pr-1?mode=digest&force=true', { key: FORCER_KEY })
  t.match(real, { status: 403, body: { code: 'APPROVAL_REQUIRED', detail: /gated\/forced:v1/ } })
  t.same(await tagsOf('gated/forced'), ['pr-1', 'v1'])
  const untag = await gateway.rest('DELETE', '/images/gated/forced/pr-1?mode=untag', { key: FORCER_KEY })
  t.match(untag, { status: 200, body: { deleted: true, removedTags: ['pr-1'] } }, 'pr-1 alone needs no approval: a rule without it wins')
})
