import { rolesOf } from './decide.js'
import type { Action, Identity, Policy, Rule } from './types.js'

/**
 * Whether any rule of the identity's roles grants `action` somewhere, whatever the image: a caller for whom this
 * is false can be refused at once, before any per-image decision (and before reading anything to decide on).
 */
export function grantsAnywhere (policy: Policy | undefined, identity: Identity, action: Action): boolean {
  if (policy === undefined) return false
  return rolesOf(policy, identity)
    // Bindings can only name roles the policy defines (checked at load).
    .flatMap(role => policy.roles.get(role) as readonly Rule[])
    .some(rule => rule.actions.includes('*') || rule.actions.includes(action))
}
