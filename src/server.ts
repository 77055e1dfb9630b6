import { pathToFileURL } from 'node:url'
import Fastify from 'fastify'
import { buildApp } from './app.js'
import { loadConfig } from './config/load.js'
import { metricsRoutes } from './http/metrics.js'
import { createLogger } from './logging.js'
import { createMetrics } from './metrics.js'

export interface RunningServer {
  address: string
  /** Where /metrics is served when metrics.port gives it its own listener. */
  metricsAddress?: string
  close: () => Promise<void>
}

/** Process entry: config, logger, listen, graceful shutdown. */
export async function serve (argv: readonly string[] = process.argv.slice(2), env = process.env): Promise<RunningServer> {
  const config = loadConfig(argv, env)
  const logger = createLogger(config.logLevel)
  const metrics = createMetrics()
  const app = await buildApp(config, { logger, metrics })
  const address = await app.listen({ host: config.host, port: config.port })
  const metricsApp = config.metrics.enabled && config.metrics.port !== undefined
    ? Fastify({ loggerInstance: logger.child({ listener: 'metrics' }) })
    : undefined
  let metricsAddress: string | undefined
  if (metricsApp !== undefined) {
    await metricsApp.register(metricsRoutes(metrics))
    metricsAddress = await metricsApp.listen({ host: config.host, port: config.metrics.port })
  }

  let closing: Promise<void> | undefined
  // Fastify stops accepting, lets in-flight requests (deletions included) finish, then closes pools and the store.
  const close = async (): Promise<void> => {
    closing ??= Promise.all([app.close(), metricsApp?.close()]).then(() => {
      for (const signal of SIGNALS) process.removeListener(signal, onSignal)
    })
    await closing
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    app.log.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'shutting down')
    const deadline = setTimeout(() => {
      app.log.error({ timeoutMs: config.shutdownTimeoutMs }, 'in-flight requests did not finish in time; exiting anyway')
      process.exit(1)
    }, config.shutdownTimeoutMs)
    deadline.unref()
    void close()
  }
  for (const signal of SIGNALS) process.once(signal, onSignal)
  return { address, ...(metricsAddress === undefined ? {} : { metricsAddress }), close }
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  serve().catch((error: unknown) => {
    process.stderr.write(`registry-delete-gateway failed to start: ${(error as Error).message}\n`)
    process.exitCode = 1
  })
}
