/**
 * The cleanup rule language, as pure functions: rules are compiled once (every pattern checked, a bad one refused
 * with the field and the rule it breaks), then judged against the tags of one repository with their creation
 * times. Nothing here reads the registry or the policy: protection comes in as a function, so the order of
 * precedence (protected > keep > delete) is decided in one place and tested without either.
 */
import { RE2JS } from 're2js'
import semver from 'semver'
import { invalidField } from '../errors.js'
import { compileGlob, GlobError } from '../policy/glob.js'
import { DURATION, type CleanupRules, type TagMatch } from './shapes.js'

/** The RE2 rule every regex is held to, as a 400 names it. */
export const REGEX_RULE = 'RE2 syntax, run in linear time: no back-references, look-ahead or look-behind'

interface CompiledMatch { matches: (tag: string) => boolean }

/**
 * RE2 runs in time linear in the tag, but compiling costs what the pattern expands to: x{0,1000} is x copied a
 * thousand times, and nested counts multiply. One request's patterns are held to these together, checked on the
 * text before any is compiled.
 */
export const MAX_REGEXES = 20
export const MAX_REGEX_CHARS = 4096
export const MAX_REPETITION = 2000
export const REPETITION_RULE = `counted repetitions ({m,n}) expanding to at most ${MAX_REPETITION} atoms per cleanup`

/** Where a regex sits in the rules, with its text, in the order compileRules meets them. */
function regexesOf (rules: CleanupRules, field: string): Array<{ field: string, pattern: string }> {
  const inList = (matches: readonly TagMatch[] | undefined, at: string): Array<{ field: string, pattern: string }> =>
    (matches ?? []).flatMap((match, index) => match.regex === undefined ? [] : [{ field: `${at}[${index}].regex`, pattern: match.regex }])
  return [
    ...inList(rules.select, `${field}.select`),
    ...inList(rules.exclude, `${field}.exclude`),
    ...inList(rules.keep?.tags, `${field}.keep.tags`),
    ...(rules.groupBy?.regex === undefined ? [] : [{ field: `${field}.groupBy.regex`, pattern: rules.groupBy.regex }])
  ]
}

/** A quantifier {m}, {m,} or {m,n} at `at`: the most copies RE2 makes of its atom, else undefined. */
function countAt (pattern: string, at: number): { copies: number, length: number } | undefined {
  const found = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(at, at + 24))
  if (found === null) return undefined
  const least = Number(found[1])
  const most = found[2] === undefined ? least : found[3] === '' ? least + 1 : Number(found[3])
  return { copies: Math.max(least, most, 1), length: found[0].length }
}

/** The end (exclusive) of the character class opening at `at`: a leading ] or ^] is a member, [:name:] is one. */
function classEnd (pattern: string, at: number): number {
  let index = at + 1
  if (pattern[index] === '^') index++
  if (pattern[index] === ']') index++
  while (index < pattern.length && pattern[index] !== ']') {
    if (pattern[index] === '\\') index += 2
    else if (pattern.startsWith('[:', index)) index = Math.max(pattern.indexOf(':]', index + 2) + 2, index + 1)
    else index++
  }
  return index + 1
}

/** The end (exclusive) of the escape at `at`: \p{Greek}, \x{41} and \Q…\E run on, the rest are two characters. */
function escapeEnd (pattern: string, at: number): number {
  const next = pattern[at + 1]
  const until = (end: string): number => pattern.indexOf(end, at) < 0 ? pattern.length : pattern.indexOf(end, at) + end.length
  if ((next === 'p' || next === 'P' || next === 'x') && pattern[at + 2] === '{') return until('}')
  if (next === 'Q') return until('\\E')
  return at + 2
}

/**
 * Approximately what the counted repetitions of a pattern expand to: the sum, over every {m,n}, of n times the
 * size of its atom, an atom that is a group counting its own expansion. An estimate from the text: it errs on the
 * generous side for alternations, which is fine for a limit.
 */
export function repetitionOf (pattern: string): number {
  const frames: Array<{ size: number, last: number }> = [{ size: 0, last: 0 }]
  let cost = 0
  let index = 0
  while (index < pattern.length) {
    const frame = frames[frames.length - 1] as { size: number, last: number }
    const char = pattern[index] as string
    if (char === '(') {
      frames.push({ size: 0, last: 0 })
      index++
      // (?:, (?P<name>, (?<name>, (?i): the group's prefix is no atom.
      if (pattern[index] === '?') while (index < pattern.length && !':>)'.includes(pattern[index] as string)) index++
      if (pattern[index] === ':' || pattern[index] === '>') index++
      continue
    }
    let atom = 1
    if (char === ')') {
      if (frames.length > 1) frames.pop()
      const closed = frame.size
      atom = Math.max(closed, 1)
      index++
    } else if (char === '{' && countAt(pattern, index) !== undefined) {
      const count = countAt(pattern, index) as { copies: number, length: number }
      cost += count.copies * frame.last
      frame.size += frame.last * (count.copies - 1)
      frame.last *= count.copies
      index += count.length
      continue
    } else if (char === '[') {
      index = classEnd(pattern, index)
    } else if (char === '\\') {
      index = escapeEnd(pattern, index)
    } else {
      index++
      if ('|*+?^$'.includes(char)) continue
    }
    const into = frames[frames.length - 1] as { size: number, last: number }
    into.size += atom
    into.last = atom
  }
  return cost
}

/** One request's regexes, checked together before any is compiled: how many, how long, how far they expand. */
function checkRegexBudget (rules: CleanupRules, field: string): void {
  const regexes = regexesOf(rules, field)
  let chars = 0
  let expanded = 0
  regexes.forEach((regex, index) => {
    if (index >= MAX_REGEXES) {
      throw invalidField(regex.field, `at most ${MAX_REGEXES} regexes per cleanup`,
        `${regex.field}: the rules hold ${regexes.length} regexes, at most ${MAX_REGEXES} per cleanup; use globs or fewer, broader patterns.`)
    }
    chars += regex.pattern.length
    if (chars > MAX_REGEX_CHARS) {
      throw invalidField(regex.field, `at most ${MAX_REGEX_CHARS} characters of regex per cleanup`,
        `${regex.field}: the rules' regexes are ${chars} characters long up to here, at most ${MAX_REGEX_CHARS} per cleanup.`)
    }
    expanded += repetitionOf(regex.pattern)
    if (expanded > MAX_REPETITION) {
      throw invalidField(regex.field, REPETITION_RULE,
        `${regex.field} is refused: the counted repetitions of the rules' regexes expand to about ${expanded} atoms up to here, at most ${MAX_REPETITION} per cleanup; use * or + instead of large counts.`)
    }
  })
}

export interface CompiledRules {
  readonly source: CleanupRules
  /** Undefined: every tag is selected. */
  readonly select?: CompiledMatch[]
  readonly exclude: CompiledMatch[]
  readonly keepTags: CompiledMatch[]
  readonly groupOf: (tag: string) => string
  readonly keepNewest?: number
  readonly keepNewerThanMs?: number
  readonly deleteOlderThanMs?: number
  readonly referrers: 'delete' | 'keep'
  readonly orphanedReferrers: boolean
}

function compileRegex (pattern: string, field: string): RE2JS {
  try {
    return RE2JS.compile(pattern)
  } catch (error) {
    // RE2 refuses what it cannot run in linear time (and plain syntax errors): the caller gets its words.
    throw invalidField(field, REGEX_RULE, `${field} is refused: ${(error as Error).message}. Patterns are run by a linear-time engine (${REGEX_RULE}).`)
  }
}

function compileMatch (match: TagMatch, field: string): CompiledMatch {
  const tests: Array<(tag: string) => boolean> = []
  if (match.glob !== undefined) {
    try {
      const glob = compileGlob(match.glob, 'tag')
      tests.push(tag => glob.matches(tag))
    } catch (error) {
      const rule = (error as GlobError).message
      throw invalidField(`${field}.glob`, rule, `${field}.glob ${JSON.stringify(match.glob)}: ${rule}.`)
    }
  }
  if (match.regex !== undefined) {
    const regex = compileRegex(match.regex, `${field}.regex`)
    tests.push(tag => regex.matcher(tag).find())
  }
  if (match.semver !== undefined) {
    const range = semver.validRange(match.semver)
    if (range === null) {
      throw invalidField(`${field}.semver`, 'a semver range (npm syntax)', `${field}.semver ${JSON.stringify(match.semver)} is not a semver range; write e.g. ">=1.2.0 <2" or "^3".`)
    }
    tests.push(tag => {
      const version = semver.valid(tag)
      return version !== null && semver.satisfies(version, range)
    })
  }
  if (tests.length === 0) throw invalidField(field, 'at least one of glob, regex, semver', `${field} matches nothing: give a glob, a regex or a semver range.`)
  return { matches: tag => tests.every(test => test(tag)) }
}

function compileMatches (matches: readonly TagMatch[] | undefined, field: string): CompiledMatch[] {
  return (matches ?? []).map((match, index) => compileMatch(match, `${field}[${index}]`))
}

const UNIT_MS = [7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000]

/** Milliseconds of a duration such as 14d or 1d12h; the schema checked its form, this checks it again for callers that skip it. */
export function parseDuration (value: string, field: string): number {
  const parts = DURATION.exec(value)
  if (parts === null) {
    throw invalidField(field, DURATION.source, `${field} ${JSON.stringify(value)} is not a duration; write whole units largest first, e.g. 14d, 1d12h, 90m.`)
  }
  return UNIT_MS.reduce((total, unit, index) => total + Number(parts[index + 1] ?? 0) * unit, 0)
}

function compileGroupBy (groupBy: CleanupRules['groupBy'], field: string): (tag: string) => string {
  if (groupBy?.regex === undefined) {
    if (groupBy?.capture !== undefined) {
      throw invalidField(`${field}.capture`, 'needs groupBy.regex', `${field}.capture names a group of groupBy.regex, which is missing.`)
    }
    return () => ''
  }
  const regex = compileRegex(groupBy.regex, `${field}.regex`)
  const capture = groupBy.capture
  if (capture !== undefined && !Object.hasOwn(regex.namedGroups(), capture)) {
    throw invalidField(`${field}.capture`, 'a named group of groupBy.regex', `${field}.capture ${JSON.stringify(capture)} is not a named group of groupBy.regex (write (?P<${capture}>…) or (?<${capture}>…)).`)
  }
  const group: string | number = capture ?? (regex.groupCount() > 0 ? 1 : 0)
  return tag => {
    const matcher = regex.matcher(tag)
    // A group key starts with "=" so that no tag's key is ever the one of the tags the pattern misses.
    return matcher.find() ? `=${matcher.group(group) ?? ''}` : ''
  }
}

/** Checks every pattern, range and duration of `rules`; throws INVALID_REQUEST naming the field (under `field`). */
export function compileRules (rules: CleanupRules, field = 'rules'): CompiledRules {
  checkRegexBudget(rules, field)
  const keep = rules.keep ?? {}
  return {
    source: rules,
    ...(rules.select === undefined ? {} : { select: compileMatches(rules.select, `${field}.select`) }),
    exclude: compileMatches(rules.exclude, `${field}.exclude`),
    keepTags: compileMatches(keep.tags, `${field}.keep.tags`),
    groupOf: compileGroupBy(rules.groupBy, `${field}.groupBy`),
    ...(keep.newest === undefined ? {} : { keepNewest: keep.newest }),
    ...(keep.newerThan === undefined ? {} : { keepNewerThanMs: parseDuration(keep.newerThan, `${field}.keep.newerThan`) }),
    ...(rules.deleteOlderThan === undefined ? {} : { deleteOlderThanMs: parseDuration(rules.deleteOlderThan, `${field}.deleteOlderThan`) }),
    referrers: rules.referrers ?? 'delete',
    orphanedReferrers: rules.orphanedReferrers ?? false
  }
}

/** What the rules say about one tag: the rule that decided (a field path, or `protected`) and why, in words. */
export interface Verdict {
  remove: boolean
  rule: string
  reason: string
}

export interface TagFacts {
  tag: string
  /** Milliseconds since the epoch; undefined when the image says nothing usable. */
  created?: number
}

export interface JudgeOptions {
  now: number
  /** The policy's words when a protected-tags entry covers the tag, else undefined. */
  protectedBy: (tag: string) => string | undefined
}

function firstMatch (matches: readonly CompiledMatch[], tag: string): number {
  return matches.findIndex(match => match.matches(tag))
}

function describeAge (created: number | undefined): string {
  return created === undefined ? 'its creation time is unknown' : `it was created ${new Date(created).toISOString()}`
}

/** Newest first; an unknown time ranks after every known one; equal times by tag name, so the order is stable. */
function newestFirst (a: TagFacts, b: TagFacts): number {
  const byTime = (b.created ?? -Infinity) - (a.created ?? -Infinity)
  return byTime !== 0 && !Number.isNaN(byTime) ? byTime : (a.tag < b.tag ? -1 : 1)
}

/**
 * Judges the ordinary tags of one repository (signature tags go through judgeReferrer). Precedence: not selected
 * or excluded (never touched) > protected by the policy > keep (tags, newest N of the group, newer than) > the
 * age limit > removed. The newest N are ranked among the selected tags of each group, whatever else keeps them.
 */
export function judgeTags (tags: readonly TagFacts[], rules: CompiledRules, options: JudgeOptions): Map<string, Verdict> {
  const verdicts = new Map<string, Verdict>()
  const selected: TagFacts[] = []
  const selectedBy = new Map<string, string>()
  for (const facts of tags) {
    const { tag } = facts
    const chosen = rules.select === undefined ? -1 : firstMatch(rules.select, tag)
    if (rules.select !== undefined && chosen < 0) {
      verdicts.set(tag, { remove: false, rule: 'select', reason: 'no select rule matches it' })
      continue
    }
    const excluded = firstMatch(rules.exclude, tag)
    if (excluded >= 0) {
      verdicts.set(tag, { remove: false, rule: `exclude[${excluded}]`, reason: `exclude[${excluded}] matches it` })
      continue
    }
    selected.push(facts)
    selectedBy.set(tag, chosen < 0 ? 'select' : `select[${chosen}]`)
  }
  const newest = newestPerGroup(selected, rules)
  for (const facts of selected) verdicts.set(facts.tag, judgeSelected(facts, rules, options, newest, selectedBy.get(facts.tag) as string))
  return verdicts
}

/** The tags kept as the newest N of their group, with their group and rank. */
function newestPerGroup (selected: readonly TagFacts[], rules: CompiledRules): Map<string, string> {
  const kept = new Map<string, string>()
  if (rules.keepNewest === undefined) return kept
  const groups = new Map<string, TagFacts[]>()
  for (const facts of selected) {
    const group = rules.groupOf(facts.tag)
    const members = groups.get(group)
    if (members === undefined) groups.set(group, [facts])
    else members.push(facts)
  }
  for (const [group, members] of groups) {
    const name = group === '' ? (rules.source.groupBy?.regex === undefined ? 'the repository' : 'the tags groupBy does not match') : `group ${JSON.stringify(group.slice(1))}`
    members.sort(newestFirst).slice(0, rules.keepNewest).forEach((facts, rank) => {
      kept.set(facts.tag, `it is number ${rank + 1} of the ${rules.keepNewest as number} newest of ${name}`)
    })
  }
  return kept
}

function judgeSelected (facts: TagFacts, rules: CompiledRules, options: JudgeOptions, newest: Map<string, string>, selectedBy: string): Verdict {
  const { tag, created } = facts
  const protection = options.protectedBy(tag)
  if (protection !== undefined) return { remove: false, rule: 'protected', reason: protection }
  const kept = firstMatch(rules.keepTags, tag)
  if (kept >= 0) return { remove: false, rule: `keep.tags[${kept}]`, reason: `keep.tags[${kept}] matches it` }
  const rank = newest.get(tag)
  if (rank !== undefined) return { remove: false, rule: 'keep.newest', reason: rank }
  const age = created === undefined ? undefined : options.now - created
  if (rules.keepNewerThanMs !== undefined && age !== undefined && age < rules.keepNewerThanMs) {
    return { remove: false, rule: 'keep.newerThan', reason: `${describeAge(created)}, less than ${rules.source.keep?.newerThan as string} ago` }
  }
  if (rules.deleteOlderThanMs !== undefined && (age === undefined || age <= rules.deleteOlderThanMs)) {
    const why = age === undefined ? describeAge(created) : `${describeAge(created)}, not more than ${rules.source.deleteOlderThan as string} ago`
    return { remove: false, rule: 'deleteOlderThan', reason: why }
  }
  const older = rules.deleteOlderThanMs === undefined ? '' : `, and ${describeAge(created)}, more than ${rules.source.deleteOlderThan as string} ago`
  const chosen = selectedBy === 'select' ? 'every tag is selected' : `${selectedBy} matches it`
  return { remove: true, rule: rules.deleteOlderThanMs === undefined ? selectedBy : 'deleteOlderThan', reason: `${chosen}, no keep rule does${older}` }
}

const REFERRER_TAG = /^sha256-([a-f0-9]{64})\.(sig|att|sbom)$/

/** A cosign-convention tag (signature, attestation, SBOM) and the digest it is about; undefined for any other tag. */
export function referrerOf (tag: string): { subject: string, kind: 'sig' | 'att' | 'sbom' } | undefined {
  const parts = REFERRER_TAG.exec(tag)
  return parts === null ? undefined : { subject: `sha256:${parts[1] as string}`, kind: parts[2] as 'sig' | 'att' | 'sbom' }
}

/**
 * What becomes of the subject: `deleted` by this cleanup (its last tag goes and nothing references it), `kept` in
 * the repository, or `absent` (already gone before the cleanup: the referrer is an orphan).
 */
export type SubjectFate = 'deleted' | 'kept' | 'absent'

/** A signature tag follows its subject; `exclude` and the policy's protection still win over that. */
export function judgeReferrer (tag: string, fate: SubjectFate, rules: CompiledRules, options: Pick<JudgeOptions, 'protectedBy'>): Verdict {
  const subject = (referrerOf(tag) as { subject: string }).subject
  const excluded = firstMatch(rules.exclude, tag)
  if (excluded >= 0) return { remove: false, rule: `exclude[${excluded}]`, reason: `exclude[${excluded}] matches it` }
  const protection = options.protectedBy(tag)
  if (protection !== undefined) return { remove: false, rule: 'protected', reason: protection }
  if (fate === 'kept') return { remove: false, rule: 'referrers', reason: `it is about ${subject}, which stays in the repository` }
  if (fate === 'absent') {
    return rules.orphanedReferrers
      ? { remove: true, rule: 'orphanedReferrers', reason: `it is about ${subject}, which is no longer in the repository` }
      : {
          remove: false,
          rule: 'orphanedReferrers',
          reason: `it is about ${subject}, which is no longer in the repository; orphanedReferrers: true would remove it`
        }
  }
  return rules.referrers === 'delete'
    ? { remove: true, rule: 'referrers', reason: `it is about ${subject}, which this cleanup deletes` }
    : { remove: false, rule: 'referrers', reason: `it is about ${subject}, which this cleanup deletes, but referrers is keep` }
}
