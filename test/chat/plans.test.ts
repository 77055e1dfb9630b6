/** Issue 13: the chat plan store — opaque single-use ids, only the requester, a TTL and a bound. */
import t from 'tap'
import { ChatPlans, type PendingPlan } from '../../src/chat/plans.js'

const plan = (requester: string, tag = 'pr-1'): PendingPlan =>
  ({ kind: 'delete', planId: 'plan_x', registry: 'default', repository: 'team-a/app', tag, mode: 'auto', digest: 'sha256:x', requester })

t.test('only the requester takes a plan, once; someone else leaves it in place', async t => {
  const plans = new ChatPlans({ ttlMs: 1000, capacity: 10 })
  const id = plans.put(plan('slack:T1/UA'), 0)
  t.match(id, /^cp_[A-Za-z0-9_-]{32}$/)
  t.not(plans.put(plan('slack:T1/UA'), 0), id, 'ids are random, not derived from the plan')
  t.same(plans.take(id, 'delete', 'slack:T1/UB', 1), { refused: 'not-yours' })
  t.same(plans.take(id, 'undo', 'slack:T1/UA', 1), { refused: 'unknown' }, 'a delete id is no undo id')
  t.same(plans.take(id, 'delete', 'slack:T1/UA', 1), { found: plan('slack:T1/UA') })
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
