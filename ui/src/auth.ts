// Who the page acts as: an OIDC access token (authorization code + PKCE with oidc-client-ts) or an API key a
// tool's operator pastes. Either lives in this tab's sessionStorage only and goes out only in the Authorization
// header: never in a URL, a cookie or localStorage.
import { UserManager, WebStorageStateStore, type User } from 'oidc-client-ts'
import type { UiConfig } from './api.js'

const API_KEY = 'rdg.apiKey'
const REASON = 'rdg.signedOutBecause'

export type Session = { kind: 'oidc', user: User } | { kind: 'apikey', key: string }

export class Auth {
  readonly manager: UserManager | undefined

  constructor (config: UiConfig) {
    const here = `${location.origin}/ui/`
    this.manager = config.oidc === undefined
      ? undefined
      : new UserManager({
        authority: config.oidc.issuer,
        client_id: config.oidc.clientId,
        scope: config.oidc.scopes,
        redirect_uri: here,
        post_logout_redirect_uri: here,
        response_type: 'code',
        userStore: new WebStorageStateStore({ store: sessionStorage }),
        stateStore: new WebStorageStateStore({ store: sessionStorage }),
        loadUserInfo: false,
        // Both would need frames or timers talking to the provider; an expired session sends the user to sign in.
        automaticSilentRenew: false,
        monitorSession: false
      })
  }

  /** Finishes a sign-in redirect when the URL carries one, then answers the session this tab holds, if any. */
  async restore (): Promise<Session | undefined> {
    const url = new URL(location.href)
    if (this.manager !== undefined && url.searchParams.has('state') && (url.searchParams.has('code') || url.searchParams.has('error'))) {
      try {
        await this.manager.signinRedirectCallback()
      } finally {
        // The code and state leave the address bar (and the history) whatever happened.
        history.replaceState(null, '', url.pathname)
      }
    }
    const key = sessionStorage.getItem(API_KEY)
    if (key !== null) return { kind: 'apikey', key }
    const user = await this.manager?.getUser()
    if (user === null || user === undefined) return undefined
    if (user.expired === true) {
      await this.end('Your session has expired. Sign in again.')
      return undefined
    }
    return { kind: 'oidc', user }
  }

  async signIn (): Promise<void> {
    await this.manager?.signinRedirect()
  }

  useApiKey (key: string): Session {
    sessionStorage.setItem(API_KEY, key)
    return { kind: 'apikey', key }
  }

  /**
   * Signing out of an OIDC session also ends it at the identity provider (which asks, then sends the browser
   * back here), so that the next person at this browser is not signed in as the last one.
   */
  async signOut (session: Session): Promise<void> {
    if (session.kind === 'oidc' && this.manager !== undefined) {
      await this.manager.signoutRedirect({ id_token_hint: session.user.id_token })
      return
    }
    await this.end()
  }

  /** Forgets the credential in this tab; `reason` is shown on the sign-in screen. */
  async end (reason?: string): Promise<void> {
    sessionStorage.removeItem(API_KEY)
    await this.manager?.removeUser()
    if (reason === undefined) sessionStorage.removeItem(REASON)
    else sessionStorage.setItem(REASON, reason)
  }

  /** Why the last session ended, once. */
  takeReason (): string | undefined {
    const reason = sessionStorage.getItem(REASON) ?? undefined
    sessionStorage.removeItem(REASON)
    return reason
  }
}

export function credentialOf (session: Session | undefined): string | undefined {
  if (session === undefined) return undefined
  return session.kind === 'apikey' ? session.key : session.user.access_token
}
