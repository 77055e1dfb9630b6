/** The rule language as pure functions: compiling refuses what cannot run, judging follows the precedence. */
import t from 'tap'
import {
  compileRules, judgeReferrer, judgeTags, MAX_REGEX_CHARS, MAX_REGEXES, MAX_REPETITION, parseDuration, referrerOf, REGEX_RULE, repetitionOf, REPETITION_RULE, type TagFacts
} from '../../src/cleanups/rules.js'
import type { CleanupRules } from '../../src/cleanups/shapes.js'
import { rejection } from '../fixtures/rejection.js'

const NOW = Date.parse('2026-12-02T00:00:00Z')
const DAY = 86_400_000
const daysAgo = (days: number): number => NOW - days * DAY
const unprotected = { now: NOW, protectedBy: () => undefined }

/** The tags each rule set removes, sorted, and the rule that kept each other tag. */
function judge (rules: CleanupRules, tags: TagFacts[], protectedBy: (tag: string) => string | undefined = () => undefined): { removed: string[], kept: Record<string, string> } {
  const verdicts = judgeTags(tags, compileRules(rules), { now: NOW, protectedBy })
  const removed = [...verdicts].filter(([, verdict]) => verdict.remove).map(([tag]) => tag).sort()
  const kept = Object.fromEntries([...verdicts].filter(([, verdict]) => !verdict.remove).map(([tag, verdict]) => [tag, verdict.rule]))
  return { removed, kept }
}

async function refusal (rules: CleanupRules): Promise<{ code: string, detail: string, extras: Record<string, unknown> }> {
  return await rejection((async () => compileRules(rules))())
}

t.test('select by glob, regex or semver range; exclude wins over select', async t => {
  const tags = ['pr-1', 'pr-2', 'v1.2.3', 'v2.0.0', '1.5.0', 'main', 'feature-x', 'latest'].map(tag => ({ tag }))
  t.same(judge({ select: [{ glob: 'pr-*' }] }, tags).removed, ['pr-1', 'pr-2'])
  t.same(judge({ select: [{ regex: '^feature-' }, { glob: 'main' }] }, tags).removed, ['feature-x', 'main'])
  t.same(judge({ select: [{ semver: '>=1.2 <2' }] }, tags).removed, ['1.5.0', 'v1.2.3'], 'a leading v is a version; main is none')
  t.same(judge({ select: [{ semver: '*', regex: '^v' }] }, tags).removed, ['v1.2.3', 'v2.0.0'], 'fields of one match must all match')
  const excluded = judge({ select: [{ glob: 'pr-*' }], exclude: [{ regex: '2$' }] }, tags)
  t.same(excluded.removed, ['pr-1'])
  t.equal(excluded.kept['pr-2'], 'exclude[0]')
  t.equal(excluded.kept.main, 'select')
  t.same(judge({}, [{ tag: 'a' }, { tag: 'b' }]).removed, ['a', 'b'], 'no select: every tag')
})

t.test('precedence: protected > keep > delete, each named', async t => {
  const tags = ['latest', 'stable', 'old'].map(tag => ({ tag, created: daysAgo(100) }))
  const verdicts = judgeTags(tags, compileRules({ keep: { tags: [{ glob: 'stable' }, { glob: 'latest' }] } }), {
    now: NOW,
    protectedBy: tag => tag === 'latest' ? 'the tag is protected by protectedTags[0]' : undefined
  })
  t.same(verdicts.get('latest'), { remove: false, rule: 'protected', reason: 'the tag is protected by protectedTags[0]' })
  t.same(verdicts.get('stable'), { remove: false, rule: 'keep.tags[0]', reason: 'keep.tags[0] matches it' })
  t.same(verdicts.get('old'), { remove: true, rule: 'select', reason: 'every tag is selected, no keep rule does' })
})

t.test('keep the newest N per group by a named capture; unknown times rank last; unmatched tags form a group', async t => {
  const tags: TagFacts[] = [
    { tag: 'main-1', created: daysAgo(30) }, { tag: 'main-2', created: daysAgo(20) }, { tag: 'main-3', created: daysAgo(10) },
    { tag: 'dev-1', created: daysAgo(5) }, { tag: 'dev-2' }, { tag: 'dev-3', created: daysAgo(6) },
    { tag: 'x', created: daysAgo(1) }, { tag: 'y', created: daysAgo(2) }, { tag: 'z', created: daysAgo(2) }
  ]
  const rules: CleanupRules = { groupBy: { regex: '^(?<branch>.+)-\\d+$', capture: 'branch' }, keep: { newest: 2 } }
  const result = judge(rules, tags)
  t.same(result.removed, ['dev-2', 'main-1', 'z'], 'equal times are ranked by name')
  t.same(result.kept, { 'main-2': 'keep.newest', 'main-3': 'keep.newest', 'dev-1': 'keep.newest', 'dev-3': 'keep.newest', x: 'keep.newest', y: 'keep.newest' })
  const reasons = judgeTags(tags, compileRules(rules), unprotected)
  t.equal(reasons.get('main-3')?.reason, 'it is number 1 of the 2 newest of group "main"')
  t.equal(reasons.get('x')?.reason, 'it is number 1 of the 2 newest of the tags groupBy does not match')
  const unnamed = judge({ groupBy: { regex: '^([a-z]+)-' }, keep: { newest: 1 } }, tags)
  t.same(unnamed.removed, ['dev-2', 'dev-3', 'main-1', 'main-2', 'y', 'z'], 'the first group without a name')
  const whole = judge({ groupBy: { regex: '^[a-z]+' }, keep: { newest: 1 } }, tags)
  t.same(whole.removed, ['dev-2', 'dev-3', 'main-1', 'main-2'], 'no group: the whole match, so x, y and z are groups of one')
  const perRepository = judgeTags(tags, compileRules({ keep: { newest: 1 } }), unprotected)
  t.equal(perRepository.get('x')?.reason, 'it is number 1 of the 1 newest of the repository')
  t.equal([...perRepository.values()].filter(verdict => verdict.remove).length, 8)
})

t.test('newest N counts only selected tags, and keep rules still keep their own', async t => {
  const tags: TagFacts[] = [
    { tag: 'pr-1', created: daysAgo(3) }, { tag: 'pr-2', created: daysAgo(2) }, { tag: 'main', created: daysAgo(1) }
  ]
  t.same(judge({ select: [{ glob: 'pr-*' }], keep: { newest: 1 } }, tags), { removed: ['pr-1'], kept: { 'pr-2': 'keep.newest', main: 'select' } })
})

t.test('keepNewerThan and deleteOlderThan; an unknown age is never old enough', async t => {
  const tags: TagFacts[] = [{ tag: 'fresh', created: daysAgo(2) }, { tag: 'middle', created: daysAgo(10) }, { tag: 'old', created: daysAgo(30) }, { tag: 'unknown' }]
  t.same(judge({ keep: { newerThan: '1w' } }, tags), { removed: ['middle', 'old', 'unknown'], kept: { fresh: 'keep.newerThan' } })
  t.same(judge({ deleteOlderThan: '14d' }, tags), { removed: ['old'], kept: { fresh: 'deleteOlderThan', middle: 'deleteOlderThan', unknown: 'deleteOlderThan' } })
  const verdicts = judgeTags(tags, compileRules({ select: [{ glob: '*' }], deleteOlderThan: '14d', keep: { newerThan: '3d' } }), unprotected)
  t.same(verdicts.get('fresh'), { remove: false, rule: 'keep.newerThan', reason: 'it was created 2026-11-30T00:00:00.000Z, less than 3d ago' })
  t.same(verdicts.get('unknown'), { remove: false, rule: 'deleteOlderThan', reason: 'its creation time is unknown' })
  t.same(verdicts.get('middle'), { remove: false, rule: 'deleteOlderThan', reason: 'it was created 2026-11-22T00:00:00.000Z, not more than 14d ago' })
  t.same(verdicts.get('old'), {
    remove: true, rule: 'deleteOlderThan', reason: 'select[0] matches it, no keep rule does, and it was created 2026-11-02T00:00:00.000Z, more than 14d ago'
  })
})

t.test('durations', async t => {
  t.equal(parseDuration('1w2d3h4m5s', 'd'), 7 * DAY + 2 * DAY + 3 * 3_600_000 + 4 * 60_000 + 5000)
  t.equal(parseDuration('90m', 'd'), 90 * 60_000)
  for (const bad of ['', '14', 'd', '1h1d', '1.5d', ' 1d']) {
    const error = await rejection((async () => parseDuration(bad, 'rules.deleteOlderThan'))())
    t.match(error, { code: 'INVALID_REQUEST', extras: { field: 'rules.deleteOlderThan' } }, JSON.stringify(bad))
  }
  t.match(await refusal({ keep: { newerThan: 'soon' } }), { extras: { field: 'rules.keep.newerThan' } })
  t.match(await refusal({ deleteOlderThan: '3 days' }), { extras: { field: 'rules.deleteOlderThan' } })
})

t.test('refusals name the field and the rule: bad regex, back-reference, look-ahead, glob, range, empty match, capture', async t => {
  t.match(await refusal({ select: [{ regex: '(' }] }), { code: 'INVALID_REQUEST', extras: { field: 'rules.select[0].regex', rule: REGEX_RULE } })
  const backReference = await refusal({ exclude: [{ glob: 'x' }, { regex: '^(a+)+\\1$' }] })
  t.match(backReference, { extras: { field: 'rules.exclude[1].regex', rule: REGEX_RULE } })
  t.match(backReference.detail, /invalid escape sequence: `\\1`/)
  t.match(await refusal({ keep: { tags: [{ regex: '^(?=(a+)+$)' }] } }), { extras: { field: 'rules.keep.tags[0].regex' } })
  t.match(await refusal({ groupBy: { regex: '(?<=x)y' } }), { extras: { field: 'rules.groupBy.regex' } })
  t.match(await refusal({ select: [{ glob: 'a/b' }] }), { extras: { field: 'rules.select[0].glob' } })
  t.match(await refusal({ select: [{ semver: 'one or two' }] }), { extras: { field: 'rules.select[0].semver', rule: 'a semver range (npm syntax)' } })
  t.match(await refusal({ select: [{}] }), { extras: { field: 'rules.select[0]', rule: 'at least one of glob, regex, semver' } })
  t.match(await refusal({ groupBy: { capture: 'branch' } }), { extras: { field: 'rules.groupBy.capture', rule: 'needs groupBy.regex' } })
  t.match(await refusal({ groupBy: { regex: '^(?<b>.+)-\\d+$', capture: 'branch' } }), { extras: { field: 'rules.groupBy.capture' } })
  t.match(await rejection((async () => compileRules({ select: [{ regex: '[' }] }, 'retention.policies[2].rules'))()), { extras: { field: 'retention.policies[2].rules.select[0].regex' } })
})

t.test('a pattern that backtracks catastrophically elsewhere runs in linear time here', async t => {
  const rules = compileRules({ select: [{ regex: '^(a+)+$' }, { regex: '^(a|aa)*c$' }] })
  const tag = `${'a'.repeat(127)}!`
  const started = performance.now()
  const verdicts = judgeTags([{ tag }], rules, unprotected)
  t.equal(verdicts.get(tag)?.rule, 'select', 'neither matches')
  t.ok(performance.now() - started < 1000, 'answered at once (a backtracking engine would take years)')
})

t.test('cosign referrer tags are recognised and follow their subject', async t => {
  const hex = 'a'.repeat(64)
  t.same(referrerOf(`sha256-${hex}.sig`), { subject: `sha256:${hex}`, kind: 'sig' })
  t.same(referrerOf(`sha256-${hex}.att`)?.kind, 'att')
  t.same(referrerOf(`sha256-${hex}.sbom`)?.kind, 'sbom')
  t.equal(referrerOf(`sha256-${hex}.txt`), undefined)
  t.equal(referrerOf('sha256-abc.sig'), undefined)
  const tag = `sha256-${hex}.sig`
  const rules = compileRules({})
  t.match(judgeReferrer(tag, 'deleted', rules, unprotected), { remove: true, rule: 'referrers', reason: `it is about sha256:${hex}, which this cleanup deletes` })
  t.match(judgeReferrer(tag, 'deleted', compileRules({ referrers: 'keep' }), unprotected), { remove: false, rule: 'referrers' })
  t.match(judgeReferrer(tag, 'kept', rules, unprotected), { remove: false, rule: 'referrers', reason: `it is about sha256:${hex}, which stays in the repository` })
  t.match(judgeReferrer(tag, 'absent', rules, unprotected), { remove: false, rule: 'orphanedReferrers' })
  t.match(judgeReferrer(tag, 'absent', compileRules({ orphanedReferrers: true }), unprotected), { remove: true, rule: 'orphanedReferrers' })
  t.match(judgeReferrer(tag, 'deleted', compileRules({ exclude: [{ glob: '*.sig' }] }), unprotected), { remove: false, rule: 'exclude[0]' })
  t.match(judgeReferrer(tag, 'deleted', rules, { protectedBy: () => 'protected by protectedTags[1]' }), { remove: false, rule: 'protected', reason: 'protected by protectedTags[1]' })
})

t.test('ties and groups a pattern leaves empty', async t => {
  const same = ['c', 'b', 'a'].map(tag => ({ tag, created: daysAgo(1) }))
  t.same(judge({ keep: { newest: 1 } }, same), { removed: ['b', 'c'], kept: { a: 'keep.newest' } }, 'equal times: by name')
  const optional = judgeTags([{ tag: 'v1', created: daysAgo(1) }, { tag: 'v2', created: daysAgo(2) }], compileRules({ groupBy: { regex: '(rc)?\\d' }, keep: { newest: 1 } }), unprotected)
  t.equal(optional.get('v1')?.reason, 'it is number 1 of the 1 newest of group ""', 'a group that took no part is the empty name, not the unmatched tags')
  t.equal(optional.get('v2')?.remove, true)
})

t.test('a request\'s regexes are held to a budget before any is compiled: count, length, counted repetitions', async t => {
  const heavy = '(?:[a-z]{0,1000}){1}'.repeat(49)
  const started = performance.now()
  t.match(await refusal({ select: [{ regex: heavy }] }), { code: 'INVALID_REQUEST', extras: { field: 'rules.select[0].regex', rule: REPETITION_RULE } })
  t.match(await refusal({ exclude: [{ regex: '[a-z]{0,1000}' }, { regex: '(?:(?:a{0,100}){0,100})' }] }),
    { extras: { field: 'rules.exclude[1].regex', rule: REPETITION_RULE } }, 'nested counts multiply')
  const many = Array.from({ length: 301 }, () => ({ regex: '^pr-' }))
  t.match(await refusal({ select: many }), { extras: { field: `rules.select[${MAX_REGEXES}].regex`, rule: `at most ${MAX_REGEXES} regexes per cleanup` } })
  const long = Array.from({ length: 5 }, () => ({ regex: 'a'.repeat(1000) }))
  t.match(await refusal({ keep: { tags: long } }), { extras: { field: 'rules.keep.tags[4].regex', rule: `at most ${MAX_REGEX_CHARS} characters of regex per cleanup` } })
  t.match(await refusal({ groupBy: { regex: '(x{0,999}y{0,999}){2}' } }), { extras: { field: 'rules.groupBy.regex' } })
  compileRules({ select: [{ regex: `^(?:ab{${MAX_REPETITION / 2}})$` }] })
  t.ok(performance.now() - started < 200, 'refused without compiling')
  t.same(judge({ select: [{ regex: '^v\\d{1,3}\\.\\d{1,3}\\.[0-9a-f]{40}$' }] }, [{ tag: `v1.2.${'a'.repeat(40)}` }, { tag: 'v1.2' }]).removed, [`v1.2.${'a'.repeat(40)}`])
  t.equal(repetitionOf('^sha256-[a-f0-9]{64}(?:\\.sig)?$'), 64)
  t.equal(repetitionOf('(?:[a-z]{0,1000}){1}'), 2000, 'the outer count copies the inner one')
  t.equal(repetitionOf('(?:ab){3,}[\\]a]{2}\\p{Greek}{5}\\x{41}\\Q{9}\\E[[:alpha:]]{4}[^]]{1}'), 4 * 2 + 2 + 5 + 4 + 1, 'escapes, classes and open counts')
  t.equal(repetitionOf('(?P<v>a{3})(?i)\\Qb{9}'), 3, 'group prefixes are no atoms; an unclosed \\Q runs to the end')
  t.equal(repetitionOf('a{2}\\p{Greek'), 2, 'so does an unclosed \\p{')
  t.equal(repetitionOf('a)b{2'), 0, 'unbalanced text costs nothing more (RE2 refuses it)')
  t.match(await refusal({ select: [{ regex: 'a{1500}' }], exclude: [{ regex: 'b{501}' }] }), { extras: { field: 'rules.exclude[0].regex', rule: REPETITION_RULE } },
    'the expansions of one request add up')
  const worst = Array.from({ length: MAX_REGEXES }, (_, index) => ({ regex: `^${index}(?:[a-z0-9]{0,${MAX_REPETITION / MAX_REGEXES}})$` }))
  const timed = performance.now()
  compileRules({ select: worst })
  t.ok(performance.now() - timed < 2000, `the worst allowed request compiles in ${Math.round(performance.now() - timed)} ms`)
})
