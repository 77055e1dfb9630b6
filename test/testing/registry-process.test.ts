import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { startRegistry, type RegistryProcess, type RegistryProcessOptions } from '../../testing/registry-process.js'
import { pushImage, type PushedImage } from '../../testing/seed.js'
import { startTokenIssuer } from '../fixtures/token-issuer.js'

const execFileAsync = promisify(execFile)

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'

async function send (method: 'GET' | 'HEAD' | 'DELETE', url: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: Record<string, unknown>, body: string }> {
  const response = await request(url, { method, headers })
  return { status: response.statusCode, headers: response.headers, body: await response.body.text() }
}

async function registry (t: Test, options?: RegistryProcessOptions): Promise<RegistryProcess> {
  const started = await startRegistry(options)
  t.teardown(() => started.stop())
  return started
}

/** Seeds an open registry, then hands back its data dir for a restart in another mode. */
async function seededDataDir (t: Test, name: string): Promise<{ dataDir: string, image: PushedImage }> {
  const seeder = await startRegistry()
  t.teardown(() => rm(seeder.dataDir, { recursive: true, force: true }))
  try {
    const image = await pushImage({ url: seeder.url }, name, ['v1'], 'schema2')
    return { dataDir: seeder.dataDir, image }
  } finally {
    await seeder.stop({ keepData: true })
  }
}

function blobDigests (image: PushedImage): string[] {
  const manifest = JSON.parse(image.manifest.toString()) as { config: { digest: string }, layers: Array<{ digest: string }> }
  return [manifest.config.digest, ...manifest.layers.map(layer => layer.digest)]
}

/** Zombies count as gone: an orphan is reaped by PID 1, which in a container may never get round to it. */
function alive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

async function exists (path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false)
}

/** A stand-in binary: a shell script in a temp dir, removed at teardown. */
async function script (t: Test, body: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fake-registry-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const path = join(dir, 'fake-registry')
  await writeFile(path, `#!/bin/sh\n${body}\n`)
  await chmod(path, 0o755)
  return path
}

t.test('starts on a free loopback port, stops, and cleans up after itself', async t => {
  const reg = await startRegistry()
  t.match(reg.url, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.equal(reg.url, `http://127.0.0.1:${reg.port}`)
  const ping = await send('GET', `${reg.url}/v2/`)
  t.equal(ping.status, 200)
  t.equal(ping.headers['docker-distribution-api-version'], 'registry/2.0')
  t.ok(alive(reg.pid))
  t.ok(await exists(reg.configPath))
  await reg.stop()
  t.notOk(alive(reg.pid), 'process gone')
  t.notOk(await exists(reg.configPath), 'instance dir removed')
  t.notOk(await exists(reg.dataDir), 'own data dir removed')
  await reg.stop()
  t.pass('a second stop is harmless')
})

t.test('keepData keeps the images for a restart; a caller-supplied dataDir is never removed', async t => {
  const { dataDir, image } = await seededDataDir(t, 'demo/keep')
  const again = await startRegistry({ dataDir })
  const head = await send('HEAD', `${again.url}/v2/demo/keep/manifests/v1`, { accept: ACCEPT })
  t.equal(head.headers['docker-content-digest'], image.digest)
  await again.stop()
  t.ok(await exists(dataDir))
})

t.test('a hung registry is killed after the grace period', async t => {
  const reg = await registry(t)
  // a stopped process keeps SIGTERM pending, so only SIGKILL can end it
  process.kill(reg.pid, 'SIGSTOP')
  const started = Date.now()
  await reg.stop()
  t.notOk(alive(reg.pid))
  t.ok(Date.now() - started >= 2900, 'waited for the grace period')
})

t.test('registries still running when the process exits are killed with it', async t => {
  const module = new URL('../../testing/registry-process.js', import.meta.url).href
  const code = `const { startRegistry } = await import(${JSON.stringify(module)})
const reg = await startRegistry()
console.log(JSON.stringify(reg))
process.exit(0)`
  const { stdout } = await execFileAsync(process.execPath, [...process.execArgv, '--input-type=module', '--eval', code])
  const orphan = JSON.parse(stdout) as { pid: number, configPath: string, dataDir: string }
  t.teardown(async () => {
    await rm(dirname(orphan.configPath), { recursive: true, force: true })
    await rm(orphan.dataDir, { recursive: true, force: true })
  })
  // the SIGKILL is sent on the way out, but it lands a moment later
  for (let i = 0; i < 20 && alive(orphan.pid); i++) await sleep(50)
  t.notOk(alive(orphan.pid))
})

t.test('delete disabled: manifest DELETE answers 405 UNSUPPORTED', async t => {
  const reg = await registry(t, { deleteEnabled: false })
  const image = await pushImage({ url: reg.url }, 'demo/nodelete', ['v1'], 'schema2')
  const deleted = await send('DELETE', `${reg.url}/v2/demo/nodelete/manifests/${image.digest}`)
  t.equal(deleted.status, 405)
  t.equal(JSON.parse(deleted.body).errors[0].code, 'UNSUPPORTED')
  const head = await send('HEAD', `${reg.url}/v2/demo/nodelete/manifests/v1`, { accept: ACCEPT })
  t.equal(head.status, 200, 'tag survives')
})

t.test('read-only: DELETE answers a plain 405 that allows GET and HEAD only', async t => {
  const { dataDir, image } = await seededDataDir(t, 'demo/readonly')
  const reg = await registry(t, { dataDir, readOnly: true })
  const deleted = await send('DELETE', `${reg.url}/v2/demo/readonly/manifests/${image.digest}`)
  t.equal(deleted.status, 405)
  t.equal(deleted.headers.allow, 'GET, HEAD')
  t.match(deleted.body, /Method not allowed/)
  const head = await send('HEAD', `${reg.url}/v2/demo/readonly/manifests/v1`, { accept: ACCEPT })
  t.equal(head.headers['docker-content-digest'], image.digest)
})

t.test('htpasswd: 401 without credentials, 200 with them', async t => {
  const { dataDir, image } = await seededDataDir(t, 'demo/private')
  const reg = await registry(t, { dataDir, htpasswd: { username: 'alice', password: 's3cret' } })
  const url = `${reg.url}/v2/demo/private/manifests/v1`
  const anonymous = await send('HEAD', url, { accept: ACCEPT })
  t.equal(anonymous.status, 401)
  t.match(anonymous.headers['www-authenticate'], /^Basic realm=/)
  const wrong = await send('HEAD', url, { accept: ACCEPT, authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` })
  t.equal(wrong.status, 401)
  const authorized = await send('HEAD', url, { accept: ACCEPT, authorization: `Basic ${Buffer.from('alice:s3cret').toString('base64')}` })
  t.equal(authorized.status, 200)
  t.equal(authorized.headers['docker-content-digest'], image.digest)
})

t.test('token mode: the challenge names the configured realm and service', async t => {
  const issuer = await startTokenIssuer({ users: {} })
  t.teardown(() => issuer.close())
  const { realm, service, issuer: name, certPath } = issuer
  const reg = await registry(t, { token: { realm, service, issuer: name, rootCertBundle: certPath } })
  const ping = await send('GET', `${reg.url}/v2/`)
  t.equal(ping.status, 401)
  t.equal(ping.headers['www-authenticate'], `Bearer realm="${realm}",service="${service}"`)
})

t.test('garbage collection removes the blobs of a deleted manifest and keeps the rest', async t => {
  const reg = await registry(t)
  const target = { url: reg.url }
  const doomed = await pushImage(target, 'demo/gc', ['old'], 'schema2')
  const kept = await pushImage(target, 'demo/gc', ['new'], 'oci')
  const deleted = await send('DELETE', `${reg.url}/v2/demo/gc/manifests/${doomed.digest}`)
  t.equal(deleted.status, 202)
  for (const digest of blobDigests(doomed)) {
    t.equal((await send('HEAD', `${reg.url}/v2/demo/gc/blobs/${digest}`)).status, 200, 'DELETE only unlinks')
  }
  const output = await reg.garbageCollect()
  t.match(output, /blob eligible for deletion/)
  for (const digest of blobDigests(doomed)) {
    t.equal((await send('HEAD', `${reg.url}/v2/demo/gc/blobs/${digest}`)).status, 404, `${digest} collected`)
  }
  for (const digest of blobDigests(kept)) {
    t.equal((await send('HEAD', `${reg.url}/v2/demo/gc/blobs/${digest}`)).status, 200, `${digest} kept`)
  }
})

t.test('garbage collection with deleteUntagged drops untagged manifests and their blobs', async t => {
  const reg = await registry(t)
  const untagged = await pushImage({ url: reg.url }, 'demo/untagged', [], 'schema2')
  await pushImage({ url: reg.url }, 'demo/untagged', ['v1'], 'schema2')
  await reg.garbageCollect()
  t.equal((await send('HEAD', `${reg.url}/v2/demo/untagged/manifests/${untagged.digest}`, { accept: ACCEPT })).status, 200, 'plain GC keeps it')
  await reg.garbageCollect({ deleteUntagged: true })
  for (const digest of blobDigests(untagged)) {
    t.equal((await send('HEAD', `${reg.url}/v2/demo/untagged/blobs/${digest}`)).status, 404)
  }
})

t.test('garbage collection of a registry that never stored anything fails', async t => {
  const reg = await registry(t)
  await t.rejects(reg.garbageCollect(), /garbage-collect .* failed \(exit 1\):\n.*Path not found/)
})

t.test('start-up failures', async t => {
  t.test('binary that does not exist', async t => {
    await t.rejects(startRegistry({ binary: '/nonexistent/docker-registry' }), /registry failed to start.*spawn \/nonexistent\/docker-registry ENOENT/)
  })

  t.test('DOCKER_REGISTRY_BIN replaces the default binary', async t => {
    const saved = process.env.DOCKER_REGISTRY_BIN
    t.teardown(() => {
      if (saved === undefined) delete process.env.DOCKER_REGISTRY_BIN
      else process.env.DOCKER_REGISTRY_BIN = saved
    })
    process.env.DOCKER_REGISTRY_BIN = '/nonexistent/from-env'
    await t.rejects(startRegistry(), /from-env ENOENT/)
  })

  t.test('process that exits at once; the error carries the log tail', async t => {
    const binary = await script(t, 'echo "bad config, giving up" >&2\nexit 3')
    await t.rejects(startRegistry({ binary }), /process exited early \(code 3, signal null\)\n--- registry log ---\nbad config, giving up/)
  })

  t.test('port already in use', async t => {
    const holder = createServer()
    await new Promise<void>(resolve => holder.listen(0, '127.0.0.1', resolve))
    t.teardown(() => holder.close())
    const { port } = holder.address() as { port: number }
    await t.rejects(startRegistry({ port }), { code: 'EADDRINUSE' })
  })

  t.test('never answers within the timeout', async t => {
    const binary = await script(t, 'exec sleep 30')
    await t.rejects(startRegistry({ binary, readyTimeoutMs: 300 }), /did not answer 200 or 401 within 300 ms/)
  })

  t.test('htpasswd refuses the credentials', async t => {
    await t.rejects(startRegistry({ htpasswd: { username: 'a:b', password: 'x' } }), /htpasswd .* failed \(exit 6\):\n.*illegal character/)
  })
})
