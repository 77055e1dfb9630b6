import { EventEmitter, once } from 'node:events'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { PolicyError } from '../../src/policy/policy-error.js'
import { PolicyStore, type DirectoryWatcher, type PolicyReload, type PolicyStoreEvents } from '../../src/policy/store.js'

const ROLE = (name: string): string => `roles:\n  ${name}: [{ actions: [read], repositories: ["**"] }]\n`
const BAD = 'roles:\n  admin: [{ actions: [nuke], repositories: ["**"] }]\n'

function directory (): string {
  const dir = mkdtempSync(join(tmpdir(), 'rdg-policy-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

function recordingLogger (): { lines: Array<[string, Record<string, unknown>, string]>, info: (details: object, message: string) => void, error: (details: object, message: string) => void } {
  const lines: Array<[string, Record<string, unknown>, string]> = []
  return {
    lines,
    info: (details, message) => { lines.push(['info', details as Record<string, unknown>, message]) },
    error: (details, message) => { lines.push(['error', details as Record<string, unknown>, message]) }
  }
}

/** Waits for a store event; a referenced timer keeps the process alive meanwhile (the watcher does not). */
async function next<E extends keyof PolicyStoreEvents> (store: PolicyStore, event: E): Promise<PolicyStoreEvents[E]> {
  const keepAlive = setTimeout(() => {}, 10_000)
  try {
    return await once(store as EventEmitter, event, { signal: AbortSignal.timeout(5000) }) as PolicyStoreEvents[E]
  } finally {
    clearTimeout(keepAlive)
  }
}

function roleNames (store: PolicyStore): string[] {
  return [...store.current()?.roles.keys() ?? []]
}

t.test('load, then reload a good file and a bad one', async t => {
  const dir = directory()
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, ROLE('first'))
  const logger = recordingLogger()
  const store = new PolicyStore({ logger, watch: false })
  t.equal(store.current(), undefined, 'nothing before load')
  t.equal(store.version, 0)
  const loaded = store.load(file)
  t.equal(store.current(), loaded)
  t.same(roleNames(store), ['first'])
  t.equal(store.version, 1)

  writeFileSync(file, ROLE('second'))
  const reloaded = next(store, 'reload')
  t.equal(store.reload(), true)
  const [event] = await reloaded as [PolicyReload]
  t.same(roleNames(store), ['second'])
  t.equal(event.policy, store.current())
  t.equal(event.version, 2)
  t.equal(event.trigger, 'manual')
  t.same(logger.lines.at(-1), ['info', { file, trigger: 'manual', version: 2 }, 'policy reloaded'])

  const good = store.current()
  writeFileSync(file, BAD)
  const failed = next(store, 'reloadFailed')
  t.equal(store.reload(), false, 'a bad file is refused')
  const [error] = await failed as [Error]
  t.type(error, PolicyError)
  t.equal(store.current(), good, 'the previous policy stays')
  t.equal(store.version, 2)
  const [level, details, message] = logger.lines.at(-1) as [string, Record<string, unknown>, string]
  t.equal(level, 'error')
  t.equal(message, 'policy reload failed; keeping the previous policy')
  t.match(details.error, /roles\.admin\[0\]\.actions\[0\]: unknown action "nuke"/)

  rmSync(file)
  t.equal(store.reload(), false, 'a missing file is refused')
  t.match(logger.lines.at(-1)?.[1].error, /\(file\): cannot be read: ENOENT/)
  t.equal(store.current(), good)
  t.same(store.stats, { reloads: 1, failures: 2 })
  store.close()
})

t.test('an unchanged file is not swapped', async t => {
  const file = join(directory(), 'policy.yaml')
  writeFileSync(file, ROLE('same'))
  const logger = recordingLogger()
  const store = new PolicyStore({ logger, watch: false })
  const loaded = store.load(file)
  t.equal(store.reload(), true)
  t.equal(store.current(), loaded)
  t.equal(store.version, 1)
  t.same(logger.lines, [['info', { file, trigger: 'manual' }, 'policy file unchanged']])
  t.same(store.stats, { reloads: 0, failures: 0 })
})

t.test('load refuses a file it cannot use', async t => {
  const dir = directory()
  const store = new PolicyStore({ watch: false })
  t.throws(() => store.load(join(dir, 'missing.yaml')), /\(file\): cannot be read: ENOENT/)
  writeFileSync(join(dir, 'bad.yaml'), BAD)
  t.throws(() => store.load(join(dir, 'bad.yaml')), PolicyError)
  t.equal(store.current(), undefined)
  t.throws(() => store.reload(), /no policy file: call load\(file\) first/)
  t.throws(() => store.watch(), /no policy file/)
})

t.test('the silent default logger', async t => {
  const file = join(directory(), 'policy.yaml')
  writeFileSync(file, ROLE('a'))
  const store = new PolicyStore()
  t.teardown(() => { store.close() })
  store.load(file)
  t.equal(store.reload(), true)
  writeFileSync(file, BAD)
  t.equal(store.reload(), false)
})

t.test('watching picks up edits and replacements', async t => {
  const dir = directory()
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, ROLE('first'))
  const logger = recordingLogger()
  const listeners = process.listenerCount('SIGHUP')
  const store = new PolicyStore({ logger, debounceMs: 20 })
  t.teardown(() => { store.close() })
  store.load(file)
  store.watch()
  t.equal(process.listenerCount('SIGHUP'), listeners + 1, 'watch is idempotent')

  let reloaded = next(store, 'reload')
  writeFileSync(file, ROLE('edited'))
  t.equal((await reloaded)[0].trigger, 'watch')
  t.same(roleNames(store), ['edited'])

  // Editors write a new file and rename it over the old one.
  reloaded = next(store, 'reload')
  writeFileSync(join(dir, 'policy.yaml.tmp'), ROLE('replaced'))
  renameSync(join(dir, 'policy.yaml.tmp'), file)
  t.equal((await reloaded)[0].trigger, 'watch')
  t.same(roleNames(store), ['replaced'])

  const failed = next(store, 'reloadFailed')
  writeFileSync(file, BAD)
  await failed
  t.same(roleNames(store), ['replaced'], 'a bad edit leaves the policy in effect')

  store.close()
  t.equal(process.listenerCount('SIGHUP'), listeners, 'close removes the SIGHUP listener')
  writeFileSync(file, ROLE('after-close'))
  await new Promise(resolve => setTimeout(resolve, 100))
  t.same(roleNames(store), ['replaced'], 'nothing is reloaded after close')
})

t.test('SIGHUP reloads', async t => {
  const file = join(directory(), 'policy.yaml')
  writeFileSync(file, ROLE('first'))
  // A watcher that never fires, so the signal is the only trigger.
  const store = new PolicyStore({ watchDirectory: () => Object.assign(new EventEmitter(), { close () {} }) })
  t.teardown(() => { store.close() })
  store.load(file)
  writeFileSync(file, ROLE('signalled'))
  const reloaded = next(store, 'reload')
  process.kill(process.pid, 'SIGHUP')
  const [event] = await reloaded
  t.same([...event.policy.roles.keys()], ['signalled'])
  t.equal(event.trigger, 'SIGHUP')
})

t.test('file events are debounced, neighbours ignored, watch errors reported', async t => {
  const dir = directory()
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, ROLE('first'))
  const logger = recordingLogger()
  const watchers: Array<EventEmitter & { closed: boolean, directory: string }> = []
  const watchDirectory = (watched: string): DirectoryWatcher => {
    const watcher = Object.assign(new EventEmitter(), { closed: false, directory: watched, close () { watcher.closed = true } })
    watchers.push(watcher)
    return watcher
  }
  const store = new PolicyStore({ logger, debounceMs: 20, watchDirectory })
  t.teardown(() => { store.close() })
  store.load(file)
  t.equal(watchers.length, 1, 'load starts watching by default')
  t.equal(watchers[0]?.directory, dir, 'the directory, not the file')

  writeFileSync(file, ROLE('second'))
  let reloads = 0
  store.on('reload', () => { reloads++ })
  const reloaded = next(store, 'reload')
  for (let i = 0; i < 5; i++) watchers[0]?.emit('change')
  await reloaded
  await new Promise(resolve => setTimeout(resolve, 60))
  t.equal(reloads, 1, 'a burst of events is one reload')

  const before = logger.lines.length
  watchers[0]?.emit('change')
  await new Promise(resolve => setTimeout(resolve, 60))
  t.equal(logger.lines.length, before, 'an event that changed nothing in the file logs nothing')

  watchers[0]?.emit('error', new Error('EMFILE'))
  t.same(logger.lines.at(-1), ['error', { file, error: 'EMFILE' }, 'cannot watch the policy file; SIGHUP still reloads it'])

  watchers[0]?.emit('change')
  store.load(file)
  t.equal(watchers[0]?.closed, true, 'loading again replaces the watcher')
  t.equal(watchers.length, 2)
  await new Promise(resolve => setTimeout(resolve, 60))
  t.equal(reloads, 1, 'and drops the pending reload')
})
