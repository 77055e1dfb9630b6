/**
 * The read API's use cases: the registry's catalog, a repository's tags a page at a time, and one tag in detail,
 * each shown only as far as the policy's `read` action allows. Reads are not audited; a refused read is.
 */
import type { AuditTrail } from '../audit/trail.js'
import { GatewayError, isGatewayError, invalidField } from '../errors.js'
import { decide, decideRepositoryRead, repositoryDecider } from '../policy/index.js'
import type { Decision, Identity, Policy } from '../policy/types.js'
import type { RegistryClient } from '../registry/client.js'
import type { RegistryDirectory } from '../registry/directory.js'
import { malformedAnswer } from '../registry/errors.js'
import { validateName, validateTag } from '../registry/reference.js'
import type { BrowseCache } from './browse-cache.js'
import type { Cursor, CursorCodec } from './browse-cursor.js'
import type { ActionPermission, ImageTag, ImageTagPage, RepositoryPage, TagActions, TagDetail } from './browse-shapes.js'
import { forEachLimited } from './co-tags.js'
import type { RequestContext } from './delete-image.js'
import { summarizeConfig, summarizeManifest, type ManifestSummary } from './manifest-summary.js'

export interface BrowseDeps {
  registries: RegistryDirectory
  /** The policy in force now; each request decides everything on the one it read first. */
  policy: () => Policy | undefined
  audit: AuditTrail
  cache: BrowseCache
  /** Manifests fetched at once for one page of tags. */
  concurrency: number
  /** Names asked per catalog request (distribution refuses more than 1,000). */
  catalogPageSize: number
  /** Catalog requests one page of repositories may make; past it the page ends early with a cursor. */
  catalogPagesPerRequest: number
  /** Pages (of repositories or tags) one caller may have in flight; each can read the registry up to 100 times. */
  pagesInFlight: PagesInFlight
  cursors: CursorCodec
}

/**
 * Pages in flight per caller identity: past the limit a caller gets 429 at once, not a queue, so that one reader
 * cannot keep the registry busy with many pages at once (the request rate limit alone allows hundreds a minute).
 */
export class PagesInFlight {
  private readonly running = new Map<string, number>()

  /** `what` and `setting` name the work and the limit's configuration key in the 429's words. */
  constructor (
    private readonly limit: number,
    private readonly what = 'pages of repositories or tags being read',
    private readonly setting = 'browse.pagesPerCaller'
  ) {}

  async run<T> (subject: string, work: () => Promise<T>): Promise<T> {
    const running = this.running.get(subject) ?? 0
    if (running >= this.limit) {
      throw new GatewayError('RATE_LIMITED',
        `${subject} already has ${running} ${this.what}, the most one caller may have at once (${this.setting}); retry after 1 s.`,
        { retryAfter: 1 })
    }
    this.running.set(subject, running + 1)
    try {
      return await work()
    } finally {
      const left = (this.running.get(subject) as number) - 1
      if (left === 0) this.running.delete(subject)
      else this.running.set(subject, left)
    }
  }
}

interface ReadInput {
  identity: Identity
  context: RequestContext
  registry?: string
  signal?: AbortSignal
}

export const DEFAULT_BROWSE_PAGE = 50
export const MAX_BROWSE_PAGE = 100
/** Image configs are JSON documents of a few KB; distribution caps manifests at 4 MiB, and configs get the same. */
const MAX_CONFIG_BYTES = 4 * 1024 * 1024
const PREFIX = /^[a-z0-9._/-]{1,255}$/

function checkedLimit (limit: number | undefined): number {
  const value = limit ?? DEFAULT_BROWSE_PAGE
  if (!Number.isInteger(value) || value < 1 || value > MAX_BROWSE_PAGE) {
    throw invalidField('limit', `integer 1..${MAX_BROWSE_PAGE}`, `limit must be an integer from 1 to ${MAX_BROWSE_PAGE}.`)
  }
  return value
}

/** Whether a validator of the reference grammar accepts a value (cursor and catalog contents are checked with it). */
const accepts = (validate: (value: string) => string) => (value: string): boolean => {
  try {
    validate(value)
    return true
  } catch {
    return false
  }
}
const isRepositoryName = accepts(validateName)
const isTag = accepts(validateTag)

/** A refused read: recorded in the audit trail like a refused deletion, then thrown. */
async function refuse (deps: BrowseDeps, input: ReadInput, registry: string, name: string, tag: string, decision: Decision & { allow: false }): Promise<never> {
  await deps.audit.record({
    requestId: input.context.requestId,
    ...(input.context.clientRequestId === undefined ? {} : { clientRequestId: input.context.clientRequestId }),
    transport: input.context.transport,
    subject: input.identity.subject,
    groups: input.identity.groups,
    action: 'read',
    registry,
    name,
    tag,
    removedTags: [],
    decision: { allow: false, reason: decision.reason },
    outcome: 'denied',
    errorCode: decision.code,
    errorDetail: decision.reason
  })
  throw new GatewayError(decision.code, decision.reason, {
    extras: {
      subject: input.identity.subject,
      roles: decision.roles,
      action: 'read',
      registry,
      ...(name === '' ? {} : { repository: name }),
      ...(tag === '' ? {} : { tag })
    }
  })
}

/** Refuses (and records) a caller that may read no tag of the repository; answers the policy to decide the rest on. */
async function authorizeRepository (deps: BrowseDeps, input: ReadInput, client: RegistryClient, name: string): Promise<Policy | undefined> {
  const policy = deps.policy()
  const decision = decideRepositoryRead(policy, input.identity, client.name, name)
  if (!decision.allow) await refuse(deps, input, client.name, name, '', decision)
  return policy
}

/** A repository the caller may read (refused and recorded otherwise), without reading the registry: GraphQL's `image`. */
export async function openRepository (deps: BrowseDeps, input: ReadInput & { repository: string }): Promise<{ registry: string, name: string }> {
  const name = validateName(input.repository)
  const client = deps.registries.get(input.registry)
  await authorizeRepository(deps, input, client, name)
  return { registry: client.name, name }
}

export interface ListRepositoriesInput extends ReadInput {
  prefix?: string
  limit?: number
  cursor?: string
}

/**
 * A page of the catalog's repositories the caller may read, in the registry's (lexical) order. At most
 * catalogPagesPerRequest catalog requests per page: a caller who may read little of a large catalog gets short
 * (even empty) pages with a cursor rather than a scan of the whole catalog.
 */
export async function listRepositories (deps: BrowseDeps, input: ListRepositoriesInput): Promise<RepositoryPage & { cursors: string[] }> {
  const client = deps.registries.get(input.registry)
  const limit = checkedLimit(input.limit)
  if (input.prefix !== undefined && !PREFIX.test(input.prefix)) {
    throw invalidField('prefix', 'at most 255 of a-z 0-9 . _ / -', 'prefix must be the start of a repository name: at most 255 of a-z, 0-9, ".", "_", "/" and "-".')
  }
  const prefix = input.prefix ?? ''
  const expected = { kind: 'catalog' as const, registry: client.name, scope: prefix }
  const after = deps.cursors.decode(input.cursor, expected, isRepositoryName)
  const policy = await authorizeRepository(deps, input, client, '')
  const cursorAfter = (name: string): string => deps.cursors.encode({ ...expected, after: name })
  const page = (names: string[], next?: string): RepositoryPage & { cursors: string[] } => ({
    registry: client.name,
    items: names.map(name => ({ name })),
    cursors: names.map(cursorAfter),
    ...(next === undefined ? {} : { nextCursor: cursorAfter(next) })
  })
  return await deps.pagesInFlight.run(input.identity.subject, async () => {
    const { names, next } = await catalogNames(deps, input, client, policy, { prefix, limit, after })
    return page(names, next)
  })
}

/** Reads the catalog from `after` until `limit` readable names, the end of the prefix, or the request bound. */
async function catalogNames (
  deps: BrowseDeps, input: ListRepositoriesInput, client: RegistryClient, policy: Policy | undefined,
  scan: { prefix: string, limit: number, after: string | undefined }
): Promise<{ names: string[], next?: string }> {
  const { prefix, limit, after } = scan
  // Every name starting with the prefix sorts after the prefix less its last character.
  let last = after ?? (prefix.length > 1 ? prefix.slice(0, -1) : undefined)
  const names: string[] = []
  // The catalog is in lexical order: names with the prefix are together, so a name past them ends the listing.
  const pastPrefix = (name: string): boolean => !name.startsWith(prefix) && name > prefix
  for (let request = 0; request < deps.catalogPagesPerRequest; request++) {
    const answer = await client.catalogPage(last, deps.catalogPageSize, input.signal)
    for (const [index, name] of answer.repositories.entries()) {
      if (name === last || !isRepositoryName(name)) {
        // The names stay out of the answer: `last` may be where a sealed cursor stopped, a repository the caller may not see.
        throw malformedAnswer(200,
          `registry "${client.name}" listed a name in its catalog that is not a repository name, or repeats the one before it; refusing to list from it.`)
      }
      if (pastPrefix(name)) return { names }
      if (!name.startsWith(prefix)) continue
      if (decideRepositoryRead(policy, input.identity, client.name, name).allow) names.push(name)
      if (names.length === limit) {
        const following = answer.repositories[index + 1]
        const more = following === undefined ? answer.more : !pastPrefix(following)
        return more ? { names, next: name } : { names }
      }
    }
    if (!answer.more) return { names }
    const previous = last
    last = answer.repositories.at(-1)
    if (last === undefined || last === previous) {
      throw malformedAnswer(200, `registry "${client.name}" announced more of its catalog after a page that brought nothing new; refusing to loop.`)
    }
  }
  // The request bound is reached: the next page starts after the last name read (every round that went on read one).
  return { names, next: last as string }
}

export interface ListTagsInput extends ReadInput {
  /** The repository (the distribution spec's `<name>`), as the caller wrote it: validated here. */
  repository: string
  limit?: number
  cursor?: string
}

function permission (decision: Decision): ActionPermission {
  if (!decision.allow) return { allowed: false, reason: decision.reason }
  // An allowed action that waits for a second person would surprise the caller at Delete: say so up front.
  return decision.approval === 'required' ? { allowed: true, approvalRequired: true, reason: decision.reason } : { allowed: true }
}

/** What the caller may do with each tag of one repository: the policy is walked once per action, not once per tag. */
function tagActionsOf (
  policy: Policy | undefined, identity: Identity, registry: string, repository: string
): (tag: string) => { actions: TagActions, protected: boolean } {
  const mayDelete = repositoryDecider(policy, identity, 'delete', registry, repository)
  const mayForce = repositoryDecider(policy, identity, 'force', registry, repository)
  const mayRestore = repositoryDecider(policy, identity, 'restore', registry, repository)
  return tag => {
    const deletion = mayDelete(tag)
    return {
      // Protected tags are refused to every caller before any role is consulted, so the refusal's code tells.
      protected: deletion.code === 'PROTECTED_TAG',
      actions: { delete: permission(deletion), force: permission(mayForce(tag)), restore: permission(mayRestore(tag)) }
    }
  }
}

function platformsOf (summary: ManifestSummary): Pick<ImageTag, 'platforms' | 'size'> {
  if (summary.platforms !== undefined) return { platforms: summary.platforms }
  return summary.layersSize === undefined ? {} : { size: summary.layersSize }
}

/** The tag's manifest: cached by digest, fetched by tag (one request, bytes verified) when not known. */
async function tagManifest (deps: BrowseDeps, client: RegistryClient, name: string, tag: string, signal?: AbortSignal): Promise<ManifestSummary> {
  const known = deps.cache.tag(client.name, name, tag)
  if (known !== undefined) return known
  const manifest = await client.getManifest(name, tag, 'pull', signal)
  const summary = deps.cache.manifest(client.name, manifest.digest) ?? summarizeManifest(manifest.bytes, manifest.digest, manifest.mediaType, client.name)
  deps.cache.setManifest(client.name, summary)
  deps.cache.setTag(client.name, name, tag, summary.digest)
  return summary
}

/**
 * A page of a repository's tags (sorted; only those the caller may read), each with its digest, what it is, the
 * other tags of the page on the same digest, and what the policy lets the caller do with it.
 */
export async function listImageTags (deps: BrowseDeps, input: ListTagsInput): Promise<ImageTagPage & { cursors: string[] }> {
  const name = validateName(input.repository)
  const client = deps.registries.get(input.registry)
  const limit = checkedLimit(input.limit)
  const expected = { kind: 'tags' as const, registry: client.name, scope: name }
  const after = deps.cursors.decode(input.cursor, expected, isTag)
  const policy = await authorizeRepository(deps, input, client, name)
  return await deps.pagesInFlight.run(input.identity.subject, async () => await tagPage(deps, input, client, policy, { expected, limit, after }))
}

async function tagPage (
  deps: BrowseDeps, input: ListTagsInput, client: RegistryClient, policy: Policy | undefined,
  page: { expected: Omit<Cursor, 'after'>, limit: number, after: string | undefined }
): Promise<ImageTagPage & { cursors: string[] }> {
  const { expected, limit, after } = page
  const name = expected.scope
  const mayRead = repositoryDecider(policy, input.identity, 'read', client.name, name)
  const readable = (await client.listTags(name, input.signal, 'pull')).filter(tag => mayRead(tag).allow).sort()
  const rest = after === undefined ? readable : readable.filter(tag => tag > after)
  const tags = rest.slice(0, limit)
  const found = new Map<string, ManifestSummary>()
  await forEachLimited(tags, deps.concurrency, async (tag, signal) => {
    try {
      found.set(tag, await tagManifest(deps, client, name, tag, signal))
    } catch (error) {
      // Deleted since it was listed: there is nothing to show for it.
      if (isGatewayError(error) && error.code === 'NOT_FOUND') return
      throw error
    }
  }, input.signal)
  const shown = tags.filter(tag => found.has(tag))
  const actionsOf = tagActionsOf(policy, input.identity, client.name, name)
  // The page's tags by digest: co-tags are looked up, not searched for across the page for every tag.
  const byDigest = new Map<string, string[]>()
  for (const tag of shown) {
    const digest = (found.get(tag) as ManifestSummary).digest
    byDigest.set(digest, [...byDigest.get(digest) ?? [], tag])
  }
  const items: ImageTag[] = shown.map(tag => {
    const summary = found.get(tag) as ManifestSummary
    const { protected: isProtected, actions } = actionsOf(tag)
    const coTags = (byDigest.get(summary.digest) as string[]).filter(other => other !== tag)
    return { tag, digest: summary.digest, mediaType: summary.mediaType, ...platformsOf(summary), protected: isProtected, coTags, actions }
  })
  const cursorAfter = (tag: string): string => deps.cursors.encode({ ...expected, after: tag })
  let cursors: string[] | undefined
  return {
    registry: client.name,
    name,
    items,
    // Only GraphQL's edges read them (REST answers with nextCursor alone): made on first read, not for every page.
    get cursors () {
      cursors ??= items.map(item => cursorAfter(item.tag))
      return cursors
    },
    ...(rest.length > limit ? { nextCursor: cursorAfter(tags.at(-1) as string) } : {})
  }
}

export interface GetTagInput extends ReadInput {
  /** The repository (the distribution spec's `<name>`), as the caller wrote it: validated here. */
  repository: string
  tag: string
}

/** One tag in detail: its manifest, and for a single-platform image the size of its layers and its config's `created` and labels. */
export async function getImageTag (deps: BrowseDeps, input: GetTagInput): Promise<TagDetail> {
  const name = validateName(input.repository)
  const tag = validateTag(input.tag)
  const client = deps.registries.get(input.registry)
  const policy = deps.policy()
  const decision = decide(policy, input.identity, 'read', { registry: client.name, repository: name, tag })
  if (!decision.allow) await refuse(deps, input, client.name, name, tag, decision)
  // Resolved anew (not from the tag cache): this is what someone looks at before deciding to delete. A GET, not
  // a HEAD: undici closes the connection after every HEAD, and the bytes are hashed to check the digest.
  const manifest = await client.getManifest(name, tag, 'pull', input.signal)
  const digest = manifest.digest
  const summary = deps.cache.manifest(client.name, digest) ?? summarizeManifest(manifest.bytes, digest, manifest.mediaType, client.name)
  deps.cache.setManifest(client.name, summary)
  deps.cache.setTag(client.name, name, tag, digest)
  let config = summary.configDigest === undefined ? undefined : deps.cache.config(client.name, summary.configDigest)
  if (config === undefined && summary.configDigest !== undefined) {
    config = summarizeConfig(await client.getBlob(name, summary.configDigest, MAX_CONFIG_BYTES, input.signal), summary.configDigest, client.name)
    deps.cache.setConfig(client.name, summary.configDigest, config)
  }
  const { protected: isProtected, actions } = tagActionsOf(policy, input.identity, client.name, name)(tag)
  return {
    registry: client.name,
    name,
    tag,
    digest,
    mediaType: summary.mediaType,
    ...platformsOf(summary),
    ...(config?.created === undefined ? {} : { created: config.created }),
    ...(config === undefined ? {} : { labels: Object.entries(config.labels).map(([label, value]) => ({ name: label, value })) }),
    protected: isProtected,
    actions
  }
}
