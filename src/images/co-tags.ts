import { isGatewayError } from '../errors.js'
import type { RegistryClient } from '../registry/client.js'
import { isIndex } from '../registry/media-types.js'

/** Runs `work` over `items` with at most `limit` in flight, keeping connections busy without flooding them. */
export async function forEachLimited<T> (items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T
      await work(item)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

/**
 * The other tags of `repository` that point at `digest`: deleting the digest removes them too, which is the
 * registry's most surprising behaviour and the reason this check exists. When `indexes` is given, it also
 * collects the tags that point at other image indexes or manifest lists (digest → tags), found by the same HEADs.
 */
export async function findCoTags (client: RegistryClient, repository: string, digest: string, tag: string, concurrency: number, indexes?: Map<string, string[]>): Promise<string[]> {
  const others = (await client.listTags(repository)).filter(candidate => candidate !== tag)
  const sharing: string[] = []
  await forEachLimited(others, concurrency, async (candidate) => {
    try {
      // GET, not HEAD: undici closes the connection after every HEAD, which would cost a TCP (and TLS)
      // handshake per tag; a manifest is a few KB, and its bytes are hashed, so the digest is checked too.
      const found = await client.getManifest(repository, candidate)
      if (found.digest === digest) sharing.push(candidate)
      else if (indexes !== undefined && isIndex(found.mediaType)) indexes.set(found.digest, [...indexes.get(found.digest) ?? [], candidate])
    } catch (error) {
      // A tag removed since the listing points at nothing, so it cannot be lost with this digest.
      if (isGatewayError(error) && error.code === 'NOT_FOUND') return
      throw error
    }
  })
  return sharing.sort()
}
