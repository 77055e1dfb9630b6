import { parseDocument } from 'yaml'
import { Checker, itemPath, keyPath } from './checker.js'
import { compileGlob, type Glob, type GlobError, type GlobKind } from './glob.js'
import { PolicyError } from './policy-error.js'
import { ACTIONS, type ApiKey, type JwtSettings, type Policy, type ProtectedTags, type Rule, type RuleAction } from './types.js'

/**
 * Only signatures that need a private key: with a shared-secret algorithm (HS256) anyone holding the public key
 * from the JWKS could sign tokens, and `none` is no signature at all.
 */
export const ASYMMETRIC_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'
] as const
export const DEFAULT_LEEWAY_SECONDS = 30
const MAX_LEEWAY_SECONDS = 600
export const DEFAULT_MAX_LIFETIME_SECONDS = 86_400
const MAX_MAX_LIFETIME_SECONDS = 366 * 86_400

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const NAME_RULE = 'must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit'
const SHA256_HEX = /^[0-9a-fA-F]{64}$/
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const SUBJECT = /^(apikey|user|group|keygroup|chatgroup|slack|mattermost|service):(.+)$/
const SUBJECT_RULE = 'must be apikey:<name>, user:<subject claim value>, group:<identity provider group>, keygroup:<API key group>, chatgroup:<chat users group>, slack:<team id>/<user id>, mattermost:<team id>/<user id> or service:<retention.runAs>'
/** Slack's team and user ids: upper-case letters and digits. */
export const SLACK_USER = /^[A-Z0-9]{1,32}\/[A-Z0-9]{1,32}$/
/** Mattermost's team and user ids: 26 lower-case letters and digits. */
export const MATTERMOST_USER = /^[a-z0-9]{26}\/[a-z0-9]{26}$/
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]'])
const RULE_ACTIONS: readonly string[] = [...ACTIONS, '*']

const shapes = {
  policy: { name: 'the policy', keys: ['apiKeys', 'jwt', 'chatUsers', 'roles', 'bindings', 'protectedTags'] },
  chatUser: { name: 'a chat users entry', keys: ['subjects', 'groups'] },
  apiKey: { name: 'an API key', keys: ['name', 'sha256', 'groups'] },
  jwt: { name: 'the jwt section', keys: ['issuer', 'audience', 'jwksUri', 'subjectClaim', 'groupsClaim', 'leewaySeconds', 'algorithms', 'maxLifetimeSeconds'] },
  rule: { name: 'a rule', keys: ['actions', 'repositories', 'tags', 'registries', 'approval'] },
  binding: { name: 'a binding', keys: ['role', 'subjects'] },
  protectedTags: { name: 'a protected tags entry', keys: ['repositories', 'tags', 'registries'] }
} as const

function parseYaml (text: string, checker: Checker): unknown {
  const document = parseDocument(text)
  // Warnings (an unknown !tag, say) count too: a policy must mean exactly what it says.
  const issue = document.errors[0] ?? document.warnings[0]
  if (issue !== undefined) return checker.fail('(yaml)', (issue.message.split('\n')[0] as string).replace(/:$/, ''))
  try {
    return document.toJS()
  } catch (error) {
    return checker.fail('(yaml)', (error as Error).message)
  }
}

function readName (checker: Checker, value: unknown, path: string): string | undefined {
  const name = checker.string(value, path)
  if (name === undefined) return undefined
  return NAME.test(name) ? name : checker.fail(path, NAME_RULE)
}

function readText (checker: Checker, value: unknown, path: string): string | undefined {
  const text = checker.string(value, path)
  if (text === undefined) return undefined
  return text.trim() === '' ? checker.fail(path, 'must not be empty') : text
}

function readGlobs (checker: Checker, value: unknown, path: string, kind: GlobKind): Glob[] | undefined {
  return checker.strings(value, path, (pattern, patternPath) => {
    try {
      return compileGlob(pattern, kind)
    } catch (error) {
      return checker.fail(patternPath, `${JSON.stringify(pattern)}: ${(error as GlobError).message}`)
    }
  })
}

function readOptionalGlobs (checker: Checker, value: unknown, path: string, kind: GlobKind): Glob[] | undefined {
  return value === undefined ? undefined : readGlobs(checker, value, path, kind)
}

function readSha256 (checker: Checker, value: unknown, path: string): string | undefined {
  const hash = checker.string(value, path)
  if (hash === undefined) return undefined
  if (SHA256_HEX.test(hash)) return hash.toLowerCase()
  return checker.fail(path, 'must be 64 hex digits: the sha256 of the key (registry-delete-gateway apikey prints it)')
}

function readApiKeys (checker: Checker, value: unknown): ApiKey[] {
  const keys: ApiKey[] = []
  const pathByName = new Map<string, string>()
  const pathByHash = new Map<string, string>()
  checker.list(value, 'apiKeys')?.forEach((item, index) => {
    const path = itemPath('apiKeys', index)
    const entry = checker.mapping(item, path, shapes.apiKey)
    if (entry === undefined) return
    const name = readName(checker, entry.name, keyPath(path, 'name'))
    const hash = readSha256(checker, entry.sha256, keyPath(path, 'sha256'))
    const groups = entry.groups === undefined
      ? []
      : checker.strings(entry.groups, keyPath(path, 'groups'), (group, groupPath) => readText(checker, group, groupPath), true)
    const sameHash = hash === undefined ? undefined : pathByHash.get(hash)
    if (sameHash !== undefined) checker.fail(keyPath(path, 'sha256'), `is the same as ${sameHash}'s; each key must be different`)
    else if (hash !== undefined) pathByHash.set(hash, path)
    const sameName = name === undefined ? undefined : pathByName.get(name)
    if (sameName !== undefined) checker.fail(keyPath(path, 'name'), `duplicate API key name ${name as string} (also ${sameName})`)
    else if (name !== undefined) pathByName.set(name, path)
    if (name !== undefined && hash !== undefined && groups !== undefined) {
      keys.push({ name, digest: Buffer.from(hash, 'hex'), groups: Object.freeze(groups) })
    }
  })
  return keys
}

function readJwksUri (checker: Checker, value: unknown, path: string): URL | undefined {
  const text = checker.string(value, path)
  if (text === undefined) return undefined
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return checker.fail(path, 'must be an absolute URL')
  }
  if (url.protocol === 'https:') return url
  // Keys fetched over plain HTTP could be swapped in transit, which would let anyone mint tokens.
  if (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)) return url
  return checker.fail(path, 'must be an https:// URL (http:// only for 127.0.0.1, localhost or [::1])')
}

function readSeconds (checker: Checker, value: unknown, path: string, fallback: number, min: number, max: number): number | undefined {
  if (value === undefined) return fallback
  if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return value
  return checker.fail(path, `must be a whole number of seconds from ${min} to ${max}`)
}

function readAlgorithms (checker: Checker, value: unknown, path: string): string[] | undefined {
  if (value === undefined) return [...ASYMMETRIC_ALGORITHMS]
  return checker.strings(value, path, (algorithm, algorithmPath) => {
    if ((ASYMMETRIC_ALGORITHMS as readonly string[]).includes(algorithm)) return algorithm
    return checker.fail(algorithmPath, `${JSON.stringify(algorithm)} is not allowed; only asymmetric algorithms are (${ASYMMETRIC_ALGORITHMS.join(', ')})`)
  })
}

function readAudience (checker: Checker, value: unknown, path: string): string | string[] | undefined {
  if (Array.isArray(value)) return checker.strings(value, path, (audience, audiencePath) => readText(checker, audience, audiencePath))
  return readText(checker, value, path)
}

function readJwt (checker: Checker, value: unknown): JwtSettings | undefined {
  const section = checker.mapping(value, 'jwt', shapes.jwt)
  if (section === undefined) return undefined
  const settings = {
    issuer: readText(checker, section.issuer, 'jwt.issuer'),
    audience: readAudience(checker, section.audience, 'jwt.audience'),
    jwksUri: readJwksUri(checker, section.jwksUri, 'jwt.jwksUri'),
    subjectClaim: section.subjectClaim === undefined ? 'sub' : readText(checker, section.subjectClaim, 'jwt.subjectClaim'),
    groupsClaim: section.groupsClaim === undefined ? 'groups' : readText(checker, section.groupsClaim, 'jwt.groupsClaim'),
    leewaySeconds: readSeconds(checker, section.leewaySeconds, 'jwt.leewaySeconds', DEFAULT_LEEWAY_SECONDS, 0, MAX_LEEWAY_SECONDS),
    algorithms: readAlgorithms(checker, section.algorithms, 'jwt.algorithms'),
    maxLifetimeSeconds: readSeconds(checker, section.maxLifetimeSeconds, 'jwt.maxLifetimeSeconds', DEFAULT_MAX_LIFETIME_SECONDS, 60, MAX_MAX_LIFETIME_SECONDS)
  }
  // Problems were recorded; the caller throws before a partial section could be used.
  return settings as JwtSettings
}

function readActions (checker: Checker, value: unknown, path: string): RuleAction[] | undefined {
  return checker.strings(value, path, (action, actionPath) => {
    if (RULE_ACTIONS.includes(action)) return action as RuleAction
    return checker.fail(actionPath, `unknown action ${JSON.stringify(action)}; actions are ${RULE_ACTIONS.join(', ')}`)
  })
}

function readRoles (checker: Checker, value: unknown): Map<string, readonly Rule[]> {
  const roles = new Map<string, readonly Rule[]>()
  const section = checker.namedMapping(value, 'roles', 'role names to lists of rules')
  for (const [role, rulesValue] of Object.entries(section ?? {})) {
    const rolePath = keyPath('roles', role)
    if (!NAME.test(role)) checker.fail(rolePath, `role name ${NAME_RULE}`)
    const rules: Rule[] = []
    checker.list(rulesValue, rolePath)?.forEach((item, index) => {
      const path = itemPath(rolePath, index)
      const rule = checker.mapping(item, path, shapes.rule)
      if (rule === undefined) return
      rules.push(Object.freeze({
        role,
        path,
        actions: readActions(checker, rule.actions, keyPath(path, 'actions')) as RuleAction[],
        repositories: readGlobs(checker, rule.repositories, keyPath(path, 'repositories'), 'repository') as Glob[],
        tags: readOptionalGlobs(checker, rule.tags, keyPath(path, 'tags'), 'tag'),
        registries: readOptionalGlobs(checker, rule.registries, keyPath(path, 'registries'), 'registry'),
        ...readApproval(checker, rule.approval, keyPath(path, 'approval'))
      }))
    })
    roles.set(role, Object.freeze(rules))
  }
  return roles
}

function readApproval (checker: Checker, value: unknown, path: string): Pick<Rule, 'approval'> {
  if (value === undefined || value === 'none') return {}
  if (value === 'required') return { approval: 'required' }
  checker.fail(path, 'must be required or none')
  return {}
}

function readSubject (checker: Checker, value: string, path: string): string | undefined {
  const match = SUBJECT.exec(value)
  if (match === null) return checker.fail(path, SUBJECT_RULE)
  if (match[1] === 'apikey' && !NAME.test(match[2] as string)) return checker.fail(path, `the API key name ${NAME_RULE}`)
  if (match[1] === 'service' && !SERVICE_NAME.test(match[2] as string)) return checker.fail(path, 'a service subject must be service:<name> as retention.runAs names it (letters, digits, . _ -)')
  if (match[1] === 'slack' && !SLACK_USER.test(match[2] as string)) return checker.fail(path, 'a Slack subject must be slack:<team id>/<user id>, e.g. slack:T0123ABCD/U0456EFGH')
  if (match[1] === 'mattermost' && !MATTERMOST_USER.test(match[2] as string)) return checker.fail(path, 'a Mattermost subject must be mattermost:<team id>/<user id> (26 lower-case letters and digits each)')
  return value
}

/**
 * Groups the policy gives chat users (Slack and Mattermost send only ids): bindings name them `chatgroup:<g>`, a
 * namespace of their own, so neither an identity provider's group nor an API key's group lends them its roles.
 */
function readChatUsers (checker: Checker, value: unknown): Map<string, readonly string[]> {
  const groupsBySubject = new Map<string, string[]>()
  checker.list(value, 'chatUsers')?.forEach((item, index) => {
    const path = itemPath('chatUsers', index)
    const entry = checker.mapping(item, path, shapes.chatUser)
    if (entry === undefined) return
    const subjects = checker.strings(entry.subjects, keyPath(path, 'subjects'), (subject, subjectPath) => {
      if (!/^(slack|mattermost):/.test(subject)) return checker.fail(subjectPath, 'must be slack:<team id>/<user id> or mattermost:<team id>/<user id>')
      return readSubject(checker, subject, subjectPath)
    })
    const groups = checker.strings(entry.groups, keyPath(path, 'groups'), (group, groupPath) => readText(checker, group, groupPath))
    if (subjects === undefined || groups === undefined) return
    for (const subject of subjects) {
      const held = groupsBySubject.get(subject) ?? []
      for (const group of groups) if (!held.includes(group)) held.push(group)
      groupsBySubject.set(subject, held)
    }
  })
  return groupsBySubject
}

function readBindings (checker: Checker, value: unknown, roles: ReadonlyMap<string, unknown>): Map<string, readonly string[]> {
  const rolesBySubject = new Map<string, string[]>()
  checker.list(value, 'bindings')?.forEach((item, index) => {
    const path = itemPath('bindings', index)
    const binding = checker.mapping(item, path, shapes.binding)
    if (binding === undefined) return
    const role = checker.string(binding.role, keyPath(path, 'role'))
    if (role !== undefined && !roles.has(role)) {
      checker.fail(keyPath(path, 'role'), `unknown role ${JSON.stringify(role)}; roles defines ${[...roles.keys()].join(', ') || 'none'}`)
    }
    const subjects = checker.strings(binding.subjects, keyPath(path, 'subjects'), (subject, subjectPath) => readSubject(checker, subject, subjectPath))
    if (role === undefined || subjects === undefined) return
    for (const subject of subjects) {
      const held = rolesBySubject.get(subject) ?? []
      if (!held.includes(role)) held.push(role)
      rolesBySubject.set(subject, held)
    }
  })
  return rolesBySubject
}

function readProtectedTags (checker: Checker, value: unknown): ProtectedTags[] {
  const entries: ProtectedTags[] = []
  checker.list(value, 'protectedTags')?.forEach((item, index) => {
    const path = itemPath('protectedTags', index)
    const entry = checker.mapping(item, path, shapes.protectedTags)
    if (entry === undefined) return
    entries.push(Object.freeze({
      path,
      repositories: readOptionalGlobs(checker, entry.repositories, keyPath(path, 'repositories'), 'repository'),
      tags: readGlobs(checker, entry.tags, keyPath(path, 'tags'), 'tag') as Glob[],
      registries: readOptionalGlobs(checker, entry.registries, keyPath(path, 'registries'), 'registry')
    }))
  })
  return entries
}

/** Parses and validates a policy file's text; throws PolicyError listing every problem with its path and rule. */
export function loadPolicy (text: string, source: string): Policy {
  const checker = new Checker()
  const document = parseYaml(text, checker)
  // An empty file is refused rather than read as "deny everything": it is usually a half-written file.
  const top = checker.problems.length > 0
    ? undefined
    : document === undefined || document === null
      ? checker.fail('', 'the policy is empty')
      : checker.mapping(document, '', shapes.policy)
  if (top === undefined) throw new PolicyError(source, checker.problems)
  const apiKeys = top.apiKeys === undefined ? [] : readApiKeys(checker, top.apiKeys)
  const jwt = top.jwt === undefined ? undefined : readJwt(checker, top.jwt)
  const roles = top.roles === undefined ? new Map<string, readonly Rule[]>() : readRoles(checker, top.roles)
  const rolesBySubject = top.bindings === undefined ? new Map<string, readonly string[]>() : readBindings(checker, top.bindings, roles)
  const protectedTags = top.protectedTags === undefined ? [] : readProtectedTags(checker, top.protectedTags)
  const chatGroups = top.chatUsers === undefined ? new Map<string, readonly string[]>() : readChatUsers(checker, top.chatUsers)
  if (checker.problems.length > 0) throw new PolicyError(source, checker.problems)
  return Object.freeze({
    source,
    apiKeys: Object.freeze(apiKeys.map(key => Object.freeze(key))),
    jwt: jwt === undefined ? undefined : Object.freeze({ ...jwt, algorithms: Object.freeze(jwt.algorithms) }),
    roles,
    rolesBySubject,
    chatGroups,
    protectedTags: Object.freeze(protectedTags)
  })
}
