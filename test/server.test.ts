import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { request } from 'undici'
import { startRegistry } from '../src/demo/registry-process.js'
import { serve } from '../src/server.js'

const serverFile = fileURLToPath(new URL('../src/server.ts', import.meta.url))
const registry = await startRegistry()
const auditDir = mkdtempSync(join(tmpdir(), 'rdg-server-'))
t.teardown(async () => { await registry.stop() })

t.test('serve() listens, answers, and closes once however often asked', async t => {
  const server = await serve([], { REGISTRY_URL: registry.url, PORT: '0', LOG_LEVEL: 'silent', AUDIT_DB: join(auditDir, 'serve.db') })
  const health = await request(`${server.address}/healthz`)
  t.same(await health.body.json(), { status: 'ok' })
  const ready = await request(`${server.address}/readyz`)
  t.equal(ready.statusCode, 200)
  t.same(await ready.body.json(), { status: 'ready', checks: [{ name: 'registry:default', ok: true }, { name: 'audit', ok: true }] })
  await Promise.all([server.close(), server.close()])
  await t.rejects(request(`${server.address}/healthz`))
})

t.test('as a process: logs JSON, stops cleanly on SIGTERM', async t => {
  const child = spawn(process.execPath, [...process.execArgv, serverFile], {
    env: { ...process.env, REGISTRY_URL: registry.url, REGISTRY_PASSWORD: 'never-logged', PORT: '0', LOG_LEVEL: 'info', AUDIT_DB: join(auditDir, 'process.db') },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const address = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', () => {
      const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
      if (match !== null) resolve(match[1] as string)
    })
    child.once('exit', code => reject(new Error(`exited early with ${code}: ${output}`)))
  })
  const me = await request(`${address}/me`, { headers: { authorization: 'Bearer not-a-real-key' } })
  t.equal(me.statusCode, 401)
  await me.body.dump()
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  t.equal(code, 0, 'graceful exit')
  t.match(output, /"msg":"shutting down"/)
  t.match(output, /no policy loaded/, 'start-up says that everything will be denied')
  t.notMatch(output, /never-logged|not-a-real-key/, 'no secret in the logs')
})

t.test('as a process: a bad configuration exits 1 with the reason', async t => {
  const child = spawn(process.execPath, [...process.execArgv, serverFile], {
    env: { ...process.env, REGISTRY_URL: 'ftp://nope', PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const [code] = await once(child, 'exit')
  t.equal(code, 1)
  t.match(stderr, /failed to start: invalid configuration from the environment:\n {2}registries\.default\.url: must match pattern/)
})
