import { existsSync } from 'node:fs'
import { createConnection } from 'node:net'
import pg from 'pg'
import t from 'tap'
import { startPostgres } from '../../testing/postgres-process.js'

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function connects (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

t.test('a throwaway cluster: own database, loopback only, stopped by PID and removed', async t => {
  const server = await startPostgres()
  let stopped = false
  t.teardown(async () => { if (!stopped) await server.stop() })
  t.ok(alive(server.pid), 'the postmaster runs under the PID we hold')
  const url = await server.createDatabase('harness_check')
  t.match(url, new RegExp(`^postgres://postgres@127\\.0\\.0\\.1:${server.port}/harness_check$`))
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const { rows } = await client.query<{ db: string, listen: string, fsync: string, super: boolean }>(
      "SELECT current_database() AS db, current_setting('listen_addresses') AS listen, current_setting('fsync') AS fsync, current_setting('is_superuser') = 'on' AS super")
    t.same(rows[0], { db: 'harness_check', listen: '127.0.0.1', fsync: 'on', super: true })
  } finally {
    await client.end()
  }
  await t.rejects(server.createDatabase('Robert"; DROP'), /not a plain database name/)

  await server.stop()
  stopped = true
  t.notOk(alive(server.pid), 'the process is gone')
  t.notOk(await connects(server.port), 'nothing listens on its port any more')
  t.notOk(existsSync(server.dataDir), 'its data dir is removed')
})

t.test('two clusters run side by side on their own ports', async t => {
  const [a, b] = await Promise.all([startPostgres(), startPostgres()])
  t.teardown(() => Promise.all([a.stop(), b.stop()]))
  t.not(a.port, b.port)
  t.not(a.dataDir, b.dataDir)
})
