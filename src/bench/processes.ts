/** Child processes of the benchmark (the gateway, the bare Fastify app): started on loopback, stopped by PID. */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'

export const HOST = '127.0.0.1'
const KILL_AFTER_MS = 5000

/** Children started and not yet seen exiting; killed if the benchmark itself dies first. */
const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/** A free loopback port: bound, released, then handed to a child (a small race, acceptable on loopback). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, HOST, resolve)
  })
  const { port } = server.address() as { port: number }
  await new Promise(resolve => server.close(resolve))
  return port
}

export interface Child {
  pid: number
  url: string
  logPath: string
  stop: () => Promise<void>
}

/**
 * Runs `node script args` with `env`, output to `logPath`, and waits until GET `readyPath` answers (any status
 * below 500) within `timeoutMs`.
 */
export async function startNodeChild (options: {
  script: string
  args?: string[]
  env: NodeJS.ProcessEnv
  port: number
  logPath: string
  readyPath: string
  timeoutMs?: number
}): Promise<Child> {
  const log = openSync(options.logPath, 'a')
  let child: ChildProcess
  try {
    child = spawn(process.execPath, [options.script, ...(options.args ?? [])], { env: options.env, stdio: ['ignore', log, log] })
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve)
      child.once('error', reject)
    })
  } finally {
    closeSync(log)
  }
  running.add(child)
  child.once('exit', () => running.delete(child))
  const url = `http://${HOST}:${options.port}`
  const stop = async (): Promise<void> => { await terminate(child) }
  const deadline = Date.now() + (options.timeoutMs ?? 15_000)
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break
    try {
      const response = await request(url + options.readyPath, { headersTimeout: 1000, bodyTimeout: 1000 })
      await response.body.dump()
      if (response.statusCode < 500) return { pid: child.pid as number, url, logPath: options.logPath, stop }
    } catch {}
    await sleep(50)
  }
  await stop()
  const tail = readFileSync(options.logPath, 'utf8').slice(-2000)
  throw new Error(`${options.script} did not become ready on ${url}${options.readyPath}\n--- its log ---\n${tail}`)
}

async function terminate (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const gone = new Promise(resolve => child.once('exit', resolve))
  child.kill('SIGTERM')
  const killer = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS)
  await gone
  clearTimeout(killer)
}

/** Resident set size now (VmRSS) and at its peak so far (VmHWM), in bytes, from /proc/PID/status. */
export function memoryOf (pid: number): { rss: number, hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
    return match === null ? Number.NaN : Number(match[1]) * 1024
  }
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') }
}
