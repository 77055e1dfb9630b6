// The gateway's REST API as the page uses it. Every call carries the credential in the Authorization header and
// nowhere else (never a URL, never a cookie); a 401 means the session is over, whatever the screen.

export interface Permission { allowed: boolean, approvalRequired?: boolean, reason?: string }
export interface Platform { os: string, architecture: string, variant?: string, digest: string }
export interface ImageTag {
  tag: string
  digest: string
  mediaType: string
  platforms?: Platform[]
  size?: number
  protected: boolean
  coTags: string[]
  actions: { delete: Permission, force: Permission, restore: Permission }
}
export interface TagDetail { tag: string, digest: string, created?: string, size?: number }
export interface Plan {
  auditId: string
  name: string
  tag: string
  digest: string
  mode: 'auto' | 'untag' | 'digest'
  action: 'untagged' | 'deleted-digest'
  planId: string
  dryRun: boolean
  deleted: boolean
  removedTags: string[]
  sharedWith: string[]
  referencedBy: Array<{ digest: string, tags: string[] }>
  allowed: boolean
  reason?: string
}
export interface RestoreResult { auditId: string, deletionId: string, name: string, restoredTags: string[] }
export interface AuditEvent {
  id: string
  time: string
  action: 'delete' | 'dry-run' | 'restore' | 'read' | 'approve'
  registry: string
  name: string
  tag: string
  removedTags: string[]
  outcome: string
  deleteAction?: string
  errorDetail?: string
  decision: { allow: boolean, reason: string }
  restorable: boolean
  /** On a deletion: the restore that undid it. */
  restoredBy?: string
}
export interface Me { subject: string, groups: string[], roles: string[] }
export interface UiConfig { oidc?: { issuer: string, clientId: string, scopes: string } }

/** An answer the gateway refused with, as its problem+json says it. */
export class ApiError extends Error {
  readonly status: number
  readonly code: string
  constructor (status: number, code: string, detail: string) {
    super(detail)
    this.status = status
    this.code = code
  }
}

/** Raised once per call that found the session gone; the app sends the user back to sign in. */
export class SessionEnded extends ApiError {}

export type Credential = () => string | undefined

export class Api {
  readonly #credential: Credential
  readonly #onSessionEnded: (error: SessionEnded) => void

  constructor (credential: Credential, onSessionEnded: (error: SessionEnded) => void) {
    this.#credential = credential
    this.#onSessionEnded = onSessionEnded
  }

  async me (): Promise<Me> {
    return await this.#call<Me>('GET', '/me')
  }

  async repositories (cursor?: string): Promise<{ items: Array<{ name: string }>, nextCursor?: string }> {
    return await this.#call('GET', `/repositories${query({ limit: '100', cursor })}`)
  }

  async tags (name: string, cursor?: string, limit = 100): Promise<{ items: ImageTag[], nextCursor?: string }> {
    return await this.#call('GET', `/images/${encodeURIComponent(name)}${query({ limit: String(limit), cursor })}`)
  }

  async tag (name: string, tag: string): Promise<TagDetail> {
    return await this.#call('GET', `/images/${imagePath(name, tag)}`)
  }

  async plan (name: string, tag: string): Promise<Plan> {
    return await this.#call('DELETE', `/images/${imagePath(name, tag)}${query({ dryRun: 'true' })}`)
  }

  /** Executes exactly the plan previewed: the gateway refuses with PLAN_STALE if the registry changed since. */
  async execute (plan: Plan): Promise<Plan> {
    return await this.#call('DELETE', `/images/${imagePath(plan.name, plan.tag)}${query({ mode: plan.mode, planId: plan.planId })}`)
  }

  async restore (deletionId: string): Promise<RestoreResult> {
    return await this.#call('POST', `/deletions/${encodeURIComponent(deletionId)}/restore`)
  }

  async activity (subject: string): Promise<{ items: AuditEvent[] }> {
    return await this.#call('GET', `/audit${query({ subject, limit: '50' })}`)
  }

  async #call<T> (method: string, path: string): Promise<T> {
    const credential = this.#credential()
    const headers: Record<string, string> = { accept: 'application/json' }
    if (credential !== undefined) headers.authorization = `Bearer ${credential}`
    const response = await fetch(path, { method, headers, credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer' })
    const body = await response.json().catch(() => ({})) as Record<string, unknown>
    if (response.ok) return body as T
    const detail = typeof body.detail === 'string' ? body.detail : `the gateway answered ${response.status}`
    const code = typeof body.code === 'string' ? body.code : 'INTERNAL_ERROR'
    if (response.status === 401) {
      const ended = new SessionEnded(401, code, detail)
      this.#onSessionEnded(ended)
      throw ended
    }
    throw new ApiError(response.status, code, detail)
  }
}

function query (values: Record<string, string | undefined>): string {
  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(values)) if (value !== undefined) params.set(key, value)
  const text = params.toString()
  return text === '' ? '' : `?${text}`
}

/** A repository name's slashes stay path segments; the tag is the last one. */
function imagePath (name: string, tag: string): string {
  return `${name.split('/').map(encodeURIComponent).join('/')}/${encodeURIComponent(tag)}`
}

/**
 * Loads every page of a listing, handing each to `onPage` as it comes, so the first rows show at once. `load` is
 * told which page it loads: a listing can ask a small first page, enough to fill the screen, so that it comes fast.
 */
export async function allPages<T> (load: (cursor: string | undefined, page: number) => Promise<{ items: T[], nextCursor?: string }>,
  onPage: (items: T[]) => void, maxPages = 200): Promise<void> {
  let cursor: string | undefined
  for (let page = 0; page < maxPages; page++) {
    const answer = await load(cursor, page)
    onPage(answer.items)
    cursor = answer.nextCursor
    if (cursor === undefined) return
  }
}
