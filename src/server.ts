import { pathToFileURL } from 'node:url'
import { buildApp } from './app.js'
import { loadConfig } from './config/load.js'

export interface RunningServer {
  address: string
  close: () => Promise<void>
}

/** Process entry: config, logger, listen, graceful shutdown. */
export async function serve (argv: readonly string[] = process.argv.slice(2), env = process.env): Promise<RunningServer> {
  const config = loadConfig(argv, env)
  const app = await buildApp(config)
  const address = await app.listen({ host: config.host, port: config.port })
  let closing: Promise<void> | undefined
  const shutdown = async (): Promise<void> => {
    closing ??= app.close()
    await closing
  }
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      app.log.info({ signal }, 'shutting down')
      void shutdown()
    })
  }
  return { address, close: shutdown }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  serve().catch((error: unknown) => {
    process.stderr.write(`registry-delete-gateway failed to start: ${(error as Error).message}\n`)
    process.exitCode = 1
  })
}
