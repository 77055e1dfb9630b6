/**
 * Child processes of the harness (registries, the gateway, the benchmark's bare Fastify app): output to a log file,
 * tracked until they exit, stopped by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { HOST } from './ports.js'

/** Children started and not yet seen exiting. */
const running = new Set<ChildProcess>()

// a run that dies before its teardown would otherwise leave children holding ports forever
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/** Starts `command args` with stdout and stderr appended to `logPath`; resolves once it runs, rejects if it cannot start. */
export async function spawnLogged (command: string, args: string[], options: { logPath: string, env?: NodeJS.ProcessEnv }): Promise<ChildProcess> {
  const log = openSync(options.logPath, 'a')
  try {
    const child = spawn(command, args, { env: options.env, stdio: ['ignore', log, log] })
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve)
      child.once('error', reject)
    })
    running.add(child)
    child.once('exit', () => running.delete(child))
    return child
  } finally {
    // the child holds its own copy of the descriptor
    closeSync(log)
  }
}

export function exited (child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

/** SIGTERM, then SIGKILL after `killAfterMs`; resolves once the process has exited. */
export async function terminate (child: ChildProcess, killAfterMs: number): Promise<void> {
  if (exited(child)) return
  const gone = new Promise(resolve => child.once('exit', resolve))
  // ChildProcess.kill signals this PID only and ignores ESRCH if it exits meanwhile
  child.kill('SIGTERM')
  const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs)
  await gone
  clearTimeout(killer)
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
  /** How long `stop` waits after SIGTERM before SIGKILL; default 5 s. */
  killAfterMs?: number
}): Promise<Child> {
  const child = await spawnLogged(process.execPath, [options.script, ...(options.args ?? [])], { logPath: options.logPath, env: options.env })
  const url = `http://${HOST}:${options.port}`
  const stop = async (): Promise<void> => { await terminate(child, options.killAfterMs ?? 5000) }
  const deadline = Date.now() + (options.timeoutMs ?? 15_000)
  while (Date.now() < deadline) {
    if (exited(child)) break
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
