import t from 'tap'
import { request } from 'undici'
import { DEMO_CLIENT_ID, startDemo } from '../../demo/demo.js'
import { signInWithoutBrowser } from '../../testing/oidc-provider.js'

t.test('the demo starts a seeded registry, a policy with its keys, and the gateway; stop ends them all', async t => {
  const slackPosts: any[] = []
  const demo = await startDemo({ host: '127.0.0.1', port: 0, logLevel: 'silent', onSlackPost: message => slackPosts.push(message) })
  let stopped = false
  t.teardown(async () => { if (!stopped) await demo.stop() })
  t.same(demo.keys.map(key => key.name), ['demo-admin', 'demo-ci', 'demo-reader'])
  const [admin, ci, reader] = demo.keys.map(key => key.key)

  const call = async (method: 'GET' | 'DELETE', path: string, key: string | undefined): Promise<{ status: number, body: any }> => {
    const response = await request(`${demo.gatewayUrl}${path}`, { method, headers: { 'x-api-key': key ?? '' } })
    return { status: response.statusCode, body: await response.body.json() }
  }
  t.match((await call('GET', '/me', ci)).body, { subject: 'apikey:demo-ci', groups: ['ci'], roles: ['preview-cleaner'] })
  const dry = await call('DELETE', '/images/team-a/app/pr-1?dryRun=true', reader)
  t.equal(dry.status, 200, 'the reader may dry-run')
  t.equal(dry.body.mediaType, 'application/vnd.oci.image.index.v1+json')
  t.equal(dry.body.allowed, false, 'and learns that the real call would be refused')
  t.match(dry.body.reason, /^FORBIDDEN: /)
  t.equal((await call('DELETE', '/images/team-a/app/pr-1', reader)).body.code, 'FORBIDDEN', 'but not delete')
  t.equal((await call('DELETE', '/images/team-a/app/pr-1', ci)).body.deleted, true, 'the CI key deletes previews')
  t.same((await call('DELETE', '/images/team-a/app/pr-3?mode=digest', ci)).body.sharedWith, ['pr-3-rc'], 'deleting the digest would take pr-3-rc')
  const untagged = await call('DELETE', '/images/team-a/app/pr-3', ci)
  t.match(untagged.body, { mode: 'auto', action: 'untagged', strategy: 'swap', removedTags: ['pr-3'] }, 'auto untags pr-3 alone')
  const kept = await request(`${demo.registryUrl}/v2/team-a/app/manifests/pr-3-rc`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })
  await kept.body.dump()
  t.equal(kept.headers['docker-content-digest'], untagged.body.digest, 'pr-3-rc stays on the digest')
  t.equal((await call('DELETE', '/images/team-a/app/pr-4?mode=digest&force=true', admin)).body.code, 'PROTECTED_TAG', 'forcing pr-4 would take latest')

  const command = demo.slackCommand('team-a/app:pr-2')
  t.match(command.curl, /^curl -s http:\/\/127\.0\.0\.1:\d+\/chat\/slack\/commands -H 'X-Slack-Request-Timestamp: \d+' -H 'X-Slack-Signature: v0=[0-9a-f]{64}' --data-raw 'team_id=T0DEMO&/)
  const slack = await request(command.url, { method: 'POST', headers: command.headers, body: command.body })
  t.match(await slack.body.json(), { text: 'planning…' }, 'the signed sample command is accepted')
  for (let waited = 0; slackPosts.length === 0 && waited < 200; waited++) await new Promise(resolve => setTimeout(resolve, 50))
  t.match(slackPosts[0], { text: /untag|delete the image/, blocks: [{}, { type: 'actions' }] }, 'and its plan reaches the stand-in response_url')
  const ui = await request(`${demo.gatewayUrl}/ui/config.json`)
  t.same(await ui.body.json(), { oidc: { issuer: demo.issuer, clientId: DEMO_CLIENT_ID, scopes: 'openid profile' } }, 'the page signs in with the demo provider')
  t.same(demo.users.map(user => user.username), ['alice', 'bob'])
  const bob = demo.users[1] as { username: string, password: string }
  const token = await signInWithoutBrowser({ issuer: demo.issuer }, { clientId: DEMO_CLIENT_ID, redirectUri: demo.uiUrl }, bob.username, bob.password)
  const me = await request(`${demo.gatewayUrl}/me`, { headers: { authorization: `Bearer ${token}` } })
  t.match(await me.body.json(), { subject: 'user:bob', groups: ['developers'], roles: ['developer'] }, 'a printed user signs in and holds the printed role')

  await demo.stop()
  stopped = true
  await t.rejects(request(`${demo.registryUrl}/v2/`), 'the registry is stopped')
  await t.rejects(request(`${demo.gatewayUrl}/healthz`), 'the gateway is stopped')
  await t.rejects(request(`${demo.issuer}/jwks`), 'the identity provider is stopped')
})

t.test('a demo that cannot start cleans up after itself', async t => {
  const blocker = await startDemo({ host: '127.0.0.1', port: 0, logLevel: 'silent' })
  t.teardown(blocker.stop)
  const port = Number(new URL(blocker.gatewayUrl).port)
  await t.rejects(startDemo({ host: '127.0.0.1', port, logLevel: 'silent' }), { code: 'EADDRINUSE' })
})
