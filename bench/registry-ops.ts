/** What a client that talks to the registry directly does, with a bare undici Pool and nothing else. */
import type { Pool } from 'undici'
import { MANIFEST_ACCEPT } from '../src/registry/media-types.js'

const HEAD_HEADERS = { accept: MANIFEST_ACCEPT }

/** HEAD with the full Accept list; the digest DELETE accepts. */
export async function headDigest (pool: Pool, name: string, reference: string): Promise<string | undefined> {
  const response = await pool.request({ method: 'HEAD', path: `/v2/${name}/manifests/${reference}`, headers: HEAD_HEADERS })
  await response.body.dump()
  if (response.statusCode === 404) return undefined
  if (response.statusCode !== 200) throw new Error(`HEAD /v2/${name}/manifests/${reference} answered ${response.statusCode}`)
  return response.headers['docker-content-digest'] as string
}

export async function listTags (pool: Pool, name: string): Promise<string[]> {
  const response = await pool.request({ method: 'GET', path: `/v2/${name}/tags/list` })
  if (response.statusCode !== 200) {
    await response.body.dump()
    throw new Error(`GET /v2/${name}/tags/list answered ${response.statusCode}`)
  }
  const parsed = await response.body.json() as { tags?: string[] | null }
  return parsed.tags ?? []
}

export async function deleteDigest (pool: Pool, name: string, digest: string): Promise<void> {
  const response = await pool.request({ method: 'DELETE', path: `/v2/${name}/manifests/${digest}` })
  await response.body.dump()
  if (response.statusCode !== 202) throw new Error(`DELETE /v2/${name}/manifests/${digest} answered ${response.statusCode}`)
}

/** HEADs `tags` with `concurrency` in flight; answers those that point at `digest`. */
export async function tagsOnDigest (pool: Pool, name: string, tags: readonly string[], digest: string, concurrency: number): Promise<string[]> {
  const sharing: string[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < tags.length) {
      const tag = tags[next++] as string
      if (await headDigest(pool, name, tag) === digest) sharing.push(tag)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, tags.length) }, worker))
  return sharing
}
