import t from 'tap'
import { summarizeConfig, summarizeManifest } from '../../src/images/manifest-summary.js'
import { DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from '../../src/registry/media-types.js'

const DIGEST = `sha256:${'a'.repeat(64)}`
const CONFIG = `sha256:${'b'.repeat(64)}`
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value))

t.test('an index lists its platforms; entries without one, and BuildKit attestations, are left out', async t => {
  const bytes = json({
    manifests: [
      { digest: 'sha256:1', platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
      { digest: 'sha256:2', platform: { os: 'linux', architecture: 'amd64', variant: 7 } },
      { digest: 'sha256:3', platform: { os: 'unknown' } },
      { digest: 'sha256:4' },
      { digest: 'sha256:5', platform: { os: 'unknown', architecture: 'unknown' }, annotations: { 'vnd.docker.reference.type': 'attestation-manifest' } },
      { digest: 'sha256:6', platform: { os: 'linux', architecture: 'riscv64' }, annotations: { 'org.example': 'x' } },
      { platform: { os: 'linux', architecture: 's390x' } },
      null
    ]
  })
  t.same(summarizeManifest(bytes, DIGEST, OCI_INDEX, 'r'), {
    digest: DIGEST,
    mediaType: OCI_INDEX,
    platforms: [
      { os: 'linux', architecture: 'arm', variant: 'v7', digest: 'sha256:1' },
      { os: 'linux', architecture: 'amd64', digest: 'sha256:2' },
      { os: 'linux', architecture: 'riscv64', digest: 'sha256:6' }
    ],
    children: ['sha256:1', 'sha256:2', 'sha256:3', 'sha256:4', 'sha256:5', 'sha256:6']
  })
  const annotated = (annotations: unknown): Buffer => json({ manifests: [{ digest: 'sha256:1' }], annotations })
  t.equal(summarizeManifest(annotated({ 'org.opencontainers.image.created': '2026-11-01T00:00:00Z' }), DIGEST, OCI_INDEX, 'r').created, '2026-11-01T00:00:00Z',
    'an index\'s creation annotation, for cleanups')
  t.notOk('created' in summarizeManifest(annotated({ 'org.opencontainers.image.created': 7 }), DIGEST, OCI_INDEX, 'r'), 'not a string: none')
  t.notOk('created' in summarizeManifest(annotated(null), DIGEST, OCI_INDEX, 'r'), 'no annotations: none')
})

t.test('a manifest gives its config digest and the total size of its layers', async t => {
  t.same(summarizeManifest(json({ config: { digest: CONFIG }, layers: [{ size: 10 }, { size: 32 }] }), DIGEST, DOCKER_MANIFEST, 'r'),
    { digest: DIGEST, mediaType: DOCKER_MANIFEST, configDigest: CONFIG, layersSize: 42 })
  t.same(summarizeManifest(json({ config: { digest: 'sha512:abc' }, layers: [] }), DIGEST, OCI_MANIFEST, 'r'),
    { digest: DIGEST, mediaType: OCI_MANIFEST, layersSize: 0 }, 'a config the gateway cannot verify is not fetched')
  t.same(summarizeManifest(json({ schemaVersion: 1, fsLayers: [] }), DIGEST, 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'r'),
    { digest: DIGEST, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' }, 'other kinds: digest and type only')
})

t.test('garbled manifests are refused with the registry named', async t => {
  const cases: Array<[Buffer, string, RegExp]> = [
    [Buffer.from('not json'), DOCKER_MANIFEST, /is not JSON/],
    [json([1]), DOCKER_MANIFEST, /is not a JSON object/],
    [json(null), DOCKER_MANIFEST, /is not a JSON object/],
    [json({ manifests: {} }), DOCKER_LIST, /index without a manifests list/],
    [json({ layers: [] }), DOCKER_MANIFEST, /no config digest or layers list/],
    [json({ config: { digest: CONFIG } }), DOCKER_MANIFEST, /no config digest or layers list/],
    [json({ config: { digest: CONFIG }, layers: [{ size: -1 }] }), DOCKER_MANIFEST, /layer without a valid size/],
    [json({ config: { digest: CONFIG }, layers: [{ size: 1.5 }] }), DOCKER_MANIFEST, /layer without a valid size/],
    [json({ config: { digest: CONFIG }, layers: [null] }), DOCKER_MANIFEST, /layer without a valid size/]
  ]
  for (const [bytes, mediaType, why] of cases) {
    t.throws(() => summarizeManifest(bytes, DIGEST, mediaType, 'mirror'), { code: 'UPSTREAM_ERROR', message: /registry "mirror" sent manifest sha256:a+/ }, why.source)
    t.throws(() => summarizeManifest(bytes, DIGEST, mediaType, 'mirror'), { message: why }, why.source)
  }
})

t.test('a config gives created and its string labels', async t => {
  t.same(summarizeConfig(json({ created: '2026-01-01T00:00:00Z', config: { Labels: { a: 'b', n: 1 } } }), CONFIG, 'r'),
    { created: '2026-01-01T00:00:00Z', labels: { a: 'b' } })
  t.same(summarizeConfig(json({ created: 5, config: { Labels: null } }), CONFIG, 'r'), { labels: {} })
  t.same(summarizeConfig(json({ config: null }), CONFIG, 'r'), { labels: {} })
  t.same(summarizeConfig(json({}), CONFIG, 'r'), { labels: {} })
  t.throws(() => summarizeConfig(Buffer.from('{'), CONFIG, 'r'), { code: 'UPSTREAM_ERROR', message: /image config sha256:b+, which is not JSON/ })
})
