import t from 'tap'
import { isGatewayError, type GatewayError } from '../../src/errors.js'
import { listDeliveries, type ListDeliveriesDeps } from '../../src/notifications/deliveries.js'
import { invalidField } from '../../src/errors.js'

const identity = { subject: 'apikey:admin', groups: [], kind: 'apikey' as const }
const allow = (): ListDeliveriesDeps['authorizer'] => () => () => ({ allow: true, reason: 'admin', roles: ['admin'] })

async function failure (promise: Promise<unknown>): Promise<GatewayError> {
  const error = await promise.then(() => undefined, (error: unknown) => error)
  if (!isGatewayError(error)) throw new Error(`expected a GatewayError, got ${String(error)}`)
  return error
}

t.test('a store that cannot be read is AUDIT_UNAVAILABLE; its own catalogue errors pass through', async t => {
  const broken: ListDeliveriesDeps = { store: { listDeliveries: async () => { throw new Error('connect ECONNREFUSED') } }, authorizer: allow(), mayAuditAnything: () => true }
  const error = await failure(listDeliveries(broken, { identity, limit: 5 }))
  t.equal(error.code, 'AUDIT_UNAVAILABLE')
  t.notMatch(error.detail, /ECONNREFUSED/, 'the cause stays out of the answer')
  const refusing: ListDeliveriesDeps = { ...broken, store: { listDeliveries: async () => { throw invalidField('cursor', 'opaque', 'bad cursor') } } }
  t.equal((await failure(listDeliveries(refusing, { identity, limit: 5, cursor: 'x' }))).code, 'INVALID_REQUEST')
})

t.test('the status filter and cursor reach the store as given', async t => {
  const calls: unknown[] = []
  const deps: ListDeliveriesDeps = {
    store: { listDeliveries: async (filter, page) => { calls.push([filter, page]); return { items: [] } } },
    authorizer: allow(),
    mayAuditAnything: () => true
  }
  await listDeliveries(deps, { identity, limit: 5, status: 'failed', cursor: 'abc' })
  await listDeliveries(deps, { identity, limit: 7 })
  t.same(calls, [[{ status: 'failed' }, { limit: 5, cursor: 'abc' }], [{}, { limit: 7 }]])
})
