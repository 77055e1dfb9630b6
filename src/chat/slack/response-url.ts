/**
 * Posts to a Slack response_url. The URL comes from a signed request, but the gateway still posts only to the
 * origins the operator allows: a signing secret that leaked must not turn the gateway into a request forwarder
 * into its own network.
 */
import { request } from 'undici'

export type Poster = (url: string, message: object) => Promise<void>

/** The URL when its origin is allowed (and it carries no credentials), else undefined. */
export function allowedResponseUrl (value: unknown, origins: readonly string[]): URL | undefined {
  if (typeof value !== 'string') return undefined
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return undefined
  }
  if (url.username !== '' || url.password !== '') return undefined
  return origins.includes(url.origin) ? url : undefined
}

export function responseUrlPoster (options: { timeoutMs: number, onFailure: (error: unknown) => void }): Poster {
  return async (url, message) => {
    try {
      const response = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(message),
        headersTimeout: options.timeoutMs,
        bodyTimeout: options.timeoutMs
      })
      await response.body.dump()
      if (response.statusCode >= 300) throw new Error(`response_url answered ${response.statusCode}`)
    } catch (error) {
      // The user sees nothing more then; what happened is in the audit trail, and the post is not retried
      // because Slack accepts only a few posts per response_url.
      options.onFailure(error)
    }
  }
}
