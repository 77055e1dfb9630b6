/**
 * The gateway as it runs in production: `node server.js` (compiled) in its own process, configured by a YAML file
 * in a temp dir (registry, policy, audit database), listening on a free loopback port.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { freePort, HOST } from './ports.js'
import { startNodeChild, type Child } from './processes.js'

export interface GatewayProcessOptions {
  registryUrl: string
  /** The policy document (API keys, roles, bindings, …), written as the gateway's policy file. */
  policy: object
  /** Other configuration keys, merged over the defaults (logLevel warn, a rate limit nobody reaches). */
  config?: Record<string, unknown>
  /** Prefix of the temp dir's name. */
  name?: string
  /** How long `stop` waits after SIGTERM before SIGKILL; default 5 s. */
  killAfterMs?: number
}

export interface GatewayProcess extends Child {
  dir: string
  /** Stops the process and removes its temp dir (config, policy, audit database, log). */
  close: () => Promise<void>
}

// Only the config file speaks: these would override it or point elsewhere.
const OVERRIDING_ENV = ['HOST', 'PORT', 'LOG_LEVEL', 'POLICY_FILE', 'AUDIT_DB', 'REGISTRY_URL', 'REGISTRY_USERNAME', 'REGISTRY_PASSWORD', 'CONFIG_FILE']

export async function startGatewayProcess (options: GatewayProcessOptions): Promise<GatewayProcess> {
  const dir = mkdtempSync(join(tmpdir(), `${options.name ?? 'rdg-gateway'}-`))
  try {
    const policyFile = join(dir, 'policy.yaml')
    writeFileSync(policyFile, stringify(options.policy))
    const port = await freePort()
    const configFile = join(dir, 'config.yaml')
    writeFileSync(configFile, stringify({
      host: HOST,
      port,
      // Per-request log lines would measure stdout, not the gateway.
      logLevel: 'warn',
      registries: { default: { url: options.registryUrl } },
      policyFile,
      audit: { path: join(dir, 'audit.db') },
      // The default (600 per caller per minute) would answer most of a load run's requests with 429.
      limits: { requestsPerWindow: 1_000_000, coTagScansPerCaller: 10_000 },
      ...options.config
    }))
    const env: NodeJS.ProcessEnv = { ...process.env }
    for (const name of OVERRIDING_ENV) delete env[name]
    env.CONFIG_FILE = configFile
    const child = await startNodeChild({
      // the tools build compiles src/ next to testing/
      script: fileURLToPath(new URL('../src/server.js', import.meta.url)),
      env,
      port,
      logPath: join(dir, 'gateway.log'),
      readyPath: '/readyz',
      killAfterMs: options.killAfterMs
    })
    return {
      ...child,
      dir,
      async close () {
        await child.stop()
        rmSync(dir, { recursive: true, force: true })
      }
    }
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
}
