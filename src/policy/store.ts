import { EventEmitter } from 'node:events'
import { readFileSync, watch } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import { loadPolicy } from './load.js'
import { PolicyError } from './policy-error.js'
import type { Policy, PolicySource } from './types.js'

/** Fits pino and Fastify's logger. */
export interface PolicyLogger {
  info: (details: object, message: string) => void
  error: (details: object, message: string) => void
}

/** What the store needs from a directory watcher: fs.watch's FSWatcher, or a stand-in. */
export interface DirectoryWatcher {
  on (event: 'change', listener: (event?: unknown, filename?: unknown) => void): unknown
  on (event: 'error', listener: (error: Error) => void): unknown
  close (): void
}

export interface PolicyStoreOptions {
  logger?: PolicyLogger
  /** Whether load() also starts watch(); default true, so a server picks up edits without a restart. */
  watch?: boolean
  /** Quiet time after the last file event before re-reading; editors write in several steps. Default 200 ms. */
  debounceMs?: number
  /** Replaces fs.watch (e.g. with polling on file systems without change events). */
  watchDirectory?: (directory: string) => DirectoryWatcher
}

export type ReloadTrigger = 'manual' | 'watch' | 'SIGHUP'

export interface PolicyReload {
  policy: Policy
  version: number
  trigger: ReloadTrigger
}

export interface PolicyStoreEvents {
  reload: [PolicyReload]
  reloadFailed: [Error]
}

const silent: PolicyLogger = { info () {}, error () {} }

function readPolicyFile (file: string, source: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (error) {
    throw new PolicyError(source, [{ path: '(file)', rule: `cannot be read: ${(error as NodeJS.ErrnoException).code as string}` }])
  }
}

/**
 * Holds the policy in effect. A reload parses the whole file first and swaps in the result with one assignment,
 * so a request sees the old policy or the new one, never a mix; a file that does not load leaves the old one.
 */
export class PolicyStore extends EventEmitter<PolicyStoreEvents> implements PolicySource {
  readonly #logger: PolicyLogger
  readonly #autoWatch: boolean
  readonly #debounceMs: number
  readonly #watchDirectory: (directory: string) => DirectoryWatcher
  #policy: Policy | undefined
  #text: string | undefined
  #file: string | undefined
  #source: string | undefined
  #version = 0
  #reloads = 0
  #failures = 0
  #watcher: DirectoryWatcher | undefined
  #pending: NodeJS.Timeout | undefined
  readonly #onSighup = (): void => { this.reload('SIGHUP') }

  constructor (options: PolicyStoreOptions = {}) {
    super()
    this.#logger = options.logger ?? silent
    this.#autoWatch = options.watch ?? true
    this.#debounceMs = options.debounceMs ?? 200
    // Not persistent: the server's listener keeps the process alive; a watcher alone must not.
    this.#watchDirectory = options.watchDirectory ?? (directory => watch(directory, { persistent: false }))
  }

  current (): Policy | undefined {
    return this.#policy
  }

  /** Increases with every policy swapped in (the first load is 1); 0 while none is loaded. */
  get version (): number {
    return this.#version
  }

  get stats (): { reloads: number, failures: number } {
    return { reloads: this.#reloads, failures: this.#failures }
  }

  /** Loads the file now; throws PolicyError if it cannot be used (at startup, failing loudly beats denying all). */
  load (file: string): Policy {
    const text = readPolicyFile(file, file)
    const policy = loadPolicy(text, file)
    this.#file = resolve(file)
    this.#source = file
    this.#swap(policy, text)
    if (this.#watcher !== undefined) this.#stopWatching()
    if (this.#autoWatch) this.watch()
    return policy
  }

  /** Re-reads the file; true when it is in effect (or unchanged), false when it failed and the previous one stays. */
  reload (trigger: ReloadTrigger = 'manual'): boolean {
    const file = this.#requireFile()
    const source = this.#source as string
    let policy: Policy
    let text: string
    try {
      text = readPolicyFile(file, source)
      if (text === this.#text) {
        // Watching a directory reports every neighbour's change too; only a real edit is worth a line.
        if (trigger !== 'watch') this.#logger.info({ file: source, trigger }, 'policy file unchanged')
        return true
      }
      policy = loadPolicy(text, source)
    } catch (error) {
      this.#failures++
      this.#logger.error({ file: source, trigger, error: (error as Error).message }, 'policy reload failed; keeping the previous policy')
      this.emit('reloadFailed', error as Error)
      return false
    }
    this.#swap(policy, text)
    this.#reloads++
    this.#logger.info({ file: source, trigger, version: this.#version }, 'policy reloaded')
    this.emit('reload', { policy, version: this.#version, trigger })
    return true
  }

  /**
   * Reloads on SIGHUP and when the file's directory changes. The directory, not the file, is watched: editors
   * and config-map updates replace the file (a rename), after which a watch on the old file would see nothing.
   */
  watch (): void {
    const file = this.#requireFile()
    if (this.#watcher !== undefined) return
    const watcher = this.#watchDirectory(dirname(file))
    const name = basename(file)
    // A busy neighbour (an audit database, a log) must not keep postponing the reload; '..data' is a config map swap.
    watcher.on('change', (_event?: unknown, filename?: unknown) => {
      if (typeof filename !== 'string' || filename === name || filename.startsWith('..')) this.#schedule()
    })
    watcher.on('error', error => {
      this.#logger.error({ file: this.#source, error: error.message }, 'cannot watch the policy file; SIGHUP still reloads it')
    })
    this.#watcher = watcher
    process.on('SIGHUP', this.#onSighup)
  }

  close (): void {
    this.#stopWatching()
  }

  #requireFile (): string {
    if (this.#file === undefined) throw new Error('no policy file: call load(file) first')
    return this.#file
  }

  #swap (policy: Policy, text: string): void {
    this.#policy = policy
    this.#text = text
    this.#version++
  }

  #schedule (): void {
    clearTimeout(this.#pending)
    this.#pending = setTimeout(() => {
      this.#pending = undefined
      this.reload('watch')
    }, this.#debounceMs)
  }

  #stopWatching (): void {
    clearTimeout(this.#pending)
    this.#pending = undefined
    this.#watcher?.close()
    this.#watcher = undefined
    process.removeListener('SIGHUP', this.#onSighup)
  }
}
