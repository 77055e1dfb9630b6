/**
 * Answers and refusals name only tags the caller may read: a co-tag, an index tag or a tag a plan would remove
 * that the policy hides from the caller is counted (hiddenTags), never named. Against a real registry.
 */
import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest } from '../../testing/seed.js'
import { ADMIN_KEY, sha256Hex, startGateway } from '../fixtures/gateway.js'

const PREVIEW_KEY = 'rdg_previewer-key-0123456789abcdef0123456789'
const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const gateway = await startGateway(t, {
  registries: { default: { url: registry.url, defaultMode: 'auto' } },
  policy: `
apiKeys:
  - name: admin
    sha256: ${sha256Hex(ADMIN_KEY)}
  - name: previewer
    sha256: ${sha256Hex(PREVIEW_KEY)}
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
  previewer:
    - actions: ["read", "delete"]
      repositories: ["hidden/**"]
      tags: ["pr-*"]
bindings:
  - role: admin
    subjects: ["apikey:admin"]
  - role: previewer
    subjects: ["apikey:previewer"]
`
})

t.test('a dry-run counts the co-tags the caller may not read and names the others', async t => {
  const image = await pushImage(target, 'hidden/app', ['pr-1', 'pr-1-rc', 'secret-build'], 'schema2')
  const dry = await gateway.rest('DELETE', '/images/hidden/app/pr-1?dryRun=true&mode=auto', { key: PREVIEW_KEY })
  t.equal(dry.status, 200)
  t.match(dry.body, { action: 'untagged', digest: image.digest, sharedWith: ['pr-1-rc'], hiddenTags: 1 })
  t.notMatch(JSON.stringify(dry.body), /secret-build/, 'the hidden co-tag is not named anywhere in the answer')
  const admin = await gateway.rest('DELETE', '/images/hidden/app/pr-1?dryRun=true&mode=auto')
  t.same(admin.body.sharedWith, ['pr-1-rc', 'secret-build'], 'a caller who may read every tag sees them all')
  t.equal(admin.body.hiddenTags, undefined)
  t.equal(admin.body.planId, dry.body.planId, 'the plan is the same plan whoever looks at it')

  const viaGraphQL = await gateway.gql('mutation { deleteImage(name: "hidden/app", tag: "pr-1", dryRun: true) { sharedWith hiddenTags } }', {}, { key: PREVIEW_KEY })
  t.same(viaGraphQL.body.data.deleteImage, { sharedWith: ['pr-1-rc'], hiddenTags: 1 }, 'GraphQL answers the same')
  const refused = await gateway.rest('DELETE', '/images/hidden/app/pr-1?dryRun=true&mode=digest', { key: PREVIEW_KEY })
  t.equal(refused.status, 409)
  t.match(refused.body, { code: 'SHARED_DIGEST', sharedWith: ['pr-1-rc'], hiddenTags: 1 })
  t.match(refused.body.detail, /also tagged pr-1-rc, 1 more you may not read/)
  t.notMatch(JSON.stringify(refused.body), /secret-build/)
})

t.test('a multi-platform image the caller may not read is counted, not named', async t => {
  const index = await pushImage(target, 'hidden/multi', ['secret-multi'], 'oci-index')
  const child = index.children[0] as { digest: string, mediaType: string }
  const got = await fetch(`${registry.url}/v2/hidden/multi/manifests/${child.digest}`, { headers: { accept: child.mediaType } })
  await tagManifest(target, 'hidden/multi', 'pr-child', Buffer.from(await got.arrayBuffer()), child.mediaType)
  const refused = await gateway.rest('DELETE', '/images/hidden/multi/pr-child?dryRun=true&mode=digest', { key: PREVIEW_KEY })
  t.equal(refused.status, 409)
  t.match(refused.body, { code: 'REFERENCED_BY_INDEX', hiddenTags: 1, referencedBy: [{ digest: index.digest, tags: [] }] })
  t.notMatch(JSON.stringify(refused.body), /secret-multi/)
  const auto = await gateway.rest('DELETE', '/images/hidden/multi/pr-child?dryRun=true', { key: PREVIEW_KEY })
  t.match(auto.body, { action: 'untagged', referencedBy: [{ digest: index.digest, tags: [] }], hiddenTags: 1 })
})
