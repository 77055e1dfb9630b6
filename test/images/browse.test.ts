/** The read use cases below the transports, against a real registry and a real policy. */
import t, { type Test } from 'tap'
import { BrowseCache } from '../../src/images/browse-cache.js'
import { CursorCodec } from '../../src/images/browse-cursor.js'
import { listImageTags, listRepositories, PagesInFlight, type BrowseDeps } from '../../src/images/browse.js'
import { loadPolicy } from '../../src/policy/load.js'
import type { Identity } from '../../src/policy/types.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { rejection } from '../fixtures/rejection.js'
import { directory, memoryTrail } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const NAMES = ['apps/a', 'apps/b', 'apps/c', 'infra/d', 'apps/e'].sort()
for (const name of NAMES) await pushImage({ url: registry.url }, name, ['v1', 'v2'], 'schema2')

const policy = loadPolicy(`
roles:
  apps:
    - actions: [read]
      repositories: ["apps/**"]
      tags: ["v1"]
bindings:
  - { role: apps, subjects: ["user:dev"] }
`, 'browse-test.yaml')
const dev: Identity = { subject: 'user:dev', groups: [], kind: 'jwt' }
const stranger: Identity = { subject: 'user:stranger', groups: ['visitors'], kind: 'jwt' }
const context = { requestId: 'browse-test', transport: 'rest' as const }

function deps (t: Test, catalogPageSize: number, catalogPagesPerRequest: number): BrowseDeps & { store: ReturnType<typeof memoryTrail>['store'] } {
  const { audit, store } = memoryTrail(t)
  return {
    registries: directory(t, { default: registry.url }),
    policy: () => policy,
    audit,
    store,
    cache: new BrowseCache({ entries: 100, tagTtlMs: 1000 }),
    concurrency: 4,
    catalogPageSize,
    catalogPagesPerRequest,
    pagesInFlight: new PagesInFlight(2),
    cursors: new CursorCodec()
  }
}

t.test('catalog pagination over one-name upstream pages, filtered by read, continued by cursor', async t => {
  const browse = deps(t, 1, 2)
  const pages: string[][] = []
  let cursor: string | undefined
  do {
    const page = await listRepositories(browse, { identity: dev, context, limit: 2, ...(cursor === undefined ? {} : { cursor }) })
    pages.push(page.items.map(item => item.name))
    cursor = page.nextCursor
  } while (cursor !== undefined && pages.length < 10)
  t.same(pages.flat(), NAMES.filter(name => name.startsWith('apps/')), 'infra/d is left out')
  t.ok(pages.length >= 2, 'two catalog requests per page are not enough for all of it')
})

t.test('tags are filtered by read per tag; a caller with no role is refused and recorded', async t => {
  const browse = deps(t, 1000, 1)
  const page = await listImageTags(browse, { identity: dev, context, repository: 'apps/a' })
  t.same(page.items.map(item => item.tag), ['v1'])
  t.same(page.items[0]?.coTags, [], 'v2 shares the digest but is not the caller\'s to see')
  const refused = await rejection(listImageTags(browse, { identity: stranger, context, repository: 'apps/a' }))
  t.match(refused, { code: 'FORBIDDEN', detail: 'user:stranger may not read apps/a in registry default: subject user:stranger and its groups visitors have no role' })
  const records = await browse.store.list({ action: 'read' }, { limit: 10 })
  t.match(records.items, [{ subject: 'user:stranger', groups: ['visitors'], action: 'read', outcome: 'denied', name: 'apps/a', tag: '', transport: 'rest', requestId: 'browse-test' }])
  const denied = await rejection(listRepositories(browse, { identity: stranger, context }))
  t.equal(denied.code, 'FORBIDDEN')
})

t.test('a tag page\'s cursors are made when first read, once; each continues after its own tag', async t => {
  const everything = loadPolicy(`
roles:
  reader:
    - actions: [read]
      repositories: ["apps/**"]
bindings:
  - { role: reader, subjects: ["user:dev"] }
`, 'browse-cursors-test.yaml')
  class CountingCodec extends CursorCodec {
    encoded = 0
    override encode (cursor: Parameters<CursorCodec['encode']>[0]): string {
      this.encoded++
      return super.encode(cursor)
    }
  }
  const cursors = new CountingCodec()
  const browse = { ...deps(t, 1000, 1), policy: () => everything, cursors }
  const first = await listImageTags(browse, { identity: dev, context, repository: 'apps/a', limit: 1 })
  t.same(first.items.map(item => item.tag), ['v1'])
  t.equal(cursors.encoded, 1, 'only nextCursor is encoded with the page (REST answers with nothing else)')
  const made = first.cursors
  t.equal(made.length, 1)
  t.equal(first.cursors, made, 'read again, the same cursors')
  t.equal(cursors.encoded, 2)
  const second = await listImageTags(browse, { identity: dev, context, repository: 'apps/a', limit: 1, cursor: made[0] as string })
  t.same(second.items.map(item => item.tag), ['v2'], 'v1\'s cursor continues after v1')
  t.equal(second.nextCursor, undefined)
})

t.test('a delete that needs a second person says so on the tag, with the policy\'s reason; a denied one says why', async t => {
  const gated = loadPolicy(`
roles:
  careful:
    - actions: [read, delete]
      repositories: ["apps/**"]
      tags: ["v1"]
      approval: required
bindings:
  - { role: careful, subjects: ["user:dev"] }
`, 'browse-approval-test.yaml')
  const browse = { ...deps(t, 1000, 1), policy: () => gated }
  const page = await listImageTags(browse, { identity: dev, context, repository: 'apps/b' })
  t.match(page.items[0]?.actions, {
    delete: { allowed: true, approvalRequired: true, reason: /user:dev may delete apps\/b:v1 in registry default once someone else approves/ },
    force: { allowed: false, reason: /may not force/ }
  })
  const plain = await listImageTags(deps(t, 1000, 1), { identity: dev, context, repository: 'apps/b' })
  t.same(plain.items[0]?.actions.delete, { allowed: false, reason: plain.items[0]?.actions.delete.reason }, 'no approval flag on a denial')
})
