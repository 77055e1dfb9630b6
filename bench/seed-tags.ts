/**
 * Fast seeding for the benchmark: one real image per repository (blobs pushed once), then many tags made by
 * PUTting manifests that reference those blobs, many in flight at once over one keep-alive pool.
 */
import { createHash } from 'node:crypto'
import type { Pool } from 'undici'
import { pushImage, MEDIA_TYPES } from '../testing/seed.js'
import { forEachLimited } from '../src/images/co-tags.js'

const SEED_CONCURRENCY = 16

export interface TaggedManifest {
  tag: string
  bytes: Buffer
  digest: string
}

export interface SeededRepository {
  name: string
  mediaType: string
  tags: TaggedManifest[]
  /** Wall time of the seeding, milliseconds. */
  ms: number
}

export function sha256 (bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

export function tagName (index: number): string {
  return `t-${index}`
}

/** PUT manifest bytes under a tag; the registry must answer 201 with the digest of exactly these bytes. */
export async function putTag (pool: Pool, name: string, tag: string, bytes: Buffer, mediaType: string): Promise<void> {
  const response = await pool.request({
    method: 'PUT', path: `/v2/${name}/manifests/${tag}`, headers: { 'content-type': mediaType }, body: bytes
  })
  const text = await response.body.text()
  if (response.statusCode !== 201) throw new Error(`PUT /v2/${name}/manifests/${tag} answered ${response.statusCode}: ${text.trim()}`)
}

/**
 * `count` tags t-0 … t-(count-1) of one repository. `shared`: all on the same manifest (a co-tag guard's worst
 * case, everything found); otherwise each tag gets its own manifest (an OCI annotation names the tag), so
 * deleting one tag removes only that tag.
 */
export async function seedRepository (
  registryUrl: string, pool: Pool, name: string, count: number, shared: boolean, onProgress: (done: number) => void = () => {}
): Promise<SeededRepository> {
  const started = performance.now()
  // Untagged: only its blobs and the manifest shape are wanted.
  const image = await pushImage({ url: registryUrl }, name, [], 'oci')
  const base = JSON.parse(image.manifest.toString('utf8')) as Record<string, unknown>
  const sharedBytes = Buffer.from(JSON.stringify({ ...base, annotations: { 'org.example.bench': name } }))
  const tags: TaggedManifest[] = Array.from({ length: count }, (_, index) => {
    const tag = tagName(index)
    const bytes = shared ? sharedBytes : Buffer.from(JSON.stringify({ ...base, annotations: { 'org.example.bench': `${name}:${tag}` } }))
    return { tag, bytes, digest: sha256(bytes) }
  })
  let done = 0
  await forEachLimited(tags, SEED_CONCURRENCY, async (entry) => {
    await putTag(pool, name, entry.tag, entry.bytes, MEDIA_TYPES.ociManifest)
    onProgress(++done)
  })
  return { name, mediaType: MEDIA_TYPES.ociManifest, tags, ms: performance.now() - started }
}
