import { Lru } from '../lru.js'
import type { ConfigSummary, ManifestSummary } from './manifest-summary.js'

/** Far above real images (a handful of platforms, a few KB of labels), low enough that cacheEntries bounds memory. */
const MAX_CACHED_PLATFORMS = 256
const MAX_CACHED_LABEL_CHARS = 64 * 1024

export interface BrowseCacheOptions {
  /** Entries kept per kind (manifests, configs, tag resolutions); the least recently used go first. */
  entries: number
  /** How long a tag's resolution to a digest is reused; 0 asks the registry every time. */
  tagTtlMs: number
  now?: () => number
}

/**
 * What the read API remembers between requests. Manifests and configs are immutable per digest, so they are
 * kept until evicted (their digests were verified when fetched). Tags move, so a tag's digest is reused only
 * for `tagTtlMs`: a page of tags may show a digest that old, which deletions never rely on (they resolve anew).
 */
export class BrowseCache {
  private readonly manifests: Lru<string, ManifestSummary>
  private readonly configs: Lru<string, ConfigSummary>
  private readonly tags: Lru<string, { digest: string, expires: number }>
  private readonly now: () => number

  constructor (private readonly options: BrowseCacheOptions) {
    this.manifests = new Lru(options.entries)
    this.configs = new Lru(options.entries)
    this.tags = new Lru(options.entries)
    this.now = options.now ?? Date.now
  }

  manifest (registry: string, digest: string): ManifestSummary | undefined {
    return this.manifests.get(`${registry}\u0000${digest}`)
  }

  setManifest (registry: string, summary: ManifestSummary): void {
    // Entries are counted, not weighed: an index listing thousands of platforms is answered but not kept.
    if ((summary.platforms?.length ?? 0) > MAX_CACHED_PLATFORMS) return
    this.manifests.set(`${registry}\u0000${summary.digest}`, summary)
  }

  config (registry: string, digest: string): ConfigSummary | undefined {
    return this.configs.get(`${registry}\u0000${digest}`)
  }

  setConfig (registry: string, digest: string, summary: ConfigSummary): void {
    if (Object.entries(summary.labels).reduce((size, [name, value]) => size + name.length + value.length, 0) > MAX_CACHED_LABEL_CHARS) return
    this.configs.set(`${registry}\u0000${digest}`, summary)
  }

  /** The digest `tag` pointed at less than tagTtlMs ago, when its manifest is still cached too. */
  tag (registry: string, repository: string, tag: string): ManifestSummary | undefined {
    const key = `${registry}\u0000${repository}\u0000${tag}`
    const entry = this.tags.get(key)
    if (entry === undefined) return undefined
    if (entry.expires <= this.now()) {
      this.tags.delete(key)
      return undefined
    }
    return this.manifest(registry, entry.digest)
  }

  setTag (registry: string, repository: string, tag: string, digest: string): void {
    if (this.options.tagTtlMs === 0) return
    this.tags.set(`${registry}\u0000${repository}\u0000${tag}`, { digest, expires: this.now() + this.options.tagTtlMs })
  }
}
