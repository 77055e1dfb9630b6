/**
 * Where RBAC is decided: which roles a caller holds (subjects, groups, API key groups) and whether any rule of
 * those roles grants an action on a registry, repository and tag, with the reason in words when it does not.
 * Protected tags are refused here too, before any role is consulted.
 */
import type { Glob } from './glob.js'
import type { Action, Decision, Identity, Policy, Resource, Rule, RuleAction } from './types.js'

/** Actions that remove tags, which protected tags refuse to everyone. */
const DESTRUCTIVE: ReadonlySet<Action> = new Set(['delete', 'force'])

// A service identity has no groups: bindings name it by its subject.
const GROUP_NAMESPACES: Readonly<Record<Identity['kind'], string>> = {
  apikey: 'keygroup', jwt: 'group', slack: 'chatgroup', mattermost: 'chatgroup', service: 'service'
}

/**
 * The subjects bindings can name for an identity: itself and each of its groups. An API key's groups come from
 * the policy's apiKeys, a chat user's from its chatUsers and an identity provider's from a token, so they live in
 * separate namespaces: an IdP group that happens to be called `ci` must not get the roles of the CI key's group.
 */
export function subjectsOf (identity: Identity): string[] {
  const namespace = GROUP_NAMESPACES[identity.kind]
  return [identity.subject, ...identity.groups.map(group => `${namespace}:${group}`)]
}

/** A chat user as the policy in force sees it: Slack and Mattermost send ids only, the policy's chatUsers add groups. */
export function chatIdentity (policy: Policy | undefined, subject: string, kind: 'slack' | 'mattermost'): Identity {
  return { subject, groups: [...(policy?.chatGroups.get(subject) ?? [])], kind }
}

export function rolesOf (policy: Policy | undefined, identity: Identity): string[] {
  if (policy === undefined) return []
  const roles = new Set<string>()
  for (const subject of subjectsOf(identity)) {
    for (const role of policy.rolesBySubject.get(subject) ?? []) roles.add(role)
  }
  return [...roles]
}

/** A dry-run needs `read`, which anyone allowed to delete also has. */
export function grants (actions: readonly RuleAction[], action: Action): boolean {
  return actions.includes('*') || actions.includes(action) || (action === 'read' && actions.includes('delete'))
}

/** An absent list means "all". */
export function covers (globs: readonly Glob[] | undefined, value: string): boolean {
  return globs === undefined || globs.some(glob => glob.matches(value))
}

/** Why an identity has no role, in the words a denial uses. */
export function describeGroups (identity: Identity): string {
  return identity.groups.length === 0 ? 'has no role' : `and its groups ${identity.groups.join(', ')} have no role`
}

/**
 * The tags `protectedTags` names literally (no wildcard) for this repository: few enough to look up one by one
 * right before a DELETE, which is how a protected tag pushed onto the digest meanwhile is still caught.
 */
export function literalProtectedTags (policy: Policy | undefined, registry: string, repository: string): string[] {
  const entries = policy?.protectedTags.filter(entry => covers(entry.registries, registry) && covers(entry.repositories, repository)) ?? []
  return [...new Set(entries.flatMap(entry => entry.tags.map(glob => glob.pattern)).filter(pattern => !/[*?]/.test(pattern)))]
}

/**
 * Default deny: allowed only when a rule of one of the identity's roles covers the action, registry, repository
 * and tag, and no protected-tags entry covers a destructive action. A denial says which of those failed, without
 * showing the rest of the policy.
 */
export function decide (policy: Policy | undefined, identity: Identity, action: Action, resource: Resource): Decision {
  return repositoryDecider(policy, identity, action, resource.registry, resource.repository)(resource.tag)
}

/**
 * `decide` for one action on one repository, tag by tag: what does not depend on the tag (roles, the rules for
 * the action, registry and repository, the protected-tags entries that could apply) is worked out once, so a page
 * of a thousand tags costs a glob match per tag rather than a walk through the whole policy.
 */
export function repositoryDecider (
  policy: Policy | undefined, identity: Identity, action: Action, registry: string, repository: string
): (tag: string) => Decision {
  const deny = (tag: string, code: 'FORBIDDEN' | 'PROTECTED_TAG', why: string, roles: string[]): Decision => ({
    allow: false,
    code,
    reason: `${identity.subject} may not ${action} ${repository}:${tag} in registry ${registry}: ${why}`,
    // A copy per decision: the caller owns its decisions, and one changed must not change its siblings.
    roles: [...roles]
  })
  if (policy === undefined) return tag => deny(tag, 'FORBIDDEN', 'no policy is loaded, so every request is denied', [])
  const roles = rolesOf(policy, identity)
  const guards = DESTRUCTIVE.has(action)
    ? policy.protectedTags.filter(entry => covers(entry.registries, registry) && covers(entry.repositories, repository))
    : []
  const refusal = repositoryRefusal(policy, identity, action, registry, repository, roles)
  return tag => {
    const guard = guards.find(entry => covers(entry.tags, tag))
    if (guard !== undefined) return deny(tag, 'PROTECTED_TAG', `the tag is protected by ${guard.path}; nobody may delete it, admins included`, roles)
    if (typeof refusal === 'string') return deny(tag, 'FORBIDDEN', refusal, roles)
    const covering = refusal.rules.filter(rule => covers(rule.tags, tag))
    // A rule that needs no approval wins: approval is required only when every rule that allows it says so.
    const granting = covering.find(rule => rule.approval === undefined) ?? covering[0]
    if (granting === undefined) return deny(tag, 'FORBIDDEN', `${refusal.noRule} on tag ${tag} of ${repository}`, roles)
    const approval = granting.approval === 'required' ? ' once someone else approves' : ''
    return {
      allow: true,
      ...(granting.approval === undefined ? {} : { approval: granting.approval }),
      reason: `${identity.subject} may ${action} ${repository}:${tag} in registry ${registry}${approval}: role ${granting.role} allows it (${granting.path})`,
      roles: [...roles]
    }
  }
}

/** Why no tag of the repository can be allowed (in a denial's words), or the rules left for the tag to pick from. */
function repositoryRefusal (
  policy: Policy, identity: Identity, action: Action, registry: string, repository: string, roles: string[]
): string | { rules: Rule[], noRule: string } {
  if (roles.length === 0) return `subject ${identity.subject} ${describeGroups(identity)}`
  // Bindings can only name roles the policy defines (checked at load).
  const rules = roles.flatMap(role => policy.roles.get(role) as readonly Rule[])
  const noRule = `no rule of roles [${roles.join(', ')}] allows ${action}`
  const forAction = rules.filter(rule => grants(rule.actions, action))
  if (forAction.length === 0) return noRule
  const forRegistry = forAction.filter(rule => covers(rule.registries, registry))
  if (forRegistry.length === 0) return `${noRule} on registry ${registry}`
  const forRepository = forRegistry.filter(rule => covers(rule.repositories, repository))
  if (forRepository.length === 0) return `${noRule} on repository ${repository}`
  return { rules: forRepository, noRule }
}
