import type { DeliveryPage, DeliveryStatus, OutboxStore } from '../audit/outbox.js'
import { GatewayError, isGatewayError } from '../errors.js'
import type { Identity } from '../policy/types.js'
import type { Authorize } from '../images/attempt.js'

export interface ListDeliveriesDeps {
  store: Pick<OutboxStore, 'listDeliveries'>
  authorizer: () => Authorize
  mayAuditAnything: (identity: Identity) => boolean
}

export interface ListDeliveriesInput {
  identity: Identity
  status?: DeliveryStatus
  limit: number
  cursor?: string
}

/**
 * Webhook deliveries, newest first, for the people who may read the audit trail: the `audit` action decides, as
 * for GET /audit, and a delivery shows only if its image is one the caller may audit.
 */
export async function listDeliveries (deps: ListDeliveriesDeps, input: ListDeliveriesInput): Promise<DeliveryPage> {
  if (!deps.mayAuditAnything(input.identity)) {
    throw new GatewayError('FORBIDDEN',
      `${input.identity.subject} may not list webhook deliveries: that needs the audit action, and no rule of its roles grants it.`,
      { extras: { subject: input.identity.subject, action: 'audit' } })
  }
  const authorize = deps.authorizer()
  try {
    return await deps.store.listDeliveries(
      input.status === undefined ? {} : { status: input.status },
      { limit: input.limit, ...(input.cursor === undefined ? {} : { cursor: input.cursor }) },
      image => authorize(input.identity, 'audit', { registry: image.registry, repository: image.name, tag: image.tag }).allow
    )
  } catch (error) {
    if (isGatewayError(error)) throw error
    throw new GatewayError('AUDIT_UNAVAILABLE', 'the audit store holding the webhook outbox cannot be read now; try again later.', { cause: error })
  }
}
