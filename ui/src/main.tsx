import { render } from 'preact'
import type { UiConfig } from './api.js'
import { App } from './app.js'
import { Auth } from './auth.js'
import './style.css'

async function boot (): Promise<void> {
  const root = document.getElementById('app') as HTMLElement
  try {
    const response = await fetch('/ui/config.json', { credentials: 'omit', cache: 'no-store' })
    const config = await response.json() as UiConfig
    const auth = new Auth(config)
    const session = await auth.restore().catch(async (error: Error) => {
      await auth.end(`Sign-in failed: ${error.message}`)
      return undefined
    })
    // Preact renders beside what is there: the placeholder goes first.
    root.replaceChildren()
    render(<App config={config} auth={auth} initial={session} />, root)
  } catch (error) {
    root.textContent = `The page could not start: ${(error as Error).message}`
  }
}

void boot()
