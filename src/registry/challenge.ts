/**
 * WWW-Authenticate parsing (RFC 9110 §11.6.1): one header may carry several challenges, each a scheme followed
 * by comma-separated auth-params whose values may be quoted strings containing commas and escaped quotes.
 * Splitting on commas or regex-matching `key="value"` breaks on exactly the headers registries send.
 */
export interface Challenge {
  /** Lowercased, e.g. `bearer` or `basic`. */
  scheme: string
  /** Parameter names lowercased; values unquoted. */
  params: Record<string, string>
}

const TOKEN_CHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/
const TOKEN68_CHAR = /[A-Za-z0-9._~+/=-]/
/** Stricter than RFC tokens would be wrong in practice: some registries send unquoted URLs. */
const UNQUOTED_VALUE_CHAR = /[^,\s]/
/** token68 allows `=` only as trailing padding, which tells it apart from `name=value`. */
const TOKEN68 = /^[A-Za-z0-9._~+/-]+=*$/

class Scanner {
  position = 0
  constructor (readonly text: string) {}

  get done (): boolean { return this.position >= this.text.length }
  peek (): string { return this.text[this.position] ?? '' }

  skipWhitespace (): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.position++
  }

  skipSeparators (): void {
    while (this.peek() === ',' || this.peek() === ' ' || this.peek() === '\t') this.position++
  }

  read (allowed: RegExp): string {
    const start = this.position
    while (!this.done && allowed.test(this.peek())) this.position++
    return this.text.slice(start, this.position)
  }

  readQuoted (): string {
    this.position++ // opening quote
    let value = ''
    while (!this.done && this.peek() !== '"') {
      if (this.peek() === '\\') this.position++
      value += this.peek()
      this.position++
    }
    this.position++ // closing quote (or end of a truncated header)
    return value
  }
}

/** Reads `name = value` at the scanner, or returns undefined (scanner untouched) when the next word is a new scheme. */
function readParam (scanner: Scanner): [string, string] | undefined {
  const start = scanner.position
  const name = scanner.read(TOKEN_CHAR)
  scanner.skipWhitespace()
  if (name === '' || scanner.peek() !== '=') {
    scanner.position = start
    return undefined
  }
  scanner.position++
  scanner.skipWhitespace()
  const value = scanner.peek() === '"' ? scanner.readQuoted() : scanner.read(UNQUOTED_VALUE_CHAR)
  return [name.toLowerCase(), value]
}

export function parseChallenges (header: string): Challenge[] {
  const scanner = new Scanner(header)
  const challenges: Challenge[] = []
  for (;;) {
    scanner.skipSeparators()
    const scheme = scanner.read(TOKEN_CHAR)
    if (scheme === '') break
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} }
    challenges.push(challenge)
    scanner.skipWhitespace()
    const token68Start = scanner.position
    const token68 = scanner.read(TOKEN68_CHAR)
    scanner.skipWhitespace()
    if (TOKEN68.test(token68) && (scanner.done || scanner.peek() === ',')) {
      // A bare token68 (rare in challenges) is kept under a reserved key.
      challenge.params[''] = token68
      continue
    }
    scanner.position = token68Start
    for (;;) {
      const param = readParam(scanner)
      if (param === undefined) break
      challenge.params[param[0]] = param[1]
      scanner.skipWhitespace()
      if (scanner.peek() !== ',') break
      const beforeComma = scanner.position
      scanner.skipSeparators()
      // A comma followed by `word` without `=` starts the next challenge.
      if (readParam(new Scanner(scanner.text.slice(scanner.position))) === undefined) {
        scanner.position = beforeComma
        break
      }
    }
  }
  return challenges
}
