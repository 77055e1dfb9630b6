/** Issue 14: the shared-state contract on SQLite — two stores on one file stand for two processes on it. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import { sharedStateContract } from '../fixtures/shared-state-contract.js'

const dir = mkdtempSync(join(tmpdir(), 'rdg-shared-sqlite-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
let files = 0

sharedStateContract(async (t, options) => {
  const path = join(dir, `shared-${++files}.db`)
  const stores = [openSqliteAuditStore(path, options), openSqliteAuditStore(path, options)] as const
  t.teardown(async () => { await Promise.all(stores.map(store => store.close())) })
  return [stores[0], stores[1]]
})

t.test('SQLite keeps no shared rate-limit windows, and a closed store refuses shared calls', async t => {
  const store = openSqliteAuditStore(':memory:')
  t.equal(store.shared.hit, undefined, 'one replica per file: the rate limit stays in memory')
  await store.close()
  await t.rejects(store.shared.putPlan({ kind: 'k', id: 'i', payload: {}, requester: 'r', expiresMs: 1 }, 1, 0), /closed/)
  await t.rejects(store.shared.peekPlan('k', 'i', 0), /closed/)
  await t.rejects(store.shared.takePlan('k', 'i', 0), /closed/)
  await t.rejects(store.shared.claimPending('o', '', 1, 0), /closed/)
})

t.test('SQLite\'s lock (one replica, the in-process queue) cannot be lost: confirming it always passes', async t => {
  const store = openSqliteAuditStore(':memory:')
  t.teardown(() => store.close())
  const answer = await store.shared.exclusive('repo', async held => {
    await held.confirm()
    return held.signal.aborted
  })
  t.equal(answer, false)
})
