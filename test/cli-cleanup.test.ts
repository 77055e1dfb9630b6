/** `cleanup plan` and `cleanup run` against a running gateway and a real registry. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { runCli } from '../src/cli.js'
import { startRegistry } from '../testing/registry-process.js'
import { daysBefore, pushCreated } from './fixtures/cleanup-seed.js'
import { startFaultProxy } from './fixtures/fault-proxy.js'
import { ADMIN_KEY, startGateway } from './fixtures/gateway.js'
import { registryClient } from './fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const gateway = await startGateway(t, { registries: { default: { url: registry.url } } })
const url = await gateway.app.listen({ host: '127.0.0.1', port: 0 })
const dir = mkdtempSync(join(tmpdir(), 'rdg-cli-cleanup-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })

async function run (argv: string[], tty = false): Promise<{ code: number, out: string, err: string, progress: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const progress: string[] = []
  const io = { out: (text: string) => { out.push(text) }, err: (text: string) => { err.push(text) }, ...(tty ? { progress: (text: string) => { progress.push(text) } } : {}) }
  const code = await runCli(argv, io)
  return { code, out: out.join('\n'), err: err.join('\n'), progress }
}

async function seed (name: string): Promise<string> {
  for (const tag of ['pr-1', 'pr-2', 'release']) await pushCreated({ url: registry.url }, name, [tag], daysBefore(Date.now(), 30))
  const file = join(dir, `${name.replace('/', '-')}.yaml`)
  writeFileSync(file, `repositories: ["${name}"]\nrules:\n  select: [{ glob: "pr-*" }]\n`)
  return file
}

async function tagsNow (name: string): Promise<string[]> {
  const client = registryClient('check', registry.url)
  try {
    return (await client.listTags(name).catch(() => [])).sort()
  } finally {
    await client.close()
  }
}

const connection = ['--gateway', url, '--api-key', ADMIN_KEY]

t.test('plan prints removed, kept and refused tags with rule and reason; nothing changes', async t => {
  const file = await seed('cli/plan')
  const { code, out, err } = await run(['cleanup', 'plan', file, ...connection])
  t.equal(code, 0, err)
  t.match(out, /^REMOVED \(2\)\n {2}cli\/plan:pr-1 {2}select\[0\] \[deleted-digest\]: .*\n {2}cli\/plan:pr-2 .*\nKEPT \(1\)\n {2}cli\/plan:release {2}select: no select rule matches it\nREFUSED \(0\)\ncleanup cleanup_[0-9a-f]{32}: 2 to remove, 1 kept, 0 refused, 0 not shown \(you may not read them\)$/)
  t.same(await tagsNow('cli/plan'), ['pr-1', 'pr-2', 'release'])
})

t.test('run: plain lines without a terminal, a progress bar on one; the cap refuses', async t => {
  const file = await seed('cli/run')
  const capped = await run(['cleanup', 'run', file, ...connection, '--max-deletions', '1'])
  t.equal(capped.code, 1)
  t.match(capped.err, /execute: 400 INVALID_REQUEST \(field maxDeletions\): .*removes 2 tags, more than maxDeletions \(1\)/)
  t.same(await tagsNow('cli/run'), ['pr-1', 'pr-2', 'release'], 'nothing executed')

  const plain = await run(['cleanup', 'run', file, ...connection])
  t.equal(plain.code, 0, plain.err)
  t.match(plain.out, /\n(done cli\/run:pr-[12]\n){2}cleanup cleanup_[0-9a-f]{32} done: 2 removed, 0 stale, 0 failed, 0 skipped \(undo: POST \/cleanups\/cleanup_[0-9a-f]{32}\/restore\)$/)
  t.same(await tagsNow('cli/run'), ['release'])

  const ttyFile = await seed('cli/tty')
  const tty = await run(['cleanup', 'run', ttyFile, ...connection], true)
  t.equal(tty.code, 0)
  t.same(tty.progress, [
    '[##########----------] 1/2 done 1 stale 0 failed 0 skipped 0',
    '[####################] 2/2 done 2 stale 0 failed 0 skipped 0',
    '[####################] 2/2 done 2 stale 0 failed 0 skipped 0\n'
  ])
  t.notMatch(tty.out, /^done /m, 'no per-tag lines on a terminal')

  const nothing = join(dir, 'nothing.yaml')
  writeFileSync(nothing, 'repositories: ["cli/tty"]\nrules:\n  select: [{ glob: "nope-*" }]\n')
  const empty = await run(['cleanup', 'run', nothing, ...connection], true)
  t.match(empty, { code: 0, progress: ['[####################] 0/0 done 0 stale 0 failed 0 skipped 0\n'] }, 'nothing to remove: done at once')
})

t.test('behind a balancer that sends the event stream to a replica not running the cleanup: progress from its counts', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const auditPath = join(dir, 'replicas.db')
  const settings = { registries: { default: { url: proxy.url } }, auditPath, config: { cleanups: { runConcurrency: 1, pollMs: 20 } } }
  const runner = await startGateway(t, settings)
  const follower = await startGateway(t, settings)
  const [runnerUrl, followerUrl] = [await runner.app.listen({ host: '127.0.0.1', port: 0 }), await follower.app.listen({ host: '127.0.0.1', port: 0 })]
  let streams = 0
  const balancer = createServer((incoming, outgoing) => {
    const events = (incoming.url ?? '').endsWith('/events')
    if (events) streams++
    const forwarded = httpRequest(`${events ? followerUrl : runnerUrl}${incoming.url ?? '/'}`, { method: incoming.method, headers: incoming.headers }, answer => {
      outgoing.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(outgoing)
    })
    incoming.pipe(forwarded)
  })
  await new Promise<void>(resolve => balancer.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { balancer.closeAllConnections(); balancer.close() })
  const through = ['--gateway', `http://127.0.0.1:${(balancer.address() as { port: number }).port}`, '--api-key', ADMIN_KEY]

  const deletes = (): number => proxy.requests.filter(request => request.method === 'DELETE').length
  const hold = (times?: number): () => void => {
    let release: () => void = () => {}
    const remove = proxy.fault({ method: 'DELETE', ...(times === undefined ? {} : { times }), action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) } })
    return () => { remove(); release() }
  }
  const until = async (what: () => boolean): Promise<void> => {
    while (!what()) await new Promise(resolve => setTimeout(resolve, 10))
  }
  for (const tty of [false, true]) {
    const file = await seed(`cli/balanced-${String(tty)}`)
    // The first removal is held until the follower streams, the second until it has shown the first's counts.
    const [first, second] = [hold(1), hold()]
    const lines: string[] = []
    const out: string[] = []
    const io = { out: (text: string) => { out.push(text); if (text.startsWith('[')) lines.push(text) }, err: () => {}, ...(tty ? { progress: (text: string) => { lines.push(text) } } : {}) }
    const [before, deleted] = [streams, deletes()]
    const running = runCli(['cleanup', 'run', file, ...through], io)
    await until(() => streams > before && deletes() > deleted)
    first()
    await until(() => lines.length > 0)
    t.match(lines[0], /1\/2 done 1 stale 0 failed 0 skipped 0/, `the follower's counts shown as progress (${tty ? 'terminal' : 'plain'})`)
    second()
    t.equal(await running, 0)
    t.match(out.at(-1), /cleanup cleanup_[0-9a-f]{32} done: 2 removed/)
  }
})

t.test('usage errors', async t => {
  t.match(await run(['cleanup']), { code: 2, err: /^cleanup: use "cleanup plan FILE" or "cleanup run FILE"/ })
  t.match(await run(['cleanup', 'plan']), { code: 2, err: /^cleanup: give one FILE/ })
  t.match(await run(['cleanup', 'plan', 'x.yaml']), { code: 2, err: /^cleanup: give --gateway URL and --api-key KEY/ })
  t.match(await run(['cleanup', 'plan', 'x.yaml', '--bogus']), { code: 2, err: /Unknown option '--bogus'/ })
  t.match(await run(['cleanup', 'run', 'x.yaml', ...connection, '--max-deletions', '0']), { code: 2, err: /--max-deletions takes a positive integer/ })
  t.match(await run(['cleanup', 'plan', join(dir, 'missing.yaml'), ...connection]), { code: 2, err: /^cleanup: cannot read .*missing\.yaml/ })
  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, 'repositories: []\nrules: {}\n')
  t.match(await run(['cleanup', 'plan', bad, ...connection]), { code: 1, err: /POST \/cleanups: 400 INVALID_REQUEST \(field repositories\)/ })
  t.match(await run(['cleanup', 'plan', bad, '--gateway', url, '--api-key', 'rdg_not-a-key']), { code: 1, err: /POST \/cleanups: 401 UNAUTHENTICATED: / }, 'no field to name')
})
