/**
 * Reading what a registry answers: bounded bodies and single header values. Used by every registry call, so it
 * lives apart from the token service and the error mapping that happen to need it too.
 */
import type { Dispatcher } from 'undici'
import { GatewayError } from '../errors.js'

/** undici gives repeated headers as arrays; the first one is what a registry means. */
export function headerValue (headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

/** Reads a body up to a limit; past it the stream is destroyed so a hostile upstream cannot exhaust memory. */
export async function readLimited (body: Dispatcher.ResponseData['body'], limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += (chunk as Buffer).length
    if (size > limit) {
      body.destroy()
      throw new GatewayError('UPSTREAM_ERROR', `the registry sent a response larger than ${limit} bytes; refusing to read it.`)
    }
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}
