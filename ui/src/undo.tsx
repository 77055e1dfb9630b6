import { useState } from 'preact/hooks'
import { type Api } from './api.js'

/** Restores a deletion (the registry keeps the bytes until its garbage collection); says how it went in place. */
export function UndoButton ({ api, deletionId, label }: { api: Api, deletionId: string, label: string }) {
  const [state, setState] = useState<{ busy: boolean, done?: string, error?: string }>({ busy: false })
  if (state.done !== undefined) return <span class='ok'>{state.done}</span>
  return (
    <>
      <button
        type='button' disabled={state.busy} aria-label={label} onClick={() => {
          setState({ busy: true })
          api.restore(deletionId).then(
            result => setState({ busy: false, done: `restored: ${result.restoredTags.join(', ')}` }),
            (failure: Error) => setState({ busy: false, error: failure.message }))
        }}
      >Undo
      </button>
      {state.error !== undefined && <span class='error' role='alert'> {state.error}</span>}
    </>
  )
}
