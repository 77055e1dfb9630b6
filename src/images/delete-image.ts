import { GatewayError } from '../errors.js'
import type { Action, Decision, Identity, Resource } from '../policy/types.js'
import type { RegistryDirectory } from '../registry/directory.js'
import { parseImageRef } from '../registry/reference.js'
import { findCoTags } from './co-tags.js'

export type Authorize = (identity: Identity, action: Action, resource: Resource) => Decision

export interface DeleteImageDeps {
  registries: RegistryDirectory
  authorize: Authorize
  coTagConcurrency: number
}

export interface DeleteImageInput {
  identity: Identity
  name: string
  tag: string
  registry?: string
  dryRun?: boolean
  force?: boolean
}

export interface DeleteImageResult {
  registry: string
  name: string
  tag: string
  digest: string
  mediaType: string
  dryRun: boolean
  deleted: boolean
  /** Every tag that the deletion removes (or, in a dry-run, would remove): the tag asked for and its co-tags. */
  removedTags: string[]
  /** Whether authorization lets the real call through (always true when something was deleted). */
  allowed: boolean
  /** Why a dry-run's real call would be refused. */
  reason?: string
}

function denial (identity: Identity, action: Action, resource: Resource, decision: Decision): GatewayError | undefined {
  if (decision.allow) return undefined
  return new GatewayError(decision.code, decision.reason, {
    extras: { subject: identity.subject, action, image: `${resource.repository}:${resource.tag}`, registry: resource.registry }
  })
}

/**
 * Deletes one tag's manifest the safe way: validate, authorize, resolve the digest DELETE accepts, refuse when
 * other tags share it (unless forced and allowed for each of them), then delete exactly that digest.
 * A dry-run needs only `read`; it takes every step but the DELETE and reports, in `allowed` and `reason`,
 * whether the caller's real call would pass authorization.
 */
export async function deleteImage (deps: DeleteImageDeps, input: DeleteImageInput): Promise<DeleteImageResult> {
  const { name, tag } = parseImageRef(input.name, input.tag)
  const client = deps.registries.get(input.registry)
  const dryRun = input.dryRun === true
  const resource = { registry: client.name, repository: name, tag }
  const check = (action: Action, target: Resource): GatewayError | undefined =>
    denial(input.identity, action, target, deps.authorize(input.identity, action, target))
  const entry = check(dryRun ? 'read' : 'delete', resource)
  if (entry !== undefined) throw entry

  const { digest, mediaType } = await client.resolve(name, tag)
  // Listed as late as possible, right before the DELETE, so a tag added meanwhile is still seen.
  const coTags = await findCoTags(client, name, digest, tag, deps.coTagConcurrency)
  if (coTags.length > 0 && input.force !== true) {
    throw new GatewayError('SHARED_DIGEST',
      `${name}:${tag} points at ${digest}, which is also tagged ${coTags.join(', ')}; deleting it removes all of them. Delete with force=true to remove every one of these tags, or re-tag first.`,
      { extras: { digest, sharedWith: coTags } })
  }
  // Deleting pr-1 must never take latest with it: every tag that goes needs its own permission.
  const refusal = (dryRun ? check('delete', resource) : undefined) ??
    (coTags.length > 0 ? check('force', resource) : undefined) ??
    coTags.map(coTag => check('delete', { ...resource, tag: coTag })).find(found => found !== undefined)
  if (refusal !== undefined && !dryRun) throw refusal
  const removedTags = [tag, ...coTags]
  if (!dryRun) await client.deleteManifest(name, digest)
  return {
    registry: client.name, name, tag, digest, mediaType, dryRun, deleted: !dryRun, removedTags,
    allowed: refusal === undefined,
    ...(refusal === undefined ? {} : { reason: `${refusal.code}: ${refusal.detail}` })
  }
}
