import Type, { type Static } from 'typebox'
import type { Identity } from '../policy/types.js'

export const MeSchema = Type.Object({
  subject: Type.String(),
  groups: Type.Array(Type.String()),
  roles: Type.Array(Type.String())
})
export type Me = Static<typeof MeSchema>
export type WhoAmI = (identity: Identity) => Me

/** Shows callers who the gateway takes them for, so they can ask for the right access. */
export const whoAmI = (rolesOf: (identity: Identity) => string[]): WhoAmI => (identity) => ({
  subject: identity.subject,
  groups: [...identity.groups],
  roles: rolesOf(identity)
})
