import { useEffect, useRef, useState } from 'preact/hooks'
import { ApiError, type Api, type AuditEvent, type Me } from './api.js'
import { UndoButton } from './undo.js'

/** The caller's own recent audit records (GET /audit needs the audit action), with Undo on restorable deletions. */
export function Activity ({ api, me }: { api: Api, me: Me | undefined }) {
  const [events, setEvents] = useState<AuditEvent[] | undefined>()
  const [error, setError] = useState<string | undefined>()
  const heading = useRef<HTMLHeadingElement>(null)
  useEffect(() => { heading.current?.focus() }, [])
  useEffect(() => {
    if (me === undefined) return
    let gone = false
    api.activity(me.subject).then(answer => { if (!gone) setEvents(answer.items) }, (failure: unknown) => {
      if (gone) return
      setError(failure instanceof ApiError && failure.code === 'FORBIDDEN'
        ? 'Your roles do not include the audit action, so your activity cannot be listed here. Ask an administrator.'
        : (failure as Error).message)
    })
    return () => { gone = true }
  }, [api, me])
  return (
    <section aria-labelledby='activity-heading'>
      <h1 id='activity-heading' tabIndex={-1} ref={heading}>My activity</h1>
      {error !== undefined && <p class='error' role='alert'>{error}</p>}
      {error === undefined && <p role='status' class='status'>{events === undefined ? 'Loading…' : `${events.length} recent records`}</p>}
      {events !== undefined && events.length > 0 && (
        <div class='scroll'>
          <table>
            <caption class='visually-hidden'>Your recent audit records, newest first</caption>
            <thead><tr><th scope='col'>When</th><th scope='col'>What</th><th scope='col'>Image</th><th scope='col'>Outcome</th><th scope='col'>Undo</th></tr></thead>
            <tbody>
              {events.map(event => (
                <tr key={event.id}>
                  <td><time dateTime={event.time}>{new Date(event.time).toLocaleString()}</time></td>
                  <td>{event.action}{event.deleteAction === undefined ? '' : ` (${event.deleteAction})`}</td>
                  <th scope='row'>{event.name}:{event.tag}{event.removedTags.length > 1 ? ` (+ ${event.removedTags.filter(tag => tag !== event.tag).join(', ')})` : ''}</th>
                  <td>{event.outcome}{event.outcome === 'denied' ? `: ${event.decision.reason}` : ''}{event.restoredBy === undefined ? '' : ', undone'}</td>
                  <td>{event.restorable ? <UndoButton api={api} deletionId={event.id} label={`Undo ${event.name}:${event.tag}`} /> : ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}
