import { useEffect, useMemo, useRef, useState } from 'preact/hooks'
import { Api, ApiError, type Me, type SessionEnded, type UiConfig } from './api.js'
import { Auth, credentialOf, type Session } from './auth.js'
import { Activity } from './activity.js'
import { Repositories } from './repositories.js'
import { Tags } from './tags.js'

export type Screen = { name: 'repositories' } | { name: 'tags', repository: string } | { name: 'activity' }

export function App ({ config, auth, initial }: { config: UiConfig, auth: Auth, initial: Session | undefined }) {
  const [session, setSession] = useState<Session | undefined>(initial)
  const [notice, setNotice] = useState<string | undefined>(() => auth.takeReason())
  const sessionRef = useRef(session)
  sessionRef.current = session
  const api = useMemo(() => new Api(() => credentialOf(sessionRef.current), (error: SessionEnded) => {
    const reason = `Signed out: ${error.message}`
    void auth.end(reason).then(() => {
      setNotice(auth.takeReason())
      setSession(undefined)
    })
  }), [auth])

  if (session === undefined) {
    return <SignIn config={config} auth={auth} notice={notice} onSession={setSession} />
  }
  return <SignedIn api={api} session={session} onSignOut={async () => { await auth.signOut(session); setNotice(undefined); setSession(undefined) }} />
}

function SignIn ({ config, auth, notice, onSession }: { config: UiConfig, auth: Auth, notice: string | undefined, onSession: (session: Session) => void }) {
  const [key, setKey] = useState('')
  const heading = useRef<HTMLHeadingElement>(null)
  useEffect(() => { heading.current?.focus() }, [])
  return (
    <main class='signin'>
      <h1 tabIndex={-1} ref={heading}>Registry delete gateway</h1>
      {notice !== undefined && <p class='notice' role='alert'>{notice}</p>}
      <p>Browse your images, preview what a deletion removes, delete, and undo.</p>
      {config.oidc !== undefined && (
        <section aria-labelledby='oidc-heading'>
          <h2 id='oidc-heading'>Sign in</h2>
          <button type='button' class='primary' onClick={() => { void auth.signIn() }}>Sign in with {new URL(config.oidc.issuer).host}</button>
        </section>
      )}
      <section aria-labelledby='key-heading'>
        <h2 id='key-heading'>Use an API key</h2>
        <form onSubmit={event => { event.preventDefault(); if (key.trim() !== '') onSession(auth.useApiKey(key.trim())) }}>
          <label for='api-key'>API key</label>
          <input id='api-key' type='password' autocomplete='off' spellcheck={false} value={key} onInput={event => setKey(event.currentTarget.value)} />
          <button type='submit'>Use this key</button>
          <p class='hint'>Kept in this tab only, and sent only in the Authorization header.</p>
        </form>
      </section>
    </main>
  )
}

function SignedIn ({ api, session, onSignOut }: { api: Api, session: Session, onSignOut: () => Promise<void> }) {
  const [screen, setScreen] = useState<Screen>({ name: 'repositories' })
  const [me, setMe] = useState<Me | undefined>()
  const [error, setError] = useState<string | undefined>()
  useEffect(() => {
    api.me().then(setMe, (failure: unknown) => { if (failure instanceof ApiError) setError(failure.message) })
  }, [api])
  const go = (next: Screen) => { setScreen(next) }
  return (
    <>
      <header class='top'>
        <a class='skip' href='#content'>Skip to content</a>
        <span class='brand'>Registry delete gateway</span>
        <nav aria-label='Main'>
          <button type='button' aria-current={screen.name !== 'activity' ? 'page' : undefined} onClick={() => go({ name: 'repositories' })}>Repositories</button>
          <button type='button' aria-current={screen.name === 'activity' ? 'page' : undefined} onClick={() => go({ name: 'activity' })}>My activity</button>
        </nav>
        <span class='who' title={me?.roles.join(', ')}>{me?.subject ?? (session.kind === 'apikey' ? 'API key' : '…')}</span>
        <button type='button' onClick={() => { void onSignOut() }}>Sign out</button>
      </header>
      <main id='content'>
        {error !== undefined && <p class='error' role='alert'>{error}</p>}
        {screen.name === 'repositories' && <Repositories api={api} onOpen={repository => go({ name: 'tags', repository })} />}
        {screen.name === 'tags' && <Tags api={api} repository={screen.repository} onBack={() => go({ name: 'repositories' })} />}
        {screen.name === 'activity' && <Activity api={api} me={me} />}
      </main>
    </>
  )
}
