import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import t from 'tap'
import { sha256Hex } from '../src/identity/api-key.js'
import { isMain, runCli, USAGE } from '../src/cli.js'
import { loadPolicy } from '../src/policy/load.js'

const EXAMPLE = fileURLToPath(new URL('policy/fixtures/example.yaml', import.meta.url))
const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url))

const dir = mkdtempSync(join(tmpdir(), 'rdg-cli-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
function file (name: string, text: string): string {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

async function run (...argv: string[]): Promise<{ code: number, out: string, err: string }> {
  const out: string[] = []
  const err: string[] = []
  const code = await runCli(argv, { out: text => { out.push(text) }, err: text => { err.push(text) } })
  return { code, out: out.join('\n'), err: err.join('\n') }
}

t.test('help and usage errors', async t => {
  for (const flag of ['--help', '-h', 'help']) t.same(await run(flag), { code: 0, out: USAGE, err: '' })
  t.same(await run(), { code: 2, out: '', err: `give a command\n\n${USAGE}` })
  t.same(await run('delete'), { code: 2, out: '', err: `unknown command "delete"\n\n${USAGE}` })
  t.match(await run('policy'), { code: 2, err: /^policy: use "policy check FILE" or "policy explain FILE \.\.\."/ })
  t.match(await run('policy', 'lint', EXAMPLE), { code: 2, err: /^policy: use/ })
})

t.test('apikey prints a new key once, with the policy lines for it', async t => {
  const { code, out, err } = await run('apikey', '--name', 'ci-cleaner', '--group', 'ci', '--group', 'deploy')
  t.equal(code, 0)
  t.equal(err, '')
  const key = /\n\n(rdg_[A-Za-z0-9_-]{43})\n/.exec(out)?.[1] as string
  t.ok(key, 'the key is printed')
  t.equal(out.split(key).length, 2, 'exactly once')
  t.match(out, /^API key for apikey:ci-cleaner \(shown only this once; keep it in a secret store\):/)
  t.match(out, /bind "apikey:ci-cleaner" \(or its groups, as keygroup:<group>\) to a role/)
  const snippet = out.slice(out.indexOf('apiKeys:'))
  t.equal(snippet, `apiKeys:\n  - name: ci-cleaner\n    sha256: ${sha256Hex(key)}\n    groups: ["ci", "deploy"]`)
  const policy = loadPolicy(snippet, 'pasted')
  t.same(policy.apiKeys.map(entry => [entry.name, entry.groups]), [['ci-cleaner', ['ci', 'deploy']]], 'the snippet loads as printed')

  const plain = await run('apikey')
  t.match(plain.out, /apikey:new-key[^]*groups: \[\]$/)
  t.not(/rdg_\S+/.exec(plain.out)?.[0], key, 'every key is new')
})

t.test('apikey refuses what would not load', async t => {
  const bad = await run('apikey', '--name', 'has space')
  t.equal(bad.code, 1)
  t.match(bad.err, /apiKeys\[0\]\.name: must be 1-64 letters/)
  t.equal(bad.out, '', 'no key is shown for a refused name')
  t.match(await run('apikey', '--nmae', 'x'), { code: 2, err: /Unknown option '--nmae'/ })
  t.match(await run('apikey', 'extra'), { code: 2, err: /^apikey takes no arguments, got extra/ })
})

t.test('policy check', async t => {
  t.same(await run('policy', 'check', EXAMPLE), {
    code: 0,
    out: `${EXAMPLE}: valid (2 API keys, 3 roles, 4 bound subjects, 1 chat user with groups, 2 protected-tags entries, JWT issuer https://sso.example.com/)`,
    err: ''
  })
  const single = file('single.yaml', `apiKeys: [{ name: a, sha256: ${'a'.repeat(64)} }]\nroles:\n  r: [{ actions: [read], repositories: ["**"] }]\nbindings: [{ role: r, subjects: ["apikey:a"] }]\nprotectedTags: [{ tags: [latest] }]\n`)
  t.equal((await run('policy', 'check', single)).out, `${single}: valid (1 API key, 1 role, 1 bound subject, 0 chat users with groups, 1 protected-tags entry, no JWT issuer)`)
  const bad = file('bad.yaml', 'roles:\n  admin: [{ actions: [nuke], repositories: ["Team/**"] }]\n')
  t.same(await run('policy', 'check', bad), {
    code: 1,
    out: '',
    err: `invalid policy ${bad}:\n  roles.admin[0].actions[0]: unknown action "nuke"; actions are read, delete, force, restore, audit, approve, admin, *\n  roles.admin[0].repositories[0]: "Team/**": "T" is not allowed; a repository pattern may use a-z, 0-9, ".", "_", "-", "/" and the wildcards * ** ?`
  })
  const mixed = file('mixed.yaml', `apiKeys: [{ name: a, sha256: ${'a'.repeat(64)}, groups: [ci] }]\nroles:\n  r: [{ actions: [read], repositories: ["**"] }]\nbindings: [{ role: r, subjects: ["group:ci", "group:dev", "keygroup:ci"] }]\n`)
  t.same(await run('policy', 'check', mixed), {
    code: 0,
    out: `${mixed}: valid (1 API key, 1 role, 3 bound subjects, 0 chat users with groups, 0 protected-tags entries, no JWT issuer)`,
    err: 'warning: group:ci binds an identity provider group, but "ci" is also a group of API keys; key groups are bound as keygroup:ci, so those keys do not get these roles'
  }, 'a group: binding named like a key group is flagged')
  const chat = file('chat.yaml', 'chatUsers: [{ subjects: ["slack:T1/U1"], groups: [oncall] }]\nroles:\n  r: [{ actions: [read], repositories: ["**"] }]\nbindings: [{ role: r, subjects: ["group:oncall", "keygroup:oncall", "chatgroup:oncall"] }]\n')
  const checked = await run('policy', 'check', chat)
  t.equal(checked.code, 0)
  t.equal(checked.err.split('\n').filter(line => /does not bind the chat users' group "oncall"; chat users' groups are bound as chatgroup:oncall/.test(line)).length, 2,
    'group: and keygroup: bindings named like a chat users\' group are flagged, chatgroup: is not')
  t.match(await run('policy', 'check', join(dir, 'missing.yaml')), { code: 1, err: /\(file\): cannot be read: ENOENT/ })
  t.match(await run('policy', 'check'), { code: 2, err: /^policy: give the policy FILE/ })
  t.match(await run('policy', 'check', EXAMPLE, '--strict'), { code: 2, err: /Unknown option '--strict'/ })
})

t.test('policy explain', async t => {
  const explain = async (...args: string[]) => await run('policy', 'explain', EXAMPLE, ...args)
  t.same(await explain('--subject', 'apikey:chat-bot', '--action', 'delete', '--image', 'team-a/app:pr-7'), {
    code: 0,
    out: 'ALLOW: apikey:chat-bot may delete team-a/app:pr-7 in registry default: role preview-cleaner allows it (roles.preview-cleaner[0])\nroles: preview-cleaner',
    err: ''
  })
  t.same(await explain('--subject', 'user:bob', '--group', 'ci', '--action', 'delete', '--image', 'team-a/app:pr-7'), {
    code: 1,
    out: 'DENY (FORBIDDEN): user:bob may not delete team-a/app:pr-7 in registry default: subject user:bob and its groups ci have no role\nroles: (none)',
    err: ''
  }, 'an identity provider group named ci does not get the roles of the API keys\' group ci')
  t.same(await explain('--subject', 'apikey:chat-bot', '--group', 'ci', '--action', 'delete', '--image', 'team-b/app:pr-7'), {
    code: 1,
    out: 'DENY (FORBIDDEN): apikey:chat-bot may not delete team-b/app:pr-7 in registry default: no rule of roles [preview-cleaner, auditor] allows delete on repository team-b/app\nroles: preview-cleaner, auditor',
    err: ''
  }, '--group gives an API key key groups')
  t.same((await explain('--subject', 'user:alice@example.com', '--action', 'delete', '--image', 'app:latest')).out,
    'DENY (PROTECTED_TAG): user:alice@example.com may not delete app:latest in registry default: the tag is protected by protectedTags[0]; nobody may delete it, admins included\nroles: admin, auditor')
  t.same((await explain('--subject', 'user:alice@example.com', '--action', 'read', '--image', 'app:x', '--registry', 'mirror')).code, 0, '--registry')
  t.same((await explain('--subject', 'user:nobody', '--action', 'read', '--image', 'app:v1')).out,
    'DENY (FORBIDDEN): user:nobody may not read app:v1 in registry default: subject user:nobody has no role\nroles: (none)')
  t.same((await explain('--subject', 'slack:T1/U9', '--action', 'read', '--image', 'app:v1')).out,
    'DENY (FORBIDDEN): slack:T1/U9 may not read app:v1 in registry default: subject slack:T1/U9 has no role\nroles: (none)', 'a Slack subject is explained like any other')
  t.match(await explain('--subject', 'slack:T1/UCAROL', '--action', 'delete', '--image', 'team-a/app:pr-7'),
    { code: 0, out: /^ALLOW: .*\nroles: preview-cleaner$/ }, 'a chat user gets the groups the policy\'s chatUsers give it (team-a-oncall → preview-cleaner)')
  t.match(await explain('--subject', 'user:carol', '--group', 'team-a-oncall', '--action', 'delete', '--image', 'team-a/app:pr-7'),
    { code: 1, out: /^DENY \(FORBIDDEN\)/ }, 'an identity provider group of the same name does not get a chat group\'s roles')
  const mattermost = `mattermost:${'t'.repeat(26)}/${'u'.repeat(26)}`
  t.match((await explain('--subject', mattermost, '--action', 'read', '--image', 'app:v1')).out, `DENY (FORBIDDEN): ${mattermost} may not read app:v1`, 'and so is a Mattermost subject')
  t.match(await explain('--subject', 'apikey:nobody', '--action', 'read', '--image', 'app:v1'), { code: 2, err: /apikey:nobody is not an API key of this policy/ })
  t.match(await explain('--subject', 'apikey:ci-cleaner', '--action', 'delete', '--image', 'team-a/app:pr-42'),
    { code: 0, out: /^ALLOW: .*\nroles: preview-cleaner/ }, 'an API key gets the groups the policy gives it (ci → preview-cleaner)')

  const usage: Array<[string[], RegExp]> = [
    [['--action', 'read', '--image', 'a:b'], /^policy explain needs --subject, --action and --image/],
    [['--subject', 'user:a', '--image', 'a:b'], /^policy explain needs/],
    [['--subject', 'user:a', '--action', 'read'], /^policy explain needs/],
    [['--subject', 'group:ci', '--action', 'read', '--image', 'a:b'], /^--subject must be apikey:<name>, user:<subject claim>, slack:<team id>\/<user id>, mattermost:<team id>\/<user id> or service:<retention.runAs>; give groups with --group/],
    [['--subject', 'user:a', '--action', 'nuke', '--image', 'a:b'], /^--action must be one of read, delete, force, restore, audit, approve/],
    [['--subject', 'user:a', '--action', 'read', '--image', 'app'], /^--image: image "app" is invalid: must be name:tag/],
    [['--subject', 'user:a', '--action', 'read', '--image', 'App:v1'], /^--image: name "App" is invalid/]
  ]
  for (const [args, message] of usage) t.match(await explain(...args), { code: 2, out: '', err: message }, args.join(' '))
  t.match(await run('policy', 'explain', '--subject', 'user:a', '--action', 'read', '--image', 'a:b'), { code: 2, err: /^policy: give the policy FILE/ })
  t.match(await run('policy', 'explain', join(dir, 'bad.yaml'), '--subject', 'user:a', '--action', 'read', '--image', 'a:b'), { code: 1, err: /^invalid policy/ })
})

t.test('serve hands over to the server module', async t => {
  const calls: Array<readonly string[]> = []
  const serve: { failure?: Error } = {}
  const { runCli: mockedRunCli } = await t.mockImport<typeof import('../src/cli.js')>('../src/cli.js', {
    '../src/server.js': {
      serve: async (argv: readonly string[]) => {
        calls.push(argv)
        if (serve.failure !== undefined) throw serve.failure
        return async () => {}
      }
    }
  })
  const err: string[] = []
  const io = { out: () => {}, err: (text: string) => { err.push(text) } }
  t.equal(await mockedRunCli(['serve', '--config', 'gateway.yaml'], io), 0)
  t.same(calls, [['--config', 'gateway.yaml']])
  serve.failure = new Error('no registry configured')
  t.equal(await mockedRunCli(['serve'], io), 1)
  t.same(err, ['registry-delete-gateway failed to start: no registry configured'])
})

t.test('runs when executed directly, also through a bin symlink', async t => {
  t.equal(isMain(undefined, import.meta.url), false)
  t.equal(isMain(join(dir, 'missing.js'), import.meta.url), false)
  t.equal(isMain(CLI, pathToFileURL(CLI).href), true)
  const link = join(dir, 'registry-delete-gateway')
  symlinkSync(CLI, link)
  t.equal(isMain(link, pathToFileURL(CLI).href), true)

  for (const script of [CLI, link]) {
    const help = spawnSync(process.execPath, [...process.execArgv, script, '--help'], { encoding: 'utf8' })
    t.equal(help.status, 0)
    t.equal(help.stdout, `${USAGE}\n`)
  }
  const failed = spawnSync(process.execPath, [...process.execArgv, CLI, 'policy', 'check', join(dir, 'missing.yaml')], { encoding: 'utf8' })
  t.equal(failed.status, 1)
  t.match(failed.stderr, /cannot be read: ENOENT\n$/)
})
