/** Issue 13: the chat plan store — opaque single-use ids, only the requester, a TTL and a bound. */
import t from 'tap'
import { ChatPlans, type PendingPlan } from '../../src/chat/plans.js'

const plan = (requester: string, tag = 'pr-1'): PendingPlan =>
  ({ kind: 'delete', planId: 'plan_x', registry: 'default', repository: 'team-a/app', tag, mode: 'auto', digest: 'sha256:x', requester, approval: false })

t.test('only the requester takes a plan, once; someone else leaves it in place', async t => {
  const plans = new ChatPlans({ ttlMs: 1000, capacity: 10 })
  const id = plans.put(plan('slack:T1/UA'), 0)
  t.match(id, /^cp_[A-Za-z0-9_-]{32}$/)
  t.not(plans.put(plan('slack:T1/UA'), 0), id, 'ids are random, not derived from the plan')
  t.same(plans.take(id, 'delete', 'slack:T1/UB', 1), { refused: 'not-yours' })
  t.same(plans.take(id, 'undo', 'slack:T1/UA', 1), { refused: 'unknown' }, 'a delete id is no undo id')
  t.same(plans.take(id, 'delete', 'slack:T1/UA', 1), { found: plan('slack:T1/UA'), expires: 1000 })
  t.same(plans.take(id, 'delete', 'slack:T1/UA', 1), { refused: 'unknown' }, 'single use')
  t.same(plans.take({ id }, 'delete', 'slack:T1/UA', 1), { refused: 'unknown' }, 'not a string')
  t.same(plans.take('cp_short', 'delete', 'slack:T1/UA', 1), { refused: 'unknown' })
})

t.test('plans expire after the TTL, and the oldest go first when the store is full', async t => {
  const plans = new ChatPlans({ ttlMs: 1000, capacity: 2 })
  const first = plans.put(plan('u', 'a'), 0)
  const second = plans.put(plan('u', 'b'), 500)
  t.same(plans.take(first, 'delete', 'u', 1000), { refused: 'unknown' }, 'expired at its TTL')
  t.equal(plans.size, 1)
  const third = plans.put(plan('u', 'c'), 600)
  const fourth = plans.put(plan('u', 'd'), 700)
  t.equal(plans.size, 2, 'bounded')
  t.same(plans.take(second, 'delete', 'u', 800), { refused: 'unknown' }, 'the oldest was dropped for the newest')
  t.match(plans.take(third, 'delete', 'u', 800), { found: { tag: 'c' } })
  t.match(plans.take(fourth, 'delete', 'u', 800), { found: { tag: 'd' } })
})

t.test('an approval request is anyone\'s to take; a refused approver puts it back, under the same id and expiry', async t => {
  const plans = new ChatPlans({ ttlMs: 1000, capacity: 10 })
  const id = plans.put({ ...plan('slack:T1/UA'), kind: 'approval', groups: [] }, 0)
  const taken = plans.take(id, 'approval', 'slack:T1/UB', 10)
  t.match(taken, { found: { kind: 'approval', requester: 'slack:T1/UA' }, expires: 1000 })
  if (!('found' in taken)) return
  t.same(plans.take(id, 'approval', 'slack:T1/UC', 10), { refused: 'unknown' }, 'taken: nobody else gets it meanwhile')
  plans.putBack(id, taken.found, taken.expires)
  const later = plans.put(plan('u'), 500)
  t.match(plans.take(id, 'approval', 'slack:T1/UC', 20), { found: { requester: 'slack:T1/UA' } })
  plans.putBack(id, taken.found, taken.expires)
  t.same(plans.take(id, 'approval', 'slack:T1/UC', 1000), { refused: 'unknown' }, 'still expires on time, out of order')
  t.match(plans.take(later, 'delete', 'u', 1000), { found: { tag: 'pr-1' } })
})
