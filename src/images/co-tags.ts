import { isGatewayError } from '../errors.js'
import type { RegistryClient } from '../registry/client.js'

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
 * registry's most surprising behaviour and the reason this check exists.
 */
export async function findCoTags (client: RegistryClient, repository: string, digest: string, tag: string, concurrency: number): Promise<string[]> {
  const others = (await client.listTags(repository)).filter(candidate => candidate !== tag)
  const sharing: string[] = []
  await forEachLimited(others, concurrency, async (candidate) => {
    try {
      if ((await client.resolve(repository, candidate)).digest === digest) sharing.push(candidate)
    } catch (error) {
      // A tag removed since the listing points at nothing, so it cannot be lost with this digest.
      if (isGatewayError(error) && error.code === 'NOT_FOUND') return
      throw error
    }
  })
  return sharing.sort()
}
