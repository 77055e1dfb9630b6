import t from 'tap'
import { compileGlob, GlobError, type GlobKind } from '../../src/policy/glob.js'

t.test('matching', async t => {
  const cases: Array<[GlobKind, string, string[], string[]]> = [
    // kind, pattern, matches, does not match
    ['repository', 'team-a/app', ['team-a/app'], ['team-a/app2', 'team-a', 'x/team-a/app']],
    ['repository', 'team-a/*', ['team-a/app', 'team-a/'], ['team-a/x/app', 'team-b/app', 'team-a']],
    ['repository', 'team-a/**', ['team-a/app', 'team-a/x/y/app'], ['team-a', 'team-b/app', 'team-ab/app']],
    ['repository', '**', ['app', 'a/b/c'], []],
    ['repository', '**/app', ['app', 'x/app', 'x/y/app'], ['x/app2', 'xapp']],
    ['repository', 'a/**/b', ['a/b', 'a/x/b', 'a/x/y/b'], ['a/xb', 'ab', 'a/b/c']],
    ['repository', '**/**', ['a', 'a/b'], []],
    ['repository', 'team-?/app', ['team-a/app', 'team-b/app'], ['team-/app', 'team-ab/app', 'team//app']],
    ['repository', '*-svc', ['a-svc', '-svc'], ['a/b-svc']],
    ['repository', 'app.v1', ['app.v1'], ['appxv1']],
    ['tag', 'pr-*', ['pr-1', 'pr-', 'pr-1.2'], ['v1', 'xpr-1']],
    ['tag', 'v*.*.*', ['v1.2.3', 'v10.0.0-rc1', 'v1.2.3.4'], ['v1.2', '1.2.3']],
    ['tag', 'v?', ['v1'], ['v', 'v10']],
    ['tag', 'latest', ['latest'], ['latest2', 'Latest']],
    ['registry', 'mirror-*', ['mirror-eu'], ['default']]
  ]
  for (const [kind, pattern, matching, other] of cases) {
    const glob = compileGlob(pattern, kind)
    t.equal(glob.pattern, pattern)
    for (const value of matching) t.ok(glob.matches(value), `${pattern} matches ${value}`)
    for (const value of other) t.notOk(glob.matches(value), `${pattern} does not match ${value}`)
  }
})

t.test('patterns are checked when compiled', async t => {
  const cases: Array<[GlobKind, string, RegExp]> = [
    ['repository', '', /must not be empty/],
    ['repository', 'a'.repeat(256), /at most 255 characters/],
    ['repository', 'Team/app', /"T" is not allowed; a repository pattern may use a-z/],
    ['repository', 'team/[ab]', /"\[" is not allowed/],
    ['repository', '/team', /must not start or end with \/ nor contain \/\//],
    ['repository', 'team/', /must not start or end with/],
    ['repository', 'team//app', /nor contain \/\//],
    ['repository', 'team-**', /\*\* must be a whole path segment/],
    ['repository', 'a/***', /\*\* must be a whole path segment/],
    ['tag', '**', /a tag has no \/, use \*/],
    ['tag', 'v1/x', /"\/" is not allowed; a tag pattern may use/],
    ['registry', 'mirror**', /a registry has no \//],
    ['registry', 'my registry', /" " is not allowed/]
  ]
  for (const [kind, pattern, message] of cases) {
    t.throws(() => compileGlob(pattern, kind), message, `${kind} ${pattern}`)
    t.throws(() => compileGlob(pattern, kind), GlobError)
  }
})

t.test('a compiled glob is immutable', async t => {
  const glob = compileGlob('a/*', 'repository')
  t.ok(Object.isFrozen(glob))
})
