import type { PolicyProblem } from './policy-error.js'

/** Path helpers in the notation people read: `roles.admin[0].repositories[1]`. */
export function keyPath (path: string, key: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(key)) return `${path}[${JSON.stringify(key)}]`
  return path === '' ? key : `${path}.${key}`
}

export function itemPath (path: string, index: number): string {
  return `${path}[${index}]`
}

function isMapping (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function describeType (value: unknown): string {
  if (value === null || value === undefined) return 'nothing'
  if (Array.isArray(value)) return 'a list'
  return `a ${typeof value === 'object' ? 'mapping' : typeof value}`
}

export interface MappingShape {
  /** What the mapping is, for messages: `a rule`, `an API key`. */
  name: string
  keys: readonly string[]
}

/**
 * Reads an untrusted YAML value against a shape, collecting every problem (path + rule) instead of stopping at
 * the first, so one `policy check` shows all that is wrong. Each reader returns undefined when the value is unusable.
 */
export class Checker {
  readonly problems: PolicyProblem[] = []

  fail (path: string, rule: string): undefined {
    this.problems.push({ path: path === '' ? '(top level)' : path, rule })
    return undefined
  }

  mapping (value: unknown, path: string, shape: MappingShape): Record<string, unknown> | undefined {
    if (!isMapping(value)) return this.fail(path, `must be ${shape.name} (a mapping), not ${describeType(value)}`)
    for (const key of Object.keys(value)) {
      if (!shape.keys.includes(key)) this.fail(keyPath(path, key), `unknown key; ${shape.name} has ${shape.keys.join(', ')}`)
    }
    // Required keys are reported by the reader of each value, which sees it missing.
    return value
  }

  /** A mapping whose keys are names the file chooses (role names). */
  namedMapping (value: unknown, path: string, what: string): Record<string, unknown> | undefined {
    if (!isMapping(value)) return this.fail(path, `must be a mapping of ${what}, not ${describeType(value)}`)
    return value
  }

  /** Empty lists are refused unless `mayBeEmpty`: an empty `tags` would read as "all" to some and "none" to others. */
  list (value: unknown, path: string, mayBeEmpty = false): unknown[] | undefined {
    if (value === undefined) return this.fail(path, 'is required')
    if (!Array.isArray(value)) return this.fail(path, `must be a list, not ${describeType(value)}`)
    if (value.length === 0 && !mayBeEmpty) return this.fail(path, 'must not be empty (leave the key out instead)')
    return value
  }

  string (value: unknown, path: string): string | undefined {
    if (typeof value === 'string') return value
    if (value === undefined) return this.fail(path, 'is required')
    if (typeof value === 'number' || typeof value === 'boolean') {
      return this.fail(path, `must be a string, not ${describeType(value)}; quote values such as 1.0 or true`)
    }
    return this.fail(path, `must be a string, not ${describeType(value)}`)
  }

  /** A list of strings, each checked by `read`; undefined if the list itself or any item is unusable. */
  strings<T> (value: unknown, path: string, read: (text: string, path: string) => T | undefined, mayBeEmpty = false): T[] | undefined {
    const items = this.list(value, path, mayBeEmpty)
    if (items === undefined) return undefined
    const results: T[] = []
    let complete = true
    items.forEach((item, index) => {
      const text = this.string(item, itemPath(path, index))
      const result = text === undefined ? undefined : read(text, itemPath(path, index))
      if (result === undefined) complete = false
      else results.push(result)
    })
    return complete ? results : undefined
  }
}
