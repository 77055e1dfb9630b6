import t from 'tap'
import { BrowseCache } from '../../src/images/browse-cache.js'

const summary = (digest: string): { digest: string, mediaType: string } => ({ digest, mediaType: 'm' })

t.test('a tag\'s digest is reused until tagTtlMs, and only while its manifest is cached', async t => {
  let now = 1000
  const cache = new BrowseCache({ entries: 2, tagTtlMs: 100, now: () => now })
  cache.setManifest('r', summary('d1'))
  cache.setTag('r', 'app', 'v1', 'd1')
  t.same(cache.tag('r', 'app', 'v1'), summary('d1'))
  t.equal(cache.tag('other', 'app', 'v1'), undefined, 'per registry')
  now += 99
  t.same(cache.tag('r', 'app', 'v1'), summary('d1'))
  now += 1
  t.equal(cache.tag('r', 'app', 'v1'), undefined, 'expired')
  t.equal(cache.tag('r', 'app', 'v1'), undefined, 'and forgotten')
  cache.setTag('r', 'app', 'v2', 'd2')
  t.equal(cache.tag('r', 'app', 'v2'), undefined, 'a digest whose manifest is not cached is asked again')
  cache.setManifest('r', summary('d2'))
  cache.setManifest('r', summary('d3'))
  t.equal(cache.manifest('r', 'd1'), undefined, 'bounded: the least recently used goes')
  cache.setConfig('r', 'c1', { labels: {} })
  t.same(cache.config('r', 'c1'), { labels: {} })
  t.equal(cache.config('s', 'c1'), undefined)
})

t.test('tagTtlMs 0 never reuses a tag\'s digest', async t => {
  const cache = new BrowseCache({ entries: 10, tagTtlMs: 0 })
  cache.setManifest('r', summary('d1'))
  cache.setTag('r', 'app', 'v1', 'd1')
  t.equal(cache.tag('r', 'app', 'v1'), undefined)
  t.same(cache.manifest('r', 'd1'), summary('d1'))
})

t.test('summaries too big to count as one entry are answered but not kept', async t => {
  const cache = new BrowseCache({ entries: 10, tagTtlMs: 1000 })
  const platforms = (count: number): Array<{ os: string, architecture: string, digest: string }> =>
    Array.from({ length: count }, (_, index) => ({ os: 'linux', architecture: `a${index}`, digest: `sha256:${index}` }))
  cache.setManifest('r', { ...summary('wide'), platforms: platforms(257) })
  t.equal(cache.manifest('r', 'wide'), undefined)
  cache.setManifest('r', { ...summary('usual'), platforms: platforms(256) })
  t.equal(cache.manifest('r', 'usual')?.platforms?.length, 256)
  cache.setConfig('r', 'big', { labels: { big: 'x'.repeat(64 * 1024) } })
  t.equal(cache.config('r', 'big'), undefined)
  cache.setConfig('r', 'small', { created: 'then', labels: { a: 'b' } })
  t.same(cache.config('r', 'small'), { created: 'then', labels: { a: 'b' } })
})
