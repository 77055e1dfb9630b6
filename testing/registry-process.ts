/**
 * Starts and stops a real CNCF distribution registry (`docker-registry serve`) on loopback, one private
 * directory per instance, so tests and the demo run against the real thing rather than a mock.
 */
import { execFile, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { stringify } from 'yaml'
import { freePort, HOST } from './ports.js'
import { exited, spawnLogged, terminate } from './processes.js'

export interface RegistryProcessOptions {
  /** Storage root; default a fresh temp dir. Pass an earlier instance's dataDir to restart with its images. */
  dataDir?: string
  /** storage.delete.enabled, default true. */
  deleteEnabled?: boolean
  /** storage.maintenance.readonly.enabled. */
  readOnly?: boolean
  /** auth.htpasswd with a bcrypt file made by `htpasswd -Bbn`. */
  htpasswd?: { username: string, password: string }
  /** auth.token; rootCertBundle is a PEM file holding the issuer's certificate. */
  token?: { realm: string, service: string, issuer: string, rootCertBundle: string }
  /** Default: a free loopback port. */
  port?: number
  /** Default 'docker-registry'; the DOCKER_REGISTRY_BIN environment variable overrides the default. */
  binary?: string
  /** How long to wait for GET /v2/ to answer; default 10 000 ms. */
  readyTimeoutMs?: number
}

export interface RegistryProcess {
  /** http://127.0.0.1:PORT */
  url: string
  port: number
  pid: number
  dataDir: string
  configPath: string
  /**
   * SIGTERM, then SIGKILL after 3 s; resolves once the process has exited. Removes the instance's temp
   * dirs; the data dir survives when keepData is set or when the caller supplied it.
   */
  stop (options?: { keepData?: boolean }): Promise<void>
  /** `docker-registry garbage-collect [--delete-untagged] CONFIG`; resolves to its output, rejects on failure. */
  garbageCollect (options?: { deleteUntagged?: boolean }): Promise<string>
}

const KILL_AFTER_MS = 3000
const DEFAULT_READY_TIMEOUT_MS = 10_000
const POLL_INTERVAL_MS = 50
const LOG_TAIL_CHARS = 2000

interface Instance {
  dir: string
  dataDir: string
  ownsDataDir: boolean
  configPath: string
  logPath: string
  port: number
  binary: string
}

export async function startRegistry (options: RegistryProcessOptions = {}): Promise<RegistryProcess> {
  const instance = await prepareInstance(options)
  let child: ChildProcess | undefined
  try {
    child = await spawnLogged(instance.binary, ['serve', instance.configPath], { logPath: instance.logPath })
    await waitUntilReady(child, instance, options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS)
  } catch (err) {
    if (child !== undefined) await terminate(child, KILL_AFTER_MS)
    const log = await logTail(instance.logPath)
    await removeInstance(instance, false)
    throw new Error(`registry failed to start on port ${instance.port}: ${(err as Error).message}\n--- registry log ---\n${log}`, { cause: err })
  }
  return handle(child, instance)
}

async function prepareInstance (options: RegistryProcessOptions): Promise<Instance> {
  // bind-check first: a port answered by another registry would otherwise look like our own readiness
  const port = await freePort(options.port ?? 0)
  const dir = await mkdtemp(join(tmpdir(), 'registry-instance-'))
  const ownsDataDir = options.dataDir === undefined
  const dataDir = options.dataDir ?? await mkdtemp(join(tmpdir(), 'registry-data-'))
  const instance: Instance = {
    dir,
    dataDir,
    ownsDataDir,
    configPath: join(dir, 'config.yml'),
    logPath: join(dir, 'registry.log'),
    port,
    binary: options.binary ?? process.env.DOCKER_REGISTRY_BIN ?? 'docker-registry'
  }
  try {
    const htpasswdPath = options.htpasswd === undefined ? undefined : await writeHtpasswd(dir, options.htpasswd)
    await writeFile(instance.configPath, stringify(buildConfig(instance, options, htpasswdPath)))
  } catch (err) {
    await removeInstance(instance, false)
    throw err
  }
  return instance
}

async function writeHtpasswd (dir: string, credentials: { username: string, password: string }): Promise<string> {
  // distribution only accepts bcrypt entries, hence -B
  const { stdout } = await run('htpasswd', ['-Bbn', credentials.username, credentials.password])
  const path = join(dir, 'htpasswd')
  await writeFile(path, stdout)
  return path
}

function buildConfig (instance: Instance, options: RegistryProcessOptions, htpasswdPath: string | undefined): object {
  return {
    version: 0.1,
    log: { level: 'warn', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: instance.dataDir },
      delete: { enabled: options.deleteEnabled ?? true },
      maintenance: {
        // upload purging would otherwise start a background sweep we never want in a short-lived instance
        uploadpurging: { enabled: false },
        readonly: { enabled: options.readOnly ?? false }
      }
    },
    http: { addr: `${HOST}:${instance.port}`, secret: randomBytes(16).toString('hex') },
    ...authConfig(options, htpasswdPath)
  }
}

function authConfig (options: RegistryProcessOptions, htpasswdPath: string | undefined): object {
  if (htpasswdPath !== undefined) return { auth: { htpasswd: { realm: 'registry', path: htpasswdPath } } }
  if (options.token === undefined) return {}
  const { realm, service, issuer, rootCertBundle } = options.token
  return { auth: { token: { realm, service, issuer, rootcertbundle: rootCertBundle } } }
}

async function waitUntilReady (child: ChildProcess, instance: Instance, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  const url = `http://${HOST}:${instance.port}/v2/`
  while (Date.now() < deadline) {
    if (exited(child)) throw new Error(`process exited early (code ${child.exitCode}, signal ${child.signalCode})`)
    if (await answers(url)) return
    await sleep(POLL_INTERVAL_MS)
  }
  throw new Error(`GET ${url} did not answer 200 or 401 within ${timeoutMs} ms`)
}

async function answers (url: string): Promise<boolean> {
  try {
    const response = await request(url, { headersTimeout: 1000, bodyTimeout: 1000 })
    await response.body.dump()
    return response.statusCode === 200 || response.statusCode === 401
  } catch {
    return false
  }
}

function handle (child: ChildProcess, instance: Instance): RegistryProcess {
  return {
    url: `http://${HOST}:${instance.port}`,
    port: instance.port,
    pid: child.pid as number,
    dataDir: instance.dataDir,
    configPath: instance.configPath,
    async stop (options = {}) {
      await terminate(child, KILL_AFTER_MS)
      await removeInstance(instance, options.keepData ?? false)
    },
    async garbageCollect (options = {}) {
      const flags = options.deleteUntagged === true ? ['--delete-untagged'] : []
      const { stdout, stderr } = await run(instance.binary, ['garbage-collect', ...flags, instance.configPath])
      return stdout + stderr
    }
  }
}

async function removeInstance (instance: Instance, keepData: boolean): Promise<void> {
  await rm(instance.dir, { recursive: true, force: true })
  if (instance.ownsDataDir && !keepData) await rm(instance.dataDir, { recursive: true, force: true })
}

async function logTail (path: string): Promise<string> {
  // spawnLogged creates the file before anything can fail, so it is always there to read
  return (await readFile(path, 'utf8')).slice(-LOG_TAIL_CHARS)
}

/** Runs a tool to completion; a failure becomes an Error carrying everything the tool printed. */
async function run (command: string, args: string[]): Promise<{ stdout: string, stderr: string }> {
  return await new Promise((resolve, reject) => {
    execFile(command, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err === null) resolve({ stdout, stderr })
      else reject(new Error(`${command} ${args.join(' ')} failed (exit ${String(err.code)}):\n${stdout}${stderr}`, { cause: err }))
    })
  })
}
