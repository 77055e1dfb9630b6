/**
 * The one error catalogue. Every failure the gateway reports carries one of these codes; the REST edge maps
 * it to application/problem+json and the GraphQL edge to `extensions.code`, both from this table only.
 */
export const catalogue = {
  INVALID_REFERENCE: { status: 400, title: 'Invalid image reference' },
  INVALID_REQUEST: { status: 400, title: 'Invalid request' },
  REQUEST_TOO_LARGE: { status: 413, title: 'Request too large' },
  UNKNOWN_REGISTRY: { status: 400, title: 'Unknown registry' },
  UNAUTHENTICATED: { status: 401, title: 'Authentication required' },
  FORBIDDEN: { status: 403, title: 'Forbidden' },
  PROTECTED_TAG: { status: 403, title: 'Protected tag' },
  APPROVAL_REQUIRED: { status: 403, title: 'Approval required' },
  NOT_FOUND: { status: 404, title: 'Not found' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  SHARED_DIGEST: { status: 409, title: 'Digest shared with other tags' },
  REFERENCED_BY_INDEX: { status: 409, title: 'Manifest is part of a multi-platform image' },
  PLAN_STALE: { status: 409, title: 'Plan no longer holds' },
  NOT_RESTORABLE: { status: 409, title: 'Not a restorable deletion' },
  ALREADY_RESTORED: { status: 409, title: 'Already restored' },
  TAG_EXISTS: { status: 409, title: 'Tag points elsewhere now' },
  CLEANUP_RUN_EXISTS: { status: 409, title: 'Cleanup already run or cancelled' },
  RESTORE_UNAVAILABLE: { status: 410, title: 'Deleted content is gone' },
  RATE_LIMITED: { status: 429, title: 'Rate limited' },
  /** The caller went away mid-request (nginx's 499): only the audit trail and the logs ever see this code. */
  REQUEST_ABORTED: { status: 499, title: 'Client closed the request' },
  INTERNAL_ERROR: { status: 500, title: 'Internal error' },
  DELETE_DISABLED: { status: 501, title: 'Deletion disabled on the registry' },
  UPSTREAM_AUTH_FAILED: { status: 502, title: 'Registry refused the gateway credentials' },
  UPSTREAM_ERROR: { status: 502, title: 'Registry error' },
  UPSTREAM_UNAVAILABLE: { status: 503, title: 'Registry unavailable' },
  IDENTITY_PROVIDER_UNAVAILABLE: { status: 503, title: 'Identity provider unavailable' },
  UPSTREAM_TIMEOUT: { status: 504, title: 'Registry timeout' },
  AUDIT_UNAVAILABLE: { status: 503, title: 'Audit trail unavailable' }
} as const satisfies Record<string, { status: number, title: string }>

export type ErrorCode = keyof typeof catalogue

/** Extra, code-specific fields that are safe to show to the caller (never secrets). */
export type ErrorExtras = Record<string, unknown>

export interface GatewayErrorOptions {
  extras?: ErrorExtras
  retryAfter?: number
  headers?: Record<string, string>
  cause?: unknown
}

export class GatewayError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly title: string
  readonly detail: string
  readonly extras: ErrorExtras
  /** Seconds the caller should wait, surfaced as the Retry-After header. */
  readonly retryAfter?: number
  /** Extra response headers (e.g. WWW-Authenticate); transport-neutral so both edges can use them. */
  readonly headers: Record<string, string>

  constructor (code: ErrorCode, detail: string, options: GatewayErrorOptions = {}) {
    // A caller's mistake needs no stack trace, and capturing one through Fastify's deep stack costs more than
    // the rest of answering a 400 or 401 (measured by the benchmark).
    const stackTraceLimit = Error.stackTraceLimit
    if (catalogue[code].status < 500) Error.stackTraceLimit = 0
    super(detail, options.cause === undefined ? undefined : { cause: options.cause })
    Error.stackTraceLimit = stackTraceLimit
    this.name = 'GatewayError'
    this.code = code
    this.status = catalogue[code].status
    this.title = catalogue[code].title
    this.detail = detail
    this.extras = options.extras ?? {}
    this.retryAfter = options.retryAfter
    this.headers = options.headers ?? {}
  }
}

export function isGatewayError (value: unknown): value is GatewayError {
  return value instanceof GatewayError
}

/** A caller's input broke a rule: a 400 that names the field and the rule, so it can be fixed without guessing. */
export function invalidField (field: string, rule: string, detail: string): GatewayError {
  return new GatewayError('INVALID_REQUEST', detail, { extras: { field, rule } })
}
