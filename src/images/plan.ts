/**
 * A deletion plan: what removing one tag will do, decided without changing anything. A dry-run answers it; a
 * real deletion executes it; a caller that confirms later (chat, the web page's preview, bulk cleanups) names it
 * by its id, and the gateway executes only if the plan it makes then is the same one.
 */
import { createHash } from 'node:crypto'
import type { DeleteAction, DeleteMode, DeleteStrategy } from '../audit/shapes.js'
import type { Action } from '../policy/types.js'

export type { DeleteAction, DeleteMode, DeleteStrategy }

/** One policy question the plan needed answered, and the answer. */
export interface PlanDecision {
  action: Action
  tag: string
  allow: boolean
  reason: string
}

/** A plain, serializable value: JSON.parse(JSON.stringify(plan)) is the same plan. */
export interface DeletionPlan {
  /** Derived from what the plan does, so the same plan made twice has the same id and a changed one another. */
  id: string
  registry: string
  repository: string
  tag: string
  digest: string
  mediaType: string
  mode: DeleteMode
  force: boolean
  action: DeleteAction
  strategy: DeleteStrategy
  /** Every tag the plan removes: the tag asked for, and for a digest deletion its co-tags. */
  removedTags: string[]
  /** Other tags on the same digest (kept by an untag, removed by a digest deletion). */
  sharedWith: string[]
  /** Tagged multi-platform images that list this digest: why `auto` untags rather than deleting it. */
  referencedBy: Array<{ digest: string, tags: string[] }>
  decisions: PlanDecision[]
}

export type PlanContent = Omit<DeletionPlan, 'id' | 'decisions'>

/**
 * The id covers what the registry would be asked to do and why; not the policy decisions, which are taken again
 * whenever a plan is executed.
 */
export function planId (content: PlanContent): string {
  const canonical = JSON.stringify([
    content.registry, content.repository, content.tag, content.digest, content.mediaType, content.mode, content.force,
    content.action, content.strategy, [...content.removedTags].sort(), [...content.sharedWith].sort(),
    content.referencedBy.map(index => [index.digest, [...index.tags].sort()]).sort()
  ])
  return `plan_${createHash('sha256').update(canonical).digest('hex').slice(0, 40)}`
}

export function makePlan (content: PlanContent, decisions: PlanDecision[] = []): DeletionPlan {
  return { id: planId(content), ...content, decisions }
}

/** Plan ids as planId makes them: what the REST and GraphQL edges accept before looking any further. */
export const PLAN_ID = /^plan_[0-9a-f]{40}$/
