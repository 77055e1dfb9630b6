import { readFileSync } from 'node:fs'
import { Value } from 'typebox/value'
import { parse as parseYaml } from 'yaml'
import { compileRules } from '../cleanups/rules.js'
import { scheduleProblem } from '../cleanups/schedule.js'
import type { GatewayError } from '../errors.js'
import { ConfigSchema, RegistrySchema, type Config } from './schema.js'

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

type Env = Record<string, string | undefined>

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** The config file named by `--config FILE` or CONFIG_FILE, if any. */
export function configFileFrom (argv: readonly string[], env: Env): string | undefined {
  const flag = argv.indexOf('--config')
  if (flag !== -1) {
    const file = argv[flag + 1]
    if (file === undefined) throw new ConfigError('--config needs a file name')
    return file
  }
  const inline = argv.find(arg => arg.startsWith('--config='))
  return inline?.slice('--config='.length) ?? env.CONFIG_FILE
}

function readConfigFile (file: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    throw new ConfigError(`cannot read config file ${file}: ${(error as Error).message}`)
  }
  let parsed: unknown
  try {
    parsed = parseYaml(text)
  } catch (error) {
    throw new ConfigError(`config file ${file} is not valid YAML: ${(error as Error).message}`)
  }
  if (parsed === null || parsed === undefined) return {}
  if (!isObject(parsed)) throw new ConfigError(`config file ${file} must be a YAML mapping at the top level`)
  return parsed
}

/** The environment covers the common case of one registry without a file, and overrides a file's values. */
function applyEnv (raw: Record<string, unknown>, env: Env): void {
  if (env.HOST !== undefined) raw.host = env.HOST
  if (env.PORT !== undefined) raw.port = /^\d+$/.test(env.PORT) ? Number(env.PORT) : env.PORT
  if (env.LOG_LEVEL !== undefined) raw.logLevel = env.LOG_LEVEL
  if (env.TRUST_PROXY !== undefined) raw.trustProxy = env.TRUST_PROXY.split(',').map(hop => hop.trim()).filter(hop => hop !== '')
  if (env.POLICY_FILE !== undefined) raw.policyFile = env.POLICY_FILE
  if (env.AUDIT_DB !== undefined) raw.audit = { ...(isObject(raw.audit) ? raw.audit : {}), path: env.AUDIT_DB }
  if (env.DATABASE_URL !== undefined) raw.audit = { ...(isObject(raw.audit) ? raw.audit : {}), url: env.DATABASE_URL }
  if (env.SLACK_SIGNING_SECRET !== undefined) {
    const chat = isObject(raw.chat) ? raw.chat : {}
    raw.chat = { ...chat, slack: { ...(isObject(chat.slack) ? chat.slack : {}), signingSecret: env.SLACK_SIGNING_SECRET } }
  }
  if (env.BROWSE_CURSOR_SECRET !== undefined) raw.browse = { ...(isObject(raw.browse) ? raw.browse : {}), cursorSecret: env.BROWSE_CURSOR_SECRET }
  const mattermost = Object.entries({ token: env.MATTERMOST_TOKEN, actionSecret: env.MATTERMOST_ACTION_SECRET }).filter(([, value]) => value !== undefined)
  if (mattermost.length > 0) {
    const chat = isObject(raw.chat) ? raw.chat : {}
    raw.chat = { ...chat, mattermost: { ...(isObject(chat.mattermost) ? chat.mattermost : {}), ...Object.fromEntries(mattermost) } }
  }
  applyWebhookEnv(raw, env)
  const registryEnv: Record<string, string | string[] | undefined> = {
    url: env.REGISTRY_URL,
    username: env.REGISTRY_USERNAME,
    password: env.REGISTRY_PASSWORD,
    // Docker Hub, GitLab and others put their token service on another origin than the registry.
    tokenRealmOrigins: env.REGISTRY_TOKEN_REALM_ORIGINS?.split(',').map(origin => origin.trim()).filter(origin => origin !== ''),
    untagStrategy: env.REGISTRY_UNTAG_STRATEGY,
    defaultMode: env.REGISTRY_DEFAULT_MODE
  }
  if (Object.values(registryEnv).every(value => value === undefined)) return
  const registries = isObject(raw.registries) ? raw.registries : {}
  raw.registries = registries
  const name = typeof raw.defaultRegistry === 'string' ? raw.defaultRegistry : 'default'
  const entry = isObject(registries[name]) ? registries[name] : {}
  registries[name] = entry
  for (const [key, value] of Object.entries(registryEnv)) {
    if (value !== undefined) entry[key] = value
  }
}

/** WEBHOOK_<NAME>_SECRET and WEBHOOK_<NAME>_URL fill the webhook of that name (upper case, - as _), so neither need sit in the file. */
function applyWebhookEnv (raw: Record<string, unknown>, env: Env): void {
  const notifications = raw.notifications
  if (!isObject(notifications) || !Array.isArray(notifications.webhooks)) return
  for (const webhook of notifications.webhooks as unknown[]) {
    if (!isObject(webhook) || typeof webhook.name !== 'string') continue
    const prefix = `WEBHOOK_${webhook.name.toUpperCase().replaceAll('-', '_')}_`
    const secret = env[`${prefix}SECRET`]
    const url = env[`${prefix}URL`]
    if (secret !== undefined) webhook.secret = secret
    if (url !== undefined) webhook.url = url
  }
}

function describePath (instancePath: string): string {
  return instancePath === '' ? '(top level)' : instancePath.slice(1).replaceAll('/', '.')
}

export function validateConfig (raw: Record<string, unknown>, source: string): Config {
  const withDefaults = Value.Default(ConfigSchema, structuredClone(raw))
  // TypeBox fills defaults through objects but not into the values of a record.
  const registries = (withDefaults as Record<string, unknown>).registries
  if (isObject(registries)) {
    for (const [name, entry] of Object.entries(registries)) {
      if (isObject(entry)) registries[name] = Value.Default(RegistrySchema, entry)
    }
  }
  const errors = [...Value.Errors(ConfigSchema, withDefaults)]
  if (errors.length > 0) {
    const lines = errors
      .filter(error => error.keyword !== 'boolean')
      .map(error => {
        const extra = error.keyword === 'additionalProperties'
          ? ` (unknown: ${(error.params as { additionalProperties: string[] }).additionalProperties.join(', ')})`
          : ''
        return `  ${describePath(error.instancePath)}: ${error.message}${extra}`
      })
    throw new ConfigError(`invalid configuration from ${source}:\n${lines.join('\n')}`)
  }
  const config = withDefaults as Config
  if (config.registries[config.defaultRegistry] === undefined) {
    const known = Object.keys(config.registries).join(', ')
    throw new ConfigError(`invalid configuration from ${source}:\n  defaultRegistry: must name a key of registries (have: ${known})`)
  }
  checkRetention(config, source)
  checkReconcileAfter(config, source)
  checkRunHeartbeat(config, source)
  if (config.audit.driver === 'postgres' && config.audit.url === undefined) {
    throw new ConfigError(`invalid configuration from ${source}:\n  audit.url: required with audit.driver postgres (or set DATABASE_URL)`)
  }
  if (config.audit.tls !== undefined && config.audit.url !== undefined && /[?&](sslmode|sslrootcert|sslcert|sslkey|ssl)=/.test(config.audit.url)) {
    throw new ConfigError(`invalid configuration from ${source}:\n  audit.tls: give TLS either in audit.tls or as ssl parameters of audit.url, not both`)
  }
  const tls = config.audit.tls
  if (tls !== undefined && (tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new ConfigError(`invalid configuration from ${source}:\n  audit.tls: certFile and keyFile go together`)
  }
  const problems = webhookProblems(config.notifications.webhooks)
  if (problems.length > 0) throw new ConfigError(`invalid configuration from ${source}:\n${problems.map(problem => `  ${problem}`).join('\n')}`)
  return deepFreeze(config)
}

/** Named policies are checked as a request would be: a bad pattern fails the start, not the first plan. */
/**
 * With several replicas a pending record may belong to a request still running elsewhere: one waits up to
 * lockWaitMs for the repository lock, then its registry calls take up to connectMs + requestMs each. Judging it
 * sooner would guess over a request that is about to answer, so a shorter reconcileAfterMs is refused, not clamped.
 */
function checkReconcileAfter (config: Config, source: string): void {
  if (config.audit.driver !== 'postgres') return
  const slowest = Math.max(...Object.values(config.registries).map(registry => registry.timeouts.connectMs + registry.timeouts.requestMs))
  const minimum = config.audit.lockWaitMs + slowest
  if (config.audit.reconcileAfterMs < minimum) {
    throw new ConfigError(`invalid configuration from ${source}:\n  audit.reconcileAfterMs: must be at least ${minimum} with driver postgres ` +
      `(audit.lockWaitMs ${config.audit.lockWaitMs} + the slowest registry's connectMs + requestMs ${slowest}), so a record still in flight on another replica is not judged`)
  }
}

/**
 * A run is judged dead after staleAfterMs without a heartbeat, and its owner stops itself one beat before that when
 * its own beats fail: with fewer than three beats in the bound, one slow beat would stop a live run.
 */
function checkRunHeartbeat (config: Config, source: string): void {
  const { heartbeatMs, staleAfterMs } = config.cleanups
  if (staleAfterMs < 3 * heartbeatMs) {
    throw new ConfigError(`invalid configuration from ${source}:\n  cleanups.staleAfterMs: must be at least 3 × cleanups.heartbeatMs (${3 * heartbeatMs}), ` +
      'so a run whose heartbeat is merely late is not marked interrupted')
  }
}

function checkRetention (config: Config, source: string): void {
  const seen = new Set<string>()
  config.retention.policies.forEach((policy, index) => {
    const at = `retention.policies[${index}]`
    const fail = (why: string): never => { throw new ConfigError(`invalid configuration from ${source}:\n  ${why}`) }
    if (seen.has(policy.name)) fail(`${at}.name: ${policy.name} is the name of an earlier policy`)
    seen.add(policy.name)
    if (policy.registry !== undefined && config.registries[policy.registry] === undefined) fail(`${at}.registry: must name a key of registries`)
    try {
      compileRules(policy.rules, `${at}.rules`)
    } catch (error) {
      fail((error as GatewayError).detail)
    }
    if (policy.schedule !== undefined) {
      const problem = scheduleProblem(policy.schedule, policy.timezone)
      if (problem !== undefined) fail(`${at}.schedule: ${problem}`)
    }
  })
}

/** What the schema cannot say: names are unique, and a standard webhook is signed. Never quotes a secret. */
function webhookProblems (webhooks: Config['notifications']['webhooks']): string[] {
  const problems: string[] = []
  const seen = new Set<string>()
  for (const [index, webhook] of webhooks.entries()) {
    const path = `notifications.webhooks.${index}`
    if (seen.has(webhook.name)) problems.push(`${path}.name: ${webhook.name} is the name of an earlier webhook; names must be unique`)
    seen.add(webhook.name)
    if (webhook.format === 'standard' && webhook.secret === undefined) {
      problems.push(`${path}.secret: required with format standard (whsec_ and base64), or set WEBHOOK_${webhook.name.toUpperCase().replaceAll('-', '_')}_SECRET`)
    }
  }
  return problems
}

function deepFreeze<T> (value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const inner of Object.values(value)) deepFreeze(inner)
    Object.freeze(value)
  }
  return value
}

export function loadConfig (argv: readonly string[] = process.argv.slice(2), env: Env = process.env): Config {
  const file = configFileFrom(argv, env)
  const raw = file === undefined ? {} : readConfigFile(file)
  applyEnv(raw, env)
  if (raw.registries === undefined) {
    throw new ConfigError('no registry configured: set REGISTRY_URL, or give a config file (CONFIG_FILE or --config) with registries')
  }
  return validateConfig(raw, file === undefined ? 'the environment' : `${file} and the environment`)
}
