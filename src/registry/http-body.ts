/**
 * Reading what a registry answers: bounded bodies and single header values. Used by every registry call, so it
 * lives apart from the token service and the error mapping that happen to need it too.
 */
import { finished } from 'node:stream'
import type { Dispatcher } from 'undici'
import { GatewayError } from '../errors.js'

/** undici gives repeated headers as arrays; the first one is what a registry means. */
export function headerValue (headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

/**
 * Reads a body up to a limit; past it the stream is destroyed so a hostile upstream cannot exhaust memory.
 * Listens for chunks rather than iterating: an async iterator per response cost more than the rest of reading a
 * few-KB manifest, and a page of tags reads a hundred of them.
 */
export async function readLimited (body: Dispatcher.ResponseData['body'], limit: number): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > limit) {
        body.off('data', onData)
        body.destroy()
        reject(new GatewayError('UPSTREAM_ERROR', `the registry sent a response larger than ${limit} bytes; refusing to read it.`))
        return
      }
      chunks.push(chunk)
    }
    body.on('data', onData)
    // After a refusal above this settles nothing more: the promise is already rejected.
    finished(body, error => {
      if (error === undefined || error === null) resolve(Buffer.concat(chunks))
      else reject(error)
    })
  })
}
