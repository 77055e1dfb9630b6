/**
 * Planning a cleanup: list the tags of each repository, read each tag's manifest (and each image config once per
 * digest, through the browse cache), judge the tags by the rules, then make for every tag to remove the deletion
 * plan the single-tag core would make in `auto` mode at that point of the cleanup: untag while other tags share
 * the digest or a tagged multi-platform image lists it, delete the digest with its last tag. Nothing is changed.
 */
import { randomBytes } from 'node:crypto'
import { GatewayError, invalidField, isGatewayError } from '../errors.js'
import { decideRepositoryRead, repositoryDecider } from '../policy/index.js'
import { compileGlob, GlobError, type Glob } from '../policy/glob.js'
import type { Identity, Policy } from '../policy/types.js'
import type { RegistryClient } from '../registry/client.js'
import type { RegistryDirectory } from '../registry/directory.js'
import { isIndex } from '../registry/media-types.js'
import { validateName } from '../registry/reference.js'
import type { UntagStrategy } from '../registry/untag.js'
import type { BrowseCache } from '../images/browse-cache.js'
import { forEachLimited } from '../images/co-tags.js'
import type { RequestContext } from '../images/attempt.js'
import { summarizeConfig, summarizeManifest, type ManifestSummary } from '../images/manifest-summary.js'
import { makePlan, type DeletionPlan, type PlanContent } from '../images/plan.js'
import { compileRules, judgeReferrer, judgeTags, referrerOf, type CompiledRules, type SubjectFate, type Verdict } from './rules.js'
import type { CleanupDeletionPlan, CleanupEntry, CleanupPlan, CleanupRules, CleanupTotals } from './shapes.js'

export interface CleanupServices {
  registries: RegistryDirectory
  /** The policy in force now; one cleanup is judged by the one it read first. */
  policy: () => Policy | undefined
  cache: BrowseCache
  /** Manifests and configs fetched at once (16 by default). */
  concurrency: number
  /** Names asked per catalog request when a repository pattern has wildcards. */
  catalogPageSize: number
  /** Tags one cleanup may read across its repositories: a bigger one is refused before any manifest is read. */
  maxTags: number
  registrySettings: (registry: string) => { untagStrategy: UntagStrategy }
  /** Repositories one cleanup may name or match (MAX_CLEANUP_REPOSITORIES unless given). */
  maxRepositories?: number
  now: () => number
}

export interface PlanCleanupInput {
  identity: Identity
  context: RequestContext
  registry?: string
  repositories: readonly string[]
  rules: CleanupRules
  /** The retention policy the rules come from, named in the plan. */
  policyName?: string
  /** Where the rules sit, for the field of a refusal (`rules`, or `retention.policies[i].rules`). */
  rulesField?: string
  signal?: AbortSignal
}

/** Repositories one cleanup may name or match; more is refused, so a pattern like ** cannot sweep a registry. */
export const MAX_CLEANUP_REPOSITORIES = 100
/** Catalog requests one cleanup may make to match its patterns. */
const MAX_CATALOG_REQUESTS = 1000
/** Image configs are JSON documents of a few KB; distribution caps manifests at 4 MiB, and configs get the same. */
const MAX_CONFIG_BYTES = 4 * 1024 * 1024

export const CLEANUP_ID = /^cleanup_[0-9a-f]{32}$/

/** What one tag is, as read for this cleanup. */
interface TagRecord {
  tag: string
  digest: string
  mediaType: string
  summary: ManifestSummary
  created?: number
}

interface Judged { record: TagRecord, verdict: Verdict, refusal?: string }

function compilePatterns (repositories: readonly string[]): Array<{ literal: string } | { glob: Glob }> {
  return repositories.map((pattern, index) => {
    const field = `repositories[${index}]`
    if (!/[*?]/.test(pattern)) {
      try {
        return { literal: validateName(pattern) }
      } catch (error) {
        throw invalidField(field, 'a repository name or glob', `${field}: ${(error as GatewayError).detail}`)
      }
    }
    try {
      return { glob: compileGlob(pattern, 'repository') }
    } catch (error) {
      throw invalidField(field, (error as GlobError).message, `${field} ${JSON.stringify(pattern)}: ${(error as GlobError).message}.`)
    }
  })
}

/** The repositories the patterns name, the caller may read: a named one it may not is refused, a matched one left out. */
async function repositoriesOf (
  client: RegistryClient, input: PlanCleanupInput, policy: Policy | undefined, services: Pick<CleanupServices, 'catalogPageSize' | 'maxRepositories'>
): Promise<string[]> {
  const limit = services.maxRepositories ?? MAX_CLEANUP_REPOSITORIES
  const patterns = compilePatterns(input.repositories)
  const names = new Set<string>()
  for (const pattern of patterns) {
    if (!('literal' in pattern)) continue
    const decision = decideRepositoryRead(policy, input.identity, client.name, pattern.literal)
    if (!decision.allow) {
      throw new GatewayError('FORBIDDEN', decision.reason, { extras: { subject: input.identity.subject, action: 'read', repository: pattern.literal } })
    }
    names.add(pattern.literal)
  }
  const globs = patterns.flatMap(pattern => 'glob' in pattern ? [pattern.glob] : [])
  if (globs.length > 0) {
    let last: string | undefined
    for (let request = 0; request < MAX_CATALOG_REQUESTS; request++) {
      const page = await client.catalogPage(last, services.catalogPageSize, input.signal)
      for (const name of page.repositories) {
        if (globs.some(glob => glob.matches(name)) && decideRepositoryRead(policy, input.identity, client.name, name).allow) names.add(name)
      }
      last = page.repositories.at(-1)
      if (!page.more || last === undefined) break
    }
  }
  if (names.size > limit) {
    throw invalidField('repositories', `at most ${limit} repositories`,
      `repositories name or match ${names.size} repositories the caller may read; one cleanup takes at most ${limit}. Narrow the patterns.`)
  }
  return [...names].sort()
}

/** Reads what the rules need, once per digest: the manifest's summary, and the creation time of each image. */
class Reader {
  /** Creation times by config digest: tags on different manifests often share one config (builds of one commit). */
  private readonly configs = new Map<string, Promise<number | undefined>>()

  constructor (
    private readonly services: CleanupServices,
    private readonly client: RegistryClient,
    private readonly repository: string,
    private readonly signal?: AbortSignal
  ) {}

  private async summary (reference: string, signal: AbortSignal): Promise<ManifestSummary & { mediaType: string }> {
    const { cache } = this.services
    const registry = this.client.name
    const known = reference.startsWith('sha256:') ? cache.manifest(registry, reference) : undefined
    if (known !== undefined) return known
    const manifest = await this.client.getManifest(this.repository, reference, 'pull', signal)
    const summary = cache.manifest(registry, manifest.digest) ?? summarizeManifest(manifest.bytes, manifest.digest, manifest.mediaType, registry)
    cache.setManifest(registry, summary)
    return summary
  }

  /**
   * Every tag's manifest, 16 at a time, and for the tags `dated` asks about, the creation time of the image, read
   * as soon as its manifest is (configs once per digest), so configs and manifests share the same 16 slots. A
   * tag deleted since the listing is left out.
   */
  async tags (tags: readonly string[], dated: (tag: string) => boolean): Promise<Map<string, TagRecord>> {
    const records = new Map<string, TagRecord>()
    const byDigest = new Map<string, Promise<number | undefined>>()
    await forEachLimited(tags, this.services.concurrency, async (tag, signal) => {
      let summary: ManifestSummary
      try {
        summary = await this.summary(tag, signal)
      } catch (error) {
        if (isGatewayError(error) && error.code === 'NOT_FOUND') return
        throw error
      }
      const record: TagRecord = { tag, digest: summary.digest, mediaType: summary.mediaType, summary }
      records.set(tag, record)
      if (!dated(tag)) return
      let pending = byDigest.get(record.digest)
      if (pending === undefined) {
        pending = this.createdOf(summary, signal)
        byDigest.set(record.digest, pending)
      }
      const created = await pending
      if (created !== undefined) record.created = created
    }, this.signal)
    return records
  }

  private async createdOf (summary: ManifestSummary, signal: AbortSignal): Promise<number | undefined> {
    if (summary.created !== undefined) return parseTime(summary.created)
    const first = summary.platforms?.[0]?.digest
    if (first !== undefined) return await this.createdOf(await this.summary(first, signal), signal)
    const configDigest = summary.configDigest
    if (configDigest === undefined) return undefined
    let pending = this.configs.get(configDigest)
    if (pending === undefined) {
      pending = this.configCreated(configDigest, signal)
      this.configs.set(configDigest, pending)
    }
    return await pending
  }

  private async configCreated (configDigest: string, signal: AbortSignal): Promise<number | undefined> {
    const { cache } = this.services
    let config = cache.config(this.client.name, configDigest)
    if (config === undefined) {
      config = summarizeConfig(await this.client.getBlob(this.repository, configDigest, MAX_CONFIG_BYTES, signal), configDigest, this.client.name)
      cache.setConfig(this.client.name, configDigest, config)
    }
    return config.created === undefined ? undefined : parseTime(config.created)
  }
}

function parseTime (value: string): number | undefined {
  const time = Date.parse(value)
  return Number.isNaN(time) ? undefined : time
}

/**
 * The repository as the removals leave it, one at a time: which tags each digest still has and which tagged
 * indexes list it. Each removal is planned against the state the ones before it leave, as executing them in
 * order will find it.
 */
class Simulation {
  private readonly tagsOf = new Map<string, Set<string>>()
  /** The indexes listing each child, built once: a repository of many indexes would make a scan per removal quadratic. */
  private readonly parentsOf = new Map<string, Set<string>>()
  readonly deleted = new Set<string>()

  constructor (records: Iterable<TagRecord>) {
    for (const record of records) {
      this.tagsOf.set(record.digest, (this.tagsOf.get(record.digest) ?? new Set()).add(record.tag))
      if (!isIndex(record.mediaType)) continue
      // The summarizer lists every index's children.
      for (const child of record.summary.children as string[]) this.parentsOf.set(child, (this.parentsOf.get(child) ?? new Set()).add(record.digest))
    }
  }

  /** Whether the digest is in the repository before the cleanup: tagged, or listed by an index that is. */
  present (digest: string): boolean {
    return this.tagsOf.has(digest) || this.parentsOf.has(digest)
  }

  /** The core's `auto` plan for removing `record.tag` now, then applies it. */
  remove (record: TagRecord, base: Pick<PlanContent, 'registry' | 'repository'>, strategy: UntagStrategy): DeletionPlan {
    const { tag, digest, mediaType } = record
    const onDigest = this.tagsOf.get(digest) as Set<string>
    const sharedWith = [...onDigest].filter(other => other !== tag).sort()
    const referencedBy = isIndex(mediaType)
      ? []
      : [...this.parentsOf.get(digest) ?? []].filter(index => index !== digest && (this.tagsOf.get(index) as Set<string>).size > 0)
          .map(index => ({ digest: index, tags: [...this.tagsOf.get(index) as Set<string>].sort() }))
    const common = { ...base, tag, digest, mediaType, mode: 'auto' as const, force: false, sharedWith, referencedBy }
    onDigest.delete(tag)
    if (sharedWith.length > 0 || referencedBy.length > 0) return makePlan({ ...common, action: 'untagged', strategy, removedTags: [tag] })
    this.deleted.add(digest)
    return makePlan({ ...common, action: 'deleted-digest', strategy: 'digest', removedTags: [tag] })
  }
}

function entryOf (repository: string, judged: Judged): CleanupEntry {
  const { record, verdict, refusal } = judged
  return {
    repository,
    tag: record.tag,
    digest: record.digest,
    mediaType: record.mediaType,
    ...(record.created === undefined ? {} : { created: new Date(record.created).toISOString() }),
    outcome: refusal !== undefined ? 'refuse' : verdict.remove ? 'remove' : 'keep',
    rule: verdict.rule,
    reason: refusal ?? verdict.reason
  }
}

/** The plan as the caller may see it: tags it may not read are counted, never named. */
function visiblePlan (plan: DeletionPlan, readable: (tag: string) => boolean): CleanupDeletionPlan {
  let hidden = 0
  const shown = (tags: readonly string[]): string[] => tags.filter(tag => readable(tag) || (hidden++, false))
  const visible = {
    ...plan,
    removedTags: shown(plan.removedTags),
    sharedWith: shown(plan.sharedWith),
    // An index whose every tag is hidden is not named either: its digest would say what the caller may not read.
    referencedBy: plan.referencedBy.map(index => ({ digest: index.digest, tags: shown(index.tags) })).filter(index => index.tags.length > 0),
    decisions: plan.decisions.map(decision => ({ ...decision }))
  }
  return hidden === 0 ? visible : { ...visible, hiddenTags: hidden }
}

interface RepositoryPlan { entries: CleanupEntry[], hiddenTags: number }

async function planRepository (
  services: CleanupServices, input: PlanCleanupInput, client: RegistryClient, policy: Policy | undefined,
  repository: string, rules: CompiledRules, budget: { left: number }
): Promise<RepositoryPlan> {
  const { identity } = input
  // Worked out once per repository and action, then a glob match per tag: a repository may hold thousands of tags.
  const mayRead = repositoryDecider(policy, identity, 'read', client.name, repository)
  const mayDelete = repositoryDecider(policy, identity, 'delete', client.name, repository)
  const listed = await client.listTags(repository, input.signal)
  budget.left -= listed.length
  if (budget.left < 0) {
    // The request asks for too much, the registry did nothing wrong: a 400 naming the field, not a 502.
    throw invalidField('repositories', `at most ${services.maxTags} tags per cleanup (cleanups.maxTags)`,
      `the repositories of this cleanup have more than ${services.maxTags} tags, the most one cleanup may read (cleanups.maxTags); nothing was read further. Narrow the repositories or raise cleanups.maxTags.`)
  }
  const reader = new Reader(services, client, repository, input.signal)
  const readable = (tag: string): boolean => mayRead(tag).allow
  // Only the tags the rules judge need a time: the ones the caller may read, signatures aside.
  const records = await reader.tags(listed, tag => referrerOf(tag) === undefined && readable(tag))
  const visible = [...records.values()].filter(record => readable(record.tag))
  const ordinary = visible.filter(record => referrerOf(record.tag) === undefined)

  const protectedBy = (tag: string): string | undefined => {
    const decision = mayDelete(tag)
    return decision.code === 'PROTECTED_TAG' ? decision.reason : undefined
  }
  const now = services.now()
  const verdicts = judgeTags(ordinary, rules, { now, protectedBy })
  const judged = new Map<string, Judged>(ordinary.map(record => [record.tag, { record, verdict: verdicts.get(record.tag) as Verdict }]))

  const simulation = new Simulation(records.values())
  const strategy = services.registrySettings(client.name).untagStrategy
  const plans = new Map<string, CleanupDeletionPlan>()
  const order: string[] = []
  const authorized = (entry: Judged): boolean => {
    const decision = mayDelete(entry.record.tag)
    if (!decision.allow) entry.refusal = decision.reason
    else if (decision.approval === 'required') entry.refusal = `${decision.reason}; a cleanup does not ask for approvals, so it leaves this tag`
    return entry.refusal === undefined
  }
  const run = (entries: readonly Judged[]): void => {
    // Indexes first: once a multi-platform tag is gone, its platforms' own tags no longer need to stay behind.
    const removals = entries.filter(entry => entry.verdict.remove && authorized(entry)).sort((a, b) => removalOrder(a.record, b.record))
    for (const { record } of removals) {
      const plan = simulation.remove(record, { registry: client.name, repository }, strategy)
      plan.decisions.push({ action: 'delete', tag: record.tag, allow: true, reason: mayDelete(record.tag).reason })
      plans.set(record.tag, visiblePlan(plan, readable))
      order.push(record.tag)
    }
  }
  run([...judged.values()])

  const referrers: Judged[] = []
  for (const record of visible) {
    const referrer = referrerOf(record.tag)
    if (referrer === undefined) continue
    const fate: SubjectFate = simulation.deleted.has(referrer.subject)
      ? 'deleted'
      : simulation.present(referrer.subject) || !(await subjectGone(client, repository, referrer.subject)) ? 'kept' : 'absent'
    const entry = { record, verdict: judgeReferrer(record.tag, fate, rules, { protectedBy }) }
    referrers.push(entry)
    judged.set(record.tag, entry)
  }
  run(referrers)

  const sequence = new Map(order.map((tag, index) => [tag, index + 1]))
  const entries = [...judged.values()].sort((a, b) => compare(a.record.tag, b.record.tag)).map(entry => {
    const plan = plans.get(entry.record.tag)
    const entryPlan = plan === undefined ? {} : { sequence: sequence.get(entry.record.tag) as number, plan }
    return { ...entryOf(repository, entry), ...entryPlan }
  })
  return { entries, hiddenTags: records.size - visible.length }
}

function compare (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function removalOrder (a: TagRecord, b: TagRecord): number {
  return Number(isIndex(b.mediaType)) - Number(isIndex(a.mediaType)) || compare(a.digest, b.digest) || compare(a.tag, b.tag)
}

/** Whether a signature's subject is gone from the repository: asked by digest, only for a subject no tag shows. */
async function subjectGone (client: RegistryClient, repository: string, subject: string): Promise<boolean> {
  try {
    await client.resolve(repository, subject, 'pull')
    return false
  } catch (error) {
    if (isGatewayError(error) && error.code === 'NOT_FOUND') return true
    throw error
  }
}

export function totalsOf (repositories: number, entries: readonly CleanupEntry[], hiddenTags: number): CleanupTotals {
  const count = (test: (entry: CleanupEntry) => boolean): number => entries.filter(test).length
  return {
    repositories,
    tags: entries.length,
    remove: count(entry => entry.outcome === 'remove'),
    keep: count(entry => entry.outcome === 'keep'),
    refuse: count(entry => entry.outcome === 'refuse'),
    deletedDigests: count(entry => entry.plan?.action === 'deleted-digest'),
    untagged: count(entry => entry.plan?.action === 'untagged'),
    hiddenTags
  }
}

/**
 * Plans a cleanup without changing anything: per tag the caller may read, removed (with the deletion plan that
 * would run), kept (with the rule), or refused (with the policy's words); plus totals. Removals carry a sequence:
 * each plan holds once the removals before it have run, which is the order an execution must keep.
 */
export async function planCleanup (services: CleanupServices, input: PlanCleanupInput): Promise<CleanupPlan> {
  const rules = compileRules(input.rules, input.rulesField ?? 'rules')
  const client = services.registries.get(input.registry)
  const policy = services.policy()
  const repositories = await repositoriesOf(client, input, policy, services)
  const budget = { left: services.maxTags }
  const entries: CleanupEntry[] = []
  let hiddenTags = 0
  for (const repository of repositories) {
    const planned = await planRepository(services, input, client, policy, repository, rules, budget)
    entries.push(...planned.entries)
    hiddenTags += planned.hiddenTags
  }
  return {
    id: `cleanup_${randomBytes(16).toString('hex')}`,
    state: 'planned',
    registry: client.name,
    repositories: [...input.repositories],
    ...(input.policyName === undefined ? {} : { policy: input.policyName }),
    rules: input.rules,
    createdBy: input.identity.subject,
    createdAt: new Date(services.now()).toISOString(),
    entries,
    totals: totalsOf(repositories.length, entries, hiddenTags)
  }
}
