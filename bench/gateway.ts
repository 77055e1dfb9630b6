/** The gateway under benchmark: its own process, with one key that may do anything and one that may do nothing here. */
import { generateApiKey, sha256Hex } from '../src/identity/api-key.js'
import { startGatewayProcess, type GatewayProcess } from '../testing/gateway-process.js'

export interface BenchGateway extends GatewayProcess {
  /** May do anything anywhere. */
  adminKey: string
  /** Valid, but no rule covers the benchmark's repositories: its deletions are 403 FORBIDDEN. */
  outsiderKey: string
  /** Holds only `audit`, and only on bench/narrow/**: the narrow caller of the audit-list scenario. */
  auditorKey: string
}

export async function startGateway (registryUrl: string, options: { logLevel?: string, auditPath?: string, audit?: Record<string, unknown>, config?: Record<string, unknown> } = {}): Promise<BenchGateway> {
  const adminKey = generateApiKey()
  const outsiderKey = generateApiKey()
  const auditorKey = generateApiKey()
  const gateway = await startGatewayProcess({
    registryUrl,
    name: 'rdg-bench-gateway',
    policy: {
      apiKeys: [{ name: 'bench-admin', sha256: sha256Hex(adminKey) }, { name: 'bench-outsider', sha256: sha256Hex(outsiderKey) }, { name: 'bench-auditor', sha256: sha256Hex(auditorKey) }],
      roles: {
        admin: [{ actions: ['*'], repositories: ['**'] }],
        elsewhere: [{ actions: ['delete'], repositories: ['elsewhere/**'] }],
        narrowAuditor: [{ actions: ['audit'], repositories: ['bench/narrow/**'] }]
      },
      bindings: [{ role: 'admin', subjects: ['apikey:bench-admin'] }, { role: 'elsewhere', subjects: ['apikey:bench-outsider'] }, { role: 'narrowAuditor', subjects: ['apikey:bench-auditor'] }]
    },
    // The bare app logs nothing either.
    config: {
      logLevel: options.logLevel ?? 'warn',
      coTagConcurrency: 16,
      ...(options.auditPath === undefined ? {} : { audit: { path: options.auditPath } }),
      ...(options.audit === undefined ? {} : { audit: options.audit }),
      ...options.config
    }
  })
  return { ...gateway, adminKey, outsiderKey, auditorKey }
}
