/** Loopback ports for the registries, gateways and fakes that tests, the demo, the benchmark and the soak start. */
import { createServer } from 'node:net'

export const HOST = '127.0.0.1'

/**
 * Binds and releases `port` (0: any free one) and returns it, so it can be handed to a child process or used as a
 * port nothing listens on. Another process could take it before the child binds; on loopback that window is small
 * enough to accept. Rejects when `port` is taken.
 */
export async function freePort (port = 0): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, HOST, resolve)
  })
  const bound = (server.address() as { port: number }).port
  await new Promise(resolve => server.close(resolve))
  return bound
}
