import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { request } from 'undici'
import { startRegistry } from '../testing/registry-process.js'
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

t.test('metrics.port moves /metrics to its own listener', async t => {
  const configFile = join(auditDir, 'metrics.yaml')
  const { writeFileSync } = await import('node:fs')
  writeFileSync(configFile, `registries: { default: { url: "${registry.url}" } }\nport: 0\nlogLevel: silent\nmetrics: { port: 0 }\naudit: { path: "${join(auditDir, 'metrics.db')}" }\n`)
  const server = await serve(['--config', configFile], {})
  t.teardown(server.close)
  t.type(server.metricsAddress, 'string')
  const metrics = await request(`${server.metricsAddress as string}/metrics`)
  t.equal(metrics.statusCode, 200)
  t.match(await metrics.body.text(), /gateway_http_request_duration_seconds/)
  const onApi = await request(`${server.address}/metrics`, { headers: { 'x-api-key': 'none' } })
  t.equal(onApi.statusCode, 401, 'not on the API listener')
  await onApi.body.dump()
})

t.test('as a process: shutdown waits for in-flight requests, bounded by shutdownTimeoutMs', async t => {
  const { createServer } = await import('node:http')
  // A registry that answers slowly: long enough for SIGTERM to arrive while the request is in flight.
  let delayMs = 400
  const slow = createServer((req, res) => { setTimeout(() => { res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}') }, delayMs) })
  await new Promise<void>(resolve => slow.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { slow.closeAllConnections(); slow.close() })
  const { writeFileSync } = await import('node:fs')
  const policy = join(auditDir, 'policy.yaml')
  const { ADMIN_POLICY, ADMIN_KEY } = await import('./fixtures/gateway.js')
  writeFileSync(policy, ADMIN_POLICY)

  const start = async (shutdownTimeoutMs: number): Promise<{ child: ReturnType<typeof spawn>, address: string, output: () => string }> => {
    const configFile = join(auditDir, `shutdown-${shutdownTimeoutMs}.yaml`)
    writeFileSync(configFile, `registries: { default: { url: "http://127.0.0.1:${(slow.address() as { port: number }).port}", timeouts: { requestMs: 5000 } } }\nport: 0\npolicyFile: ${policy}\nshutdownTimeoutMs: ${shutdownTimeoutMs}\naudit: { path: "${join(auditDir, `shutdown-${shutdownTimeoutMs}.db`)}" }\n`)
    const child = spawn(process.execPath, [...process.execArgv, serverFile, '--config', configFile], { env: { ...process.env, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    const address = await new Promise<string>((resolve, reject) => {
      child.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString()
        const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
        if (match !== null) resolve(match[1] as string)
      })
      child.once('exit', code => reject(new Error(`exited early with ${code}: ${output}`)))
    })
    child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
    return { child, address, output: () => output }
  }

  const patient = await start(5000)
  const inFlight = request(`${patient.address}/images/app/v1`, { method: 'DELETE', headers: { 'x-api-key': ADMIN_KEY } })
  await new Promise(resolve => setTimeout(resolve, 100))
  patient.child.kill('SIGTERM')
  const answered = await inFlight
  t.equal(answered.statusCode, 404, 'the in-flight deletion got its answer')
  await answered.body.dump()
  const patientExit = await once(patient.child, 'exit')
  t.same(patientExit, [0, null], `exits cleanly once the request is done\n${patient.output().slice(-3000)}`)

  delayMs = 4000
  const hasty = await start(200)
  const stuck = request(`${hasty.address}/images/app/v1`, { method: 'DELETE', headers: { 'x-api-key': ADMIN_KEY } }).catch((error: unknown) => error)
  await new Promise(resolve => setTimeout(resolve, 100))
  hasty.child.kill('SIGTERM')
  t.equal((await once(hasty.child, 'exit'))[0], 1, 'gave up after shutdownTimeoutMs')
  t.type(await stuck, Error, 'the stuck request was cut off')
})
