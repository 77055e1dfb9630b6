import { covers, describeGroups, grants, rolesOf } from './decide.js'
import type { Decision, Identity, Policy, Rule } from './types.js'

/**
 * Whether some rule of the identity's roles grants `read` on a repository for at least one tag: what listing a
 * repository (its tags, or its name in the catalog) needs. Each tag shown is still decided on its own. A denial
 * says which of role, action, registry or repository failed, as `decide` does.
 */
export function decideRepositoryRead (policy: Policy | undefined, identity: Identity, registry: string, repository: string): Decision {
  const what = repository === '' ? `the catalog of registry ${registry}` : `${repository} in registry ${registry}`
  const deny = (why: string, roles: string[]): Decision =>
    ({ allow: false, code: 'FORBIDDEN', reason: `${identity.subject} may not read ${what}: ${why}`, roles })
  if (policy === undefined) return deny('no policy is loaded, so every request is denied', [])
  const roles = rolesOf(policy, identity)
  if (roles.length === 0) return deny(`subject ${identity.subject} ${describeGroups(identity)}`, roles)
  // Bindings can only name roles the policy defines (checked at load).
  const rules = roles.flatMap(role => policy.roles.get(role) as readonly Rule[]).filter(rule => grants(rule.actions, 'read'))
  const noRule = `no rule of roles [${roles.join(', ')}] allows read`
  if (rules.length === 0) return deny(noRule, roles)
  const forRegistry = rules.filter(rule => covers(rule.registries, registry))
  if (forRegistry.length === 0) return deny(`${noRule} on registry ${registry}`, roles)
  // The catalog itself is readable by anyone who may read some repository of the registry.
  const granting = repository === '' ? forRegistry[0] : forRegistry.find(rule => covers(rule.repositories, repository))
  if (granting === undefined) return deny(`${noRule} on repository ${repository}`, roles)
  return { allow: true, reason: `${identity.subject} may read ${what}: role ${granting.role} allows it (${granting.path})`, roles }
}
