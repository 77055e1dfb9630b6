/**
 * Image globs: `*` and `?` stay inside one path segment, `**` (a whole segment) crosses `/`.
 * Patterns are checked when the policy loads so a typo fails loudly instead of silently matching nothing.
 */
export type GlobKind = 'repository' | 'tag' | 'registry'

export interface Glob {
  readonly pattern: string
  matches (value: string): boolean
}

export class GlobError extends Error {
  constructor (rule: string) {
    super(rule)
    this.name = 'GlobError'
  }
}

const ALLOWED: Record<GlobKind, { characters: RegExp, described: string }> = {
  // Distribution repository names are lowercase; an uppercase pattern could never match.
  repository: { characters: /^[a-z0-9._\-/*?]$/, described: 'a-z, 0-9, ".", "_", "-", "/" and the wildcards * ** ?' },
  tag: { characters: /^[A-Za-z0-9._\-*?]$/, described: 'A-Z, a-z, 0-9, ".", "_", "-" and the wildcards * ?' },
  registry: { characters: /^[A-Za-z0-9._\-*?]$/, described: 'A-Z, a-z, 0-9, ".", "_", "-" and the wildcards * ?' }
}
const MAX_LENGTH = 255

function segmentSource (segment: string): string {
  let source = ''
  for (const character of segment) {
    if (character === '*') source += '[^/]*'
    else if (character === '?') source += '[^/]'
    else source += character === '.' ? '\\.' : character
  }
  return source
}

function checkPattern (pattern: string, kind: GlobKind): void {
  if (pattern.length === 0) throw new GlobError('must not be empty')
  if (pattern.length > MAX_LENGTH) throw new GlobError(`must be at most ${MAX_LENGTH} characters`)
  const { characters, described } = ALLOWED[kind]
  for (const character of pattern) {
    if (!characters.test(character)) {
      throw new GlobError(`${JSON.stringify(character)} is not allowed; a ${kind} pattern may use ${described}`)
    }
  }
  if (kind !== 'repository') {
    if (pattern.includes('**')) throw new GlobError(`** only makes sense in repositories (it crosses /); a ${kind} has no /, use *`)
    return
  }
  const segments = pattern.split('/')
  if (segments.includes('')) throw new GlobError('must not start or end with / nor contain //')
  if (segments.some(segment => segment.includes('**') && segment !== '**')) {
    throw new GlobError('** must be a whole path segment, e.g. team-a/** or **/app; use * within a segment')
  }
}

/** Throws GlobError with the rule the pattern breaks. */
export function compileGlob (pattern: string, kind: GlobKind): Glob {
  checkPattern(pattern, kind)
  const segments = pattern.split('/')
  let source = ''
  let separator = ''
  segments.forEach((segment, index) => {
    if (segment !== '**') {
      source += separator + segmentSource(segment)
      separator = '/'
    } else if (index < segments.length - 1) {
      // A leading or inner ** may also match no segment at all: **/app matches app, a/**/b matches a/b.
      source += `${separator}(?:.*/)?`
      separator = ''
    } else {
      // A trailing ** needs something below: team-a/** matches team-a/x, not team-a itself.
      source += index === 0 ? '.*' : `${separator}.+`
    }
  })
  const regex = new RegExp(`^${source}$`)
  return Object.freeze({ pattern, matches: (value: string) => regex.test(value) })
}
