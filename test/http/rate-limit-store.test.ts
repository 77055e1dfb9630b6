/** Issue 14: the rate-limit store over shared windows, as @fastify/rate-limit drives it. */
import t from 'tap'
import type { FastifyRateLimitOptions, FastifyRateLimitStore } from '@fastify/rate-limit'
import { sharedWindowStore } from '../../src/http/rate-limit.js'

const incr = async (store: FastifyRateLimitStore, key: string, windowMs: number): Promise<{ current: number, ttl: number }> =>
  await new Promise((resolve, reject) => { store.incr(key, (error, result) => { if (error === null) resolve(result!); else reject(error) }, windowMs, 10) })

t.test('counts in the shared windows; a route\'s child store is the same budget; a database error counts in memory', async t => {
  let down = false
  const seen: Array<[string, number]> = []
  const Store = sharedWindowStore(async (key, windowMs) => {
    seen.push([key, windowMs])
    if (down) throw new Error('connect ECONNREFUSED')
    return { count: 7, ttlMs: 1234 }
  }, 2)
  const store = new Store({} as FastifyRateLimitOptions)
  t.same(await incr(store, 'alice', 60_000), { current: 7, ttl: 1234 })
  t.same(seen, [['alice', 60_000]])
  t.equal(store.child({} as never), store, 'per-route children share the budget')
  down = true
  t.match(await incr(store, 'alice', 60_000), { current: 1 })
  t.match(await incr(store, 'alice', 60_000), { current: 2, ttl: Number })
  t.match(await incr(store, 'bob', 50), { current: 1 })
  await new Promise(resolve => setTimeout(resolve, 60))
  t.match(await incr(store, 'bob', 50), { current: 1 }, 'a new window once the old one ended')
})
