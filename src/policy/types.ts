import type { Glob } from './glob.js'

/**
 * What a caller may ask for. `read` is what a dry-run needs; `force` deletes a digest shared with other tags;
 * `approve` lets a second person run a deletion whose rule requires approval.
 */
export const ACTIONS = ['read', 'delete', 'force', 'restore', 'audit', 'approve', 'admin'] as const
export type Action = typeof ACTIONS[number]
/** A rule may also grant `*`: every action, including ones added later. */
export type RuleAction = Action | '*'

export interface Identity {
  /**
   * `apikey:<name>`, `user:<claim value>`, `slack:<team id>/<user id>`, `mattermost:<team id>/<user id>`, or
   * `service:<name>` for the gateway's own scheduled work (retention.runAs).
   */
  subject: string
  groups: string[]
  kind: 'apikey' | 'jwt' | 'slack' | 'mattermost' | 'service'
}

export interface Resource {
  registry: string
  repository: string
  tag: string
}

/** A denial always carries its catalogue code; an allowance never does. */
export type Decision = {
  allow: true
  code?: undefined
  /** Every rule that allows it requires a second person's approval (a rule's `approval: required`). */
  approval?: 'required'
  reason: string
  /** Every role the identity holds, allowed or not, so a denial shows what the caller had. */
  roles: string[]
} | {
  allow: false
  code: 'FORBIDDEN' | 'PROTECTED_TAG'
  approval?: undefined
  reason: string
  roles: string[]
}

export interface ApiKey {
  readonly name: string
  /** The sha256 of the key as raw bytes, ready for a constant-time comparison. */
  readonly digest: Buffer
  readonly groups: readonly string[]
}

export interface JwtSettings {
  readonly issuer: string
  readonly audience: string | readonly string[]
  readonly jwksUri: URL
  readonly subjectClaim: string
  readonly groupsClaim: string
  readonly leewaySeconds: number
  readonly algorithms: readonly string[]
  /** Longest `exp - iat` accepted: a stolen long-lived token would otherwise stay usable for years. */
  readonly maxLifetimeSeconds: number
}

export interface Rule {
  readonly role: string
  /** Where the rule sits in the file, e.g. `roles.admin[0]`, so a decision can point at it. */
  readonly path: string
  readonly actions: readonly RuleAction[]
  readonly repositories: readonly Glob[]
  /** Absent means every tag. */
  readonly tags?: readonly Glob[]
  /** Absent means every registry. */
  readonly registries?: readonly Glob[]
  /** What the rule allows runs only once someone else holding `approve` approves it. */
  readonly approval?: 'required'
}

export interface ProtectedTags {
  readonly path: string
  /** Absent means every repository. */
  readonly repositories?: readonly Glob[]
  readonly tags: readonly Glob[]
  /** Absent means every registry. */
  readonly registries?: readonly Glob[]
}

/** A loaded, validated policy. Immutable: a reload builds a new one and swaps it in whole. */
export interface Policy {
  /** Where it came from (a file name), for messages. */
  readonly source: string
  readonly apiKeys: readonly ApiKey[]
  readonly jwt?: JwtSettings
  readonly roles: ReadonlyMap<string, readonly Rule[]>
  /** Role names per subject (`apikey:…`, `user:…`, `group:…`, `keygroup:…`, `chatgroup:…`), in the order the bindings give them. */
  readonly rolesBySubject: ReadonlyMap<string, readonly string[]>
  /** Groups the policy's `chatUsers` give a chat subject (`slack:…`, `mattermost:…`); bindings name them `chatgroup:…`. */
  readonly chatGroups: ReadonlyMap<string, readonly string[]>
  readonly protectedTags: readonly ProtectedTags[]
}

/** Where the current policy comes from; a PolicyStore is one. */
export interface PolicySource {
  current (): Policy | undefined
}
