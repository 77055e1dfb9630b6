/** Issue 13/14: the chat plan store — opaque single-use ids, only the requester, a TTL and a bound, in the audit database. */
import t, { type Test } from 'tap'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import { ChatPlans, type PendingPlan } from '../../src/chat/plans.js'

const plan = (requester: string, tag = 'pr-1'): PendingPlan =>
  ({ kind: 'delete', planId: 'plan_x', registry: 'default', repository: 'team-a/app', tag, mode: 'auto', digest: 'sha256:x', requester, approval: false })

function plans (t: Test, capacity = 10, namespace = 'slack'): { plans: ChatPlans, close: () => Promise<void>, other: (namespace: string) => ChatPlans } {
  const store = openSqliteAuditStore(':memory:')
  t.teardown(() => store.close())
  return {
    plans: new ChatPlans({ ttlMs: 1000, capacity, shared: store.shared, namespace }),
    close: async () => { await store.close() },
    other: namespace => new ChatPlans({ ttlMs: 1000, capacity, shared: store.shared, namespace })
  }
}

t.test('only the requester takes a plan, once; someone else leaves it in place', async t => {
  const { plans: book, other } = plans(t)
  const id = await book.put(plan('slack:T1/UA'), 0)
  t.match(id, /^cp_[A-Za-z0-9_-]{32}$/)
  t.not(await book.put(plan('slack:T1/UA'), 0), id, 'ids are random, not derived from the plan')
  t.same(await book.take(id, 'delete', 'slack:T1/UB', 1), { refused: 'not-yours' })
  t.same(await book.take(id, 'undo', 'slack:T1/UA', 1), { refused: 'unknown' }, 'a delete id is no undo id')
  t.same(await other('mattermost').take(id, 'delete', 'slack:T1/UA', 1), { refused: 'unknown' }, 'another chat\'s ids are not ours')
  t.same(await book.take(id, 'delete', 'slack:T1/UA', 1), { found: plan('slack:T1/UA'), expires: 1000 })
  t.same(await book.take(id, 'delete', 'slack:T1/UA', 1), { refused: 'unknown' }, 'single use')
  t.same(await book.take({ id }, 'delete', 'slack:T1/UA', 1), { refused: 'unknown' }, 'not a string')
  t.same(await book.take('cp_short', 'delete', 'slack:T1/UA', 1), { refused: 'unknown' })
})

t.test('plans expire after the TTL, and the oldest go first when the store is full', async t => {
  const { plans: book } = plans(t, 2)
  const first = await book.put(plan('u', 'a'), 0)
  const second = await book.put(plan('u', 'b'), 500)
  t.same(await book.take(first, 'delete', 'u', 1000), { refused: 'unknown' }, 'expired at its TTL')
  const third = await book.put(plan('u', 'c'), 600)
  const fourth = await book.put(plan('u', 'd'), 700)
  t.same(await book.take(second, 'delete', 'u', 800), { refused: 'unknown' }, 'the oldest was dropped for the newest')
  t.match(await book.take(third, 'delete', 'u', 800), { found: { tag: 'c' } })
  t.match(await book.take(fourth, 'delete', 'u', 800), { found: { tag: 'd' } })
})

t.test('an approval request is anyone\'s to take; a refused approver puts it back, under the same id and expiry', async t => {
  const { plans: book } = plans(t)
  const id = await book.put({ ...plan('slack:T1/UA'), kind: 'approval', groups: [] }, 0)
  const taken = await book.take(id, 'approval', 'slack:T1/UB', 10)
  t.match(taken, { found: { kind: 'approval', requester: 'slack:T1/UA' }, expires: 1000 })
  if (!('found' in taken)) return
  t.same(await book.take(id, 'approval', 'slack:T1/UC', 10), { refused: 'unknown' }, 'taken: nobody else gets it meanwhile')
  await book.putBack(id, taken.found, taken.expires)
  const later = await book.put(plan('u'), 500)
  t.match(await book.take(id, 'approval', 'slack:T1/UC', 20), { found: { requester: 'slack:T1/UA' } })
  await book.putBack(id, taken.found, taken.expires)
  t.same(await book.take(id, 'approval', 'slack:T1/UC', 1000), { refused: 'unknown' }, 'still expires on time')
  t.match(await book.take(later, 'delete', 'u', 1000), { found: { tag: 'pr-1' } })
})

t.test('a store that cannot answer: AUDIT_UNAVAILABLE, never a half-made button', async t => {
  const { plans: book, close } = plans(t)
  const id = await book.put(plan('u'), 0)
  await close()
  await t.rejects(book.put(plan('u'), 0), { code: 'AUDIT_UNAVAILABLE' })
  await t.rejects(book.take(id, 'delete', 'u', 1), { code: 'AUDIT_UNAVAILABLE' })
})
