import { GatewayError } from '../errors.js'
import { headerValue } from './http-body.js'

/** What the gateway was doing, so every error can say it in its detail. */
export interface OperationContext {
  registry: string
  operation: string
  repository?: string
  reference?: string
}

interface RegistryErrorEntry { code?: string, message?: string, detail?: unknown }

/** The registry's own error codes, when its body is the distribution error JSON. */
export function registryErrorCodes (body: Buffer | undefined): RegistryErrorEntry[] {
  if (body === undefined || body.length === 0) return []
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'))
    const errors = (parsed as { errors?: unknown } | null)?.errors
    return Array.isArray(errors) ? errors.filter((entry): entry is RegistryErrorEntry => typeof entry === 'object' && entry !== null) : []
  } catch {
    return []
  }
}

function target (context: OperationContext): string {
  if (context.repository === undefined) return `registry "${context.registry}"`
  return `${context.repository}${context.reference === undefined ? '' : `:${context.reference}`}`.replace(/:sha256:/, '@sha256:') +
    ` on registry "${context.registry}"`
}

/** Retry-After is either delta-seconds or an HTTP date; anything else falls back to a conservative default. */
export function parseRetryAfter (value: string | undefined, now = Date.now()): number {
  if (value === undefined) return 1
  if (/^\d+$/.test(value.trim())) return Number(value.trim())
  const date = Date.parse(value)
  if (Number.isNaN(date)) return 1
  return Math.max(0, Math.ceil((date - now) / 1000))
}

/** The registry answered with the expected status but a body or headers the gateway cannot act on. */
export function malformedAnswer (upstreamStatus: number, detail: string): GatewayError {
  return new GatewayError('UPSTREAM_ERROR', detail, { extras: { upstreamStatus } })
}

/** Maps a registry answer that is not the expected success to a catalogue error. */
export function mapRegistryResponse (
  status: number,
  headers: Record<string, string | string[] | undefined>,
  body: Buffer | undefined,
  context: OperationContext
): GatewayError {
  const codes = registryErrorCodes(body)
  const first = codes[0]
  const upstream = { upstreamStatus: status, ...(first?.code === undefined ? {} : { upstreamCode: first.code }) }
  const what = target(context)
  if (status === 404) {
    return new GatewayError('NOT_FOUND', `${what} does not exist. Check the repository name and tag (the tag may already be deleted).`, { extras: upstream })
  }
  if (status === 405) {
    if (codes.some(entry => entry.code === 'UNSUPPORTED')) {
      return new GatewayError('DELETE_DISABLED',
        `registry "${context.registry}" has deletion disabled. Enable it with storage.delete.enabled: true in the registry configuration (or REGISTRY_STORAGE_DELETE_ENABLED=true) and restart the registry.`,
        { extras: { ...upstream, reason: 'delete-disabled' } })
    }
    return new GatewayError('DELETE_DISABLED',
      `registry "${context.registry}" refused ${context.operation} with 405 (Allow: ${headerValue(headers, 'allow') ?? 'unknown'}); it is probably in read-only maintenance mode (storage.maintenance.readonly). Retry when maintenance is over.`,
      { extras: { ...upstream, reason: 'read-only' } })
  }
  if (status === 429) {
    const retryAfter = parseRetryAfter(headerValue(headers, 'retry-after'))
    return new GatewayError('RATE_LIMITED', `registry "${context.registry}" is rate limiting the gateway; retry after ${retryAfter} s.`, {
      extras: upstream,
      retryAfter
    })
  }
  if (status === 401 || status === 403) {
    return new GatewayError('UPSTREAM_AUTH_FAILED',
      `registry "${context.registry}" refused the gateway's credentials for ${context.operation} of ${what} (${status}${first?.code === undefined ? '' : ` ${first.code}`}). The gateway's registry account needs pull and delete on this repository.`,
      { extras: upstream })
  }
  const said = first?.message === undefined ? '' : `: ${String(first.message).slice(0, 200)}`
  return new GatewayError('UPSTREAM_ERROR', `registry "${context.registry}" answered ${status} to ${context.operation} of ${what}${said}.`, {
    extras: upstream
  })
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT', 'ABORT_ERR'])

/** The connection was up and broke during the exchange: the registry was reached and failed, a 502. */
const MID_EXCHANGE_CODES = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'])

/** Maps a failure to talk to the registry at all (refused, reset, timed out) to a catalogue error. */
export function mapTransportError (error: unknown, context: OperationContext, timeoutMs: number): GatewayError {
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string' && TIMEOUT_CODES.has(code)) {
    return new GatewayError('UPSTREAM_TIMEOUT',
      `registry "${context.registry}" did not answer ${context.operation} within ${timeoutMs} ms. Check the registry's health or raise its timeout in the gateway configuration.`,
      { cause: error })
  }
  if (typeof code === 'string' && MID_EXCHANGE_CODES.has(code)) {
    return new GatewayError('UPSTREAM_ERROR',
      `registry "${context.registry}" closed the connection during ${context.operation} (${code}); it may or may not have acted.`,
      { cause: error })
  }
  const why = typeof code === 'string' ? ` (${code})` : ''
  return new GatewayError('UPSTREAM_UNAVAILABLE',
    `registry "${context.registry}" could not be reached for ${context.operation}${why}. Check that it is running and reachable from the gateway.`,
    { cause: error })
}
