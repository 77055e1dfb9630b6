#!/usr/bin/env node
import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { cleanupCommand, CleanupUsageError } from './cli-cleanup.js'
import { generateApiKey, sha256Hex } from './identity/api-key.js'
import { decide } from './policy/decide.js'
import { loadPolicy } from './policy/load.js'
import { PolicyStore } from './policy/store.js'
import { ACTIONS, type Action, type Identity, type Policy } from './policy/types.js'
import { parseImageString } from './registry/reference.js'

export interface CliIo {
  /** One line or block of normal output, without the trailing newline. */
  out: (text: string) => void
  err: (text: string) => void
  /** Rewrites the current terminal line (cleanup run's progress bar); absent when stdout is not a terminal. */
  progress?: (text: string) => void
}

const EXIT = { ok: 0, failed: 1, usage: 2 } as const

export const USAGE = `Usage: registry-delete-gateway <command>

Commands:
  serve [--config FILE]        start the gateway (configuration: see config.example.yaml)
  apikey [--name N] [--group G ...]
                               create an API key; prints it once, with the policy lines that admit it
  policy check FILE            validate a policy file (exit 0 when valid, 1 with every problem otherwise)
  policy explain FILE --subject S [--group G ...] --action A --image NAME:TAG [--registry R]
                               show whether the policy allows it and why (exit 0 ALLOW, 1 DENY)
                               S is apikey:<name>, user:<subject claim>, slack:<team>/<user>, mattermost:<team>/<user>
                               or service:<runAs>; A is ${ACTIONS.join(', ')};
                               R defaults to "default"; --group adds identity provider groups to a user
                               (group:<g> bindings) or key groups to an API key (keygroup:<g>)
  audit migrate --from sqlite:PATH [--to postgres://…] [--batch N]
                               copy the SQLite audit trail into PostgreSQL (ids, times, manifest bytes kept;
                               records already there are skipped, so it can run again), then verify counts and
                               checksums; exit 0 when every record matches, 1 otherwise. Stop the gateway first.
                               Without --to, DATABASE_URL is used (keeps the password out of ps)
  cleanup plan FILE --gateway URL --api-key KEY
                               plan the cleanup FILE describes (registry, repositories, rules; JSON or YAML) on a
                               running gateway and print it: removed, kept and refused tags with rule and reason
  cleanup run FILE --gateway URL --api-key KEY [--max-deletions N]
                               plan it, execute it and follow it (a progress bar on a terminal, a line per tag
                               otherwise); exit 0 when every removal was done
  --help                       show this help`

class UsageError extends Error {}

const SUBJECT_KINDS = [['apikey:', 'apikey'], ['user:', 'jwt'], ['slack:', 'slack'], ['mattermost:', 'mattermost'], ['service:', 'service']] as const

/** Runs a step whose failure means the command line is wrong. */
function asUsage<T> (step: () => T, prefix = ''): T {
  try {
    return step()
  } catch (error) {
    throw new UsageError(prefix + (error as Error).message)
  }
}

async function serveCommand (args: string[], io: CliIo): Promise<number> {
  try {
    // Loaded only here, so the key and policy commands start fast and need no gateway configuration.
    const { serve } = await import('./server.js')
    await serve(args)
    return EXIT.ok
  } catch (error) {
    io.err(`registry-delete-gateway failed to start: ${(error as Error).message}`)
    return EXIT.failed
  }
}

function apikeyCommand (args: string[], io: CliIo): number {
  const { values, positionals } = asUsage(() => parseArgs({
    args,
    options: { name: { type: 'string', default: 'new-key' }, group: { type: 'string', multiple: true, default: [] } },
    allowPositionals: true
  }))
  if (positionals.length > 0) throw new UsageError(`apikey takes no arguments, got ${positionals.join(' ')}`)
  const key = generateApiKey()
  const groups = values.group.map(group => JSON.stringify(group)).join(', ')
  const snippet = [
    'apiKeys:',
    `  - name: ${values.name}`,
    `    sha256: ${sha256Hex(key)}`,
    `    groups: [${groups}]`
  ].join('\n')
  // The snippet must load as printed; this also checks the name and groups.
  loadPolicy(snippet, 'the generated snippet')
  io.out(`API key for apikey:${values.name} (shown only this once; keep it in a secret store):\n\n${key}\n`)
  io.out(
    `Add to the policy file's apiKeys (the gateway keeps only the hash), then bind "apikey:${values.name}" (or its groups, as keygroup:<group>) to a role:\n\n` +
    snippet
  )
  return EXIT.ok
}

function readPolicy (file: string | undefined): Policy {
  if (file === undefined) throw new UsageError('policy: give the policy FILE')
  return new PolicyStore({ watch: false }).load(file)
}

function count (size: number, one: string, many: string): string {
  return `${size} ${size === 1 ? one : many}`
}

/**
 * Bindings that name an identity provider group (`group:`) with the name of an API key's group: before key groups
 * had their own namespace such a binding gave the keys its roles, and now it does not, so it is probably meant as
 * `keygroup:`.
 */
function groupNamespaceWarnings (policy: Policy): string[] {
  const keyGroups = new Set(policy.apiKeys.flatMap(key => key.groups))
  const chatGroups = new Set([...policy.chatGroups.values()].flat())
  return [...policy.rolesBySubject.keys()].flatMap(subject => {
    const [namespace, group = ''] = subject.split(/:(.*)/s)
    const warnings: string[] = []
    if (namespace === 'group' && keyGroups.has(group)) {
      warnings.push(`warning: ${subject} binds an identity provider group, but "${group}" is also a group of API keys; ` +
        `key groups are bound as keygroup:${group}, so those keys do not get these roles`)
    }
    if ((namespace === 'group' || namespace === 'keygroup') && chatGroups.has(group)) {
      warnings.push(`warning: ${subject} does not bind the chat users' group "${group}"; ` +
        `chat users' groups are bound as chatgroup:${group}, so those chat users do not get these roles`)
    }
    return warnings
  })
}

function checkCommand (args: string[], io: CliIo): number {
  const { positionals } = asUsage(() => parseArgs({ args, allowPositionals: true }))
  const policy = readPolicy(positionals[0])
  const parts = [
    count(policy.apiKeys.length, 'API key', 'API keys'),
    count(policy.roles.size, 'role', 'roles'),
    count(policy.rolesBySubject.size, 'bound subject', 'bound subjects'),
    count(policy.chatGroups.size, 'chat user with groups', 'chat users with groups'),
    count(policy.protectedTags.length, 'protected-tags entry', 'protected-tags entries'),
    policy.jwt === undefined ? 'no JWT issuer' : `JWT issuer ${policy.jwt.issuer}`
  ]
  io.out(`${policy.source}: valid (${parts.join(', ')})`)
  for (const warning of groupNamespaceWarnings(policy)) io.err(warning)
  return EXIT.ok
}

function explainCommand (args: string[], io: CliIo): number {
  const { values, positionals } = asUsage(() => parseArgs({
    args,
    options: {
      subject: { type: 'string' },
      group: { type: 'string', multiple: true, default: [] },
      action: { type: 'string' },
      image: { type: 'string' },
      registry: { type: 'string', default: 'default' }
    },
    allowPositionals: true
  }))
  const { subject, action, image } = values
  if (subject === undefined || action === undefined || image === undefined) {
    throw new UsageError('policy explain needs --subject, --action and --image')
  }
  const kind = SUBJECT_KINDS.find(([prefix]) => subject.startsWith(prefix))?.[1]
  if (kind === undefined) {
    throw new UsageError('--subject must be apikey:<name>, user:<subject claim>, slack:<team id>/<user id>, mattermost:<team id>/<user id> or service:<retention.runAs>; give groups with --group')
  }
  if (!(ACTIONS as readonly string[]).includes(action)) throw new UsageError(`--action must be one of ${ACTIONS.join(', ')}`)
  const reference = asUsage(() => parseImageString(image), '--image: ')
  const policy = readPolicy(positionals[0])
  // An API key's groups live in the policy, as they do when the gateway authenticates it.
  const key = kind === 'apikey' ? policy.apiKeys.find(candidate => `apikey:${candidate.name}` === subject) : undefined
  if (kind === 'apikey' && key === undefined) throw new UsageError(`${subject} is not an API key of this policy`)
  // A chat user's groups live in the policy's chatUsers, as they do when a Slack or Mattermost request arrives.
  const policyGroups = key?.groups ?? policy.chatGroups.get(subject) ?? []
  const identity: Identity = { subject, groups: [...new Set([...policyGroups, ...values.group])], kind }
  const decision = decide(policy, identity, action as Action, { registry: values.registry, repository: reference.repository, tag: reference.tag })
  io.out(decision.allow ? `ALLOW: ${decision.reason}` : `DENY (${decision.code as string}): ${decision.reason}`)
  io.out(`roles: ${decision.roles.length === 0 ? '(none)' : decision.roles.join(', ')}`)
  return decision.allow ? EXIT.ok : EXIT.failed
}

function policyCommand (args: string[], io: CliIo): number {
  const [subcommand, ...rest] = args
  if (subcommand === 'check') return checkCommand(rest, io)
  if (subcommand === 'explain') return explainCommand(rest, io)
  throw new UsageError('policy: use "policy check FILE" or "policy explain FILE ..."')
}

async function auditCommand (args: string[], io: CliIo): Promise<number> {
  const [subcommand, ...rest] = args
  if (subcommand !== 'migrate') throw new UsageError('audit: use "audit migrate --from sqlite:PATH --to postgres://…"')
  const { values, positionals } = asUsage(() => parseArgs({
    args: rest,
    options: { from: { type: 'string' }, to: { type: 'string' }, batch: { type: 'string', default: '500' } },
    allowPositionals: true
  }))
  if (positionals.length > 0) throw new UsageError(`audit migrate takes no arguments, got ${positionals.join(' ')}`)
  if (values.from?.startsWith('sqlite:') !== true || values.from.length === 'sqlite:'.length) throw new UsageError('--from must be sqlite:PATH')
  // DATABASE_URL, as the gateway reads it, keeps the password out of the process list that --to would show it in.
  const to = values.to ?? process.env.DATABASE_URL
  if (to === undefined || !/^postgres(ql)?:\/\//.test(to)) throw new UsageError('--to must be a postgres:// URL (or leave it out and set DATABASE_URL)')
  const batchSize = Number(values.batch)
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new UsageError('--batch must be an integer from 1 to 10000')
  const from = values.from.slice('sqlite:'.length)
  // Loaded only here: the other commands need neither database driver.
  const { migrateSqliteToPostgres, withoutPassword } = await import('./audit/migrate.js')
  io.out(`audit migrate: ${from} -> ${withoutPassword(to)}`)
  const summary = await migrateSqliteToPostgres({ from, to, batchSize })
  io.out(`records in SQLite: ${summary.source}`)
  io.out(`copied: ${summary.copied}; already in PostgreSQL: ${summary.alreadyThere}`)
  io.out(`verified: ${summary.verified} of ${summary.source} match in PostgreSQL (fields and manifest bytes)`)
  io.out(`checksum: SQLite ${summary.sourceChecksum}, PostgreSQL ${summary.targetChecksum}`)
  if (summary.verified === summary.source) {
    io.out('ok: every record is in PostgreSQL as it is in SQLite')
    return EXIT.ok
  }
  io.err(`mismatch: ${summary.source - summary.verified} record(s) differ in PostgreSQL, e.g. ${summary.mismatched.join(', ')}; ` +
    'they were not overwritten: compare them and remove the PostgreSQL copy to copy it again')
  return EXIT.failed
}

/** Runs one command; returns the exit code. Never prints a key except the one `apikey` creates. */
export async function runCli (argv: string[], io: CliIo): Promise<number> {
  const [command, ...args] = argv
  try {
    if (command === undefined) throw new UsageError('give a command')
    if (command === '--help' || command === '-h' || command === 'help') {
      io.out(USAGE)
      return EXIT.ok
    }
    if (command === 'serve') return await serveCommand(args, io)
    if (command === 'apikey') return apikeyCommand(args, io)
    if (command === 'policy') return policyCommand(args, io)
    if (command === 'audit') return await auditCommand(args, io)
    // Cleanups (issue 15): their own block; the work is in cli-cleanup.ts.
    if (command === 'cleanup') return await cleanupCommand(args, io)
    throw new UsageError(`unknown command ${JSON.stringify(command)}`)
  } catch (error) {
    if (error instanceof UsageError || error instanceof CleanupUsageError) {
      io.err(`${error.message}\n\n${USAGE}`)
      return EXIT.usage
    }
    io.err((error as Error).message)
    return EXIT.failed
  }
}

/** Run directly (also through npm's bin symlink, hence the realpath), not when imported. */
export function isMain (scriptPath: string | undefined, moduleUrl: string): boolean {
  if (scriptPath === undefined) return false
  try {
    return pathToFileURL(realpathSync(scriptPath)).href === moduleUrl
  } catch {
    return false
  }
}

if (isMain(process.argv[1], import.meta.url)) {
  const code = await runCli(process.argv.slice(2), {
    out: text => process.stdout.write(`${text}\n`),
    err: text => process.stderr.write(`${text}\n`),
    // Only a terminal gets the redrawn progress line; the tests run the CLI through pipes.
    /* c8 ignore next */
    ...(process.stdout.isTTY ? { progress: (text: string) => { process.stdout.write(`\r${text}`) } } : {})
  })
  process.exitCode = code
}
