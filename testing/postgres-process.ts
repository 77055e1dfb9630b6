/**
 * Starts and stops a throwaway PostgreSQL cluster (Debian's PostgreSQL 15) on loopback: a fresh data dir per
 * instance, one free port, TCP on 127.0.0.1 only and its Unix socket inside the data dir, so tests never touch a
 * packaged cluster or each other.
 */
import { execFile, type ChildProcess } from 'node:child_process'
import { chmod, chown, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir, userInfo } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { createConnection } from 'node:net'
import { freePort, HOST } from './ports.js'
import { exited, spawnLogged } from './processes.js'

const execFileAsync = promisify(execFile)

/** Debian's layout; PG_BIN overrides it. */
const DEFAULT_BIN = '/usr/lib/postgresql/15/bin'
const KILL_AFTER_MS = 5000
const LOG_TAIL_CHARS = 2000

export interface PostgresProcess {
  /** postgres://postgres@127.0.0.1:PORT/postgres (trust authentication on loopback, a throwaway cluster). */
  url: string
  port: number
  pid: number
  dataDir: string
  /** Creates an empty database and answers its URL, so each test file (or test) gets its own. */
  createDatabase (name: string): Promise<string>
  /** SIGINT (fast shutdown), then SIGKILL after 5 s; resolves once the process has exited, then removes the data dir unless keepData. */
  stop (options?: { keepData?: boolean }): Promise<void>
}

/**
 * PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` user through
 * `setpriv`, which execs in place, so the PID we hold is the postmaster's own and stopping it needs no `pg_ctl`.
 */
function asServerUser (command: string, args: string[]): [string, string[]] {
  if (userInfo().uid !== 0) return [command, args]
  return ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', command, ...args]]
}

async function portAnswers (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = createConnection({ host: HOST, port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

async function acceptsConnections (bin: string, socketDir: string, port: number): Promise<boolean> {
  return await execFileAsync(join(bin, 'pg_isready'), ['-q', '-h', socketDir, '-p', String(port), '-U', 'postgres']).then(() => true, () => false)
}

async function logTail (path: string): Promise<string> {
  return await readFile(path, 'utf8').then(text => text.slice(-LOG_TAIL_CHARS), () => '(no log)')
}

async function serverUserIds (): Promise<[number, number]> {
  return [Number((await execFileAsync('id', ['-u', 'postgres'])).stdout.trim()), Number((await execFileAsync('id', ['-g', 'postgres'])).stdout.trim())]
}

async function initCluster (bin: string, dir: string, dataDir: string): Promise<void> {
  if (userInfo().uid === 0) await chown(dir, ...await serverUserIds())
  await chmod(dir, 0o700)
  const [initdb, initArgs] = asServerUser(join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'])
  try {
    await execFileAsync(initdb, initArgs)
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw new Error(`initdb failed: ${(error as Error).message}`, { cause: error })
  }
}

/** PEM files the server presents; they are copied next to the data dir, where the server user can read them. */
export interface PostgresTlsOptions {
  certFile: string
  keyFile: string
  /** CA of the client certificates; with requireClientCert the server asks for and verifies one. */
  caFile?: string
  requireClientCert?: boolean
}

/**
 * ssl=on, and loopback TCP accepts only TLS (hostssl): a client that does not speak TLS is refused, so a test that
 * connects knows its connection is encrypted.
 */
async function enableTls (dir: string, dataDir: string, tls: PostgresTlsOptions): Promise<string[]> {
  const files: Array<[string, string | undefined]> = [['server.crt', tls.certFile], ['server.key', tls.keyFile], ['client-ca.crt', tls.caFile]]
  const ids = userInfo().uid === 0 ? await serverUserIds() : undefined
  for (const [name, source] of files) {
    if (source === undefined) continue
    await copyFile(source, join(dir, name))
    // The server refuses a key that others can read.
    await chmod(join(dir, name), 0o600)
    if (ids !== undefined) await chown(join(dir, name), ...ids)
  }
  const clientCert = tls.requireClientCert === true ? ' clientcert=verify-full' : ''
  await writeFile(join(dataDir, 'pg_hba.conf'), `local all all trust\nhostssl all all ${HOST}/32 trust${clientCert}\n`)
  return [
    '-c', 'ssl=on', '-c', `ssl_cert_file=${join(dir, 'server.crt')}`, '-c', `ssl_key_file=${join(dir, 'server.key')}`,
    ...(tls.caFile === undefined ? [] : ['-c', `ssl_ca_file=${join(dir, 'client-ca.crt')}`])
  ]
}

export interface PostgresProcessOptions {
  readyTimeoutMs?: number
  /** A fresh cluster on this port (e.g. one a gateway was told of before the database existed). */
  port?: number
  /** Serve TLS only on TCP (see enableTls). Not with restart. */
  tls?: PostgresTlsOptions
  /** An earlier instance's dataDir (stopped with keepData) and port: the same cluster starts again, as after an outage. */
  restart?: { dataDir: string, port: number }
}

export async function startPostgres (options: PostgresProcessOptions = {}): Promise<PostgresProcess> {
  const bin = process.env.PG_BIN ?? DEFAULT_BIN
  const dir = options.restart === undefined ? await mkdtemp(join(tmpdir(), 'rdg-pg-')) : dirname(options.restart.dataDir)
  const dataDir = join(dir, 'data')
  const logPath = join(dir, 'postgres.log')
  if (options.restart === undefined) await initCluster(bin, dir, dataDir)
  const tlsArgs = options.tls === undefined ? [] : await enableTls(dir, dataDir, options.tls)
  const port = options.restart?.port ?? options.port ?? await freePort()
  // fsync stays on: the audit store's durability is part of what the tests are about.
  const [postgres, args] = asServerUser(join(bin, 'postgres'), [
    '-D', dataDir, '-p', String(port), '-k', dataDir, '-c', `listen_addresses=${HOST}`, '-c', 'max_connections=100', ...tlsArgs
  ])
  let child: ChildProcess | undefined
  const stopChild = async (): Promise<void> => {
    if (child === undefined || exited(child)) return
    const running = child
    const gone = new Promise(resolve => running.once('exit', resolve))
    running.kill('SIGINT')
    const killer = setTimeout(() => running.kill('SIGKILL'), KILL_AFTER_MS)
    await gone
    clearTimeout(killer)
  }
  try {
    child = await spawnLogged(postgres, args, { logPath })
    const deadline = Date.now() + (options.readyTimeoutMs ?? 20_000)
    // Listening is not accepting: until recovery ends, connections get "the database system is starting up".
    while (!(await portAnswers(port)) || !(await acceptsConnections(bin, dataDir, port))) {
      if (exited(child)) throw new Error(`postgres exited with ${String(child.exitCode ?? child.signalCode)}`)
      if (Date.now() > deadline) throw new Error('postgres did not listen in time')
      await sleep(50)
    }
  } catch (error) {
    await stopChild()
    const log = await logTail(logPath)
    await rm(dir, { recursive: true, force: true })
    throw new Error(`postgres failed to start on port ${port}: ${(error as Error).message}\n--- postgres log ---\n${log}`, { cause: error })
  }
  const url = `postgres://postgres@${HOST}:${port}/postgres`
  return {
    url,
    port,
    pid: child.pid as number,
    dataDir,
    async createDatabase (name) {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a plain database name: ${name}`)
      // Over the Unix socket, which needs no TLS or client certificate whatever the TCP rules are.
      await execFileAsync(join(bin, 'psql'), ['-v', 'ON_ERROR_STOP=1', '-q', '-h', dataDir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-c', `CREATE DATABASE ${name}`])
      return `postgres://postgres@${HOST}:${port}/${name}`
    },
    async stop (stopOptions = {}) {
      await stopChild()
      // A backend still finishing its last write can add a file while the directory is being removed (ENOTEMPTY).
      if (stopOptions.keepData !== true) await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
    }
  }
}
