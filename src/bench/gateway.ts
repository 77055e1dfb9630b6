/**
 * The gateway as it runs in production: `node dist/server.js` in its own process, configured by a YAML file in
 * a temp dir (registry, policy with two API keys, audit database), listening on a free loopback port.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { generateApiKey, sha256Hex } from '../auth/api-key.js'
import { freePort, HOST, startNodeChild, type Child } from './processes.js'

export interface BenchGateway extends Child {
  /** May do anything anywhere. */
  adminKey: string
  /** Valid, but no rule covers the benchmark's repositories: its deletions are 403 FORBIDDEN. */
  outsiderKey: string
  /** Holds only `audit`, and only on bench/narrow/**: the narrow caller of the audit-list scenario. */
  auditorKey: string
  dir: string
  /** Stops the process and removes its temp dir (config, policy, audit database, log). */
  close: () => Promise<void>
}

export async function startGateway (registryUrl: string, options: { logLevel?: string, auditPath?: string } = {}): Promise<BenchGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'rdg-bench-gateway-'))
  const adminKey = generateApiKey()
  const outsiderKey = generateApiKey()
  const auditorKey = generateApiKey()
  const policyFile = join(dir, 'policy.yaml')
  writeFileSync(policyFile, stringify({
    apiKeys: [{ name: 'bench-admin', sha256: sha256Hex(adminKey) }, { name: 'bench-outsider', sha256: sha256Hex(outsiderKey) }, { name: 'bench-auditor', sha256: sha256Hex(auditorKey) }],
    roles: {
      admin: [{ actions: ['*'], repositories: ['**'] }],
      elsewhere: [{ actions: ['delete'], repositories: ['elsewhere/**'] }],
      narrowAuditor: [{ actions: ['audit'], repositories: ['bench/narrow/**'] }]
    },
    bindings: [{ role: 'admin', subjects: ['apikey:bench-admin'] }, { role: 'elsewhere', subjects: ['apikey:bench-outsider'] }, { role: 'narrowAuditor', subjects: ['apikey:bench-auditor'] }]
  }))
  const port = await freePort()
  const configFile = join(dir, 'config.yaml')
  writeFileSync(configFile, stringify({
    host: HOST,
    port,
    // Per-request log lines would measure stdout, not the gateway; the bare app logs nothing either.
    logLevel: options.logLevel ?? 'warn',
    registries: { default: { url: registryUrl } },
    policyFile,
    audit: { path: options.auditPath ?? join(dir, 'audit.db') },
    // The default (600 per caller per minute) would answer most of the benchmark's requests with 429.
    limits: { requestsPerWindow: 1_000_000 },
    coTagConcurrency: 16
  }))
  // Only the config file speaks: the environment's REGISTRY_URL, PORT, … would override it.
  const env: NodeJS.ProcessEnv = { ...process.env, CONFIG_FILE: configFile }
  for (const name of ['HOST', 'PORT', 'LOG_LEVEL', 'POLICY_FILE', 'AUDIT_DB', 'REGISTRY_URL', 'REGISTRY_USERNAME', 'REGISTRY_PASSWORD']) delete env[name]
  let child: Child
  try {
    child = await startNodeChild({
      script: fileURLToPath(new URL('../server.js', import.meta.url)),
      env,
      port,
      logPath: join(dir, 'gateway.log'),
      readyPath: '/readyz'
    })
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  return {
    ...child,
    adminKey,
    outsiderKey,
    auditorKey,
    dir,
    async close () {
      await child.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
