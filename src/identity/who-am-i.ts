import type { Identity } from '../policy/types.js'

export interface Me { subject: string, groups: string[], roles: string[] }
export type WhoAmI = (identity: Identity) => Me

/** Shows callers who the gateway takes them for, so they can ask for the right access. */
export const whoAmI = (rolesOf: (identity: Identity) => string[]): WhoAmI => (identity) => ({
  subject: identity.subject,
  groups: [...identity.groups],
  roles: rolesOf(identity)
})
