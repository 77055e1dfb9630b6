import { useEffect, useRef, useState } from 'preact/hooks'
import { allPages, ApiError, type Api } from './api.js'

export function Repositories ({ api, onOpen }: { api: Api, onOpen: (name: string) => void }) {
  const [names, setNames] = useState<string[]>([])
  const [loading, setLoading] = useState(true)
  const [error, setError] = useState<string | undefined>()
  const [filter, setFilter] = useState('')
  const heading = useRef<HTMLHeadingElement>(null)
  useEffect(() => {
    heading.current?.focus()
    let gone = false
    allPages(cursor => api.repositories(cursor), items => { if (!gone) setNames(all => [...all, ...items.map(item => item.name)]) })
      .catch((failure: unknown) => { if (!gone && failure instanceof ApiError) setError(failure.message) })
      .finally(() => { if (!gone) setLoading(false) })
    return () => { gone = true }
  }, [api])
  const needle = filter.trim().toLowerCase()
  const shown = needle === '' ? names : names.filter(name => name.includes(needle))
  return (
    <section aria-labelledby='repositories-heading'>
      <h1 id='repositories-heading' tabIndex={-1} ref={heading}>Repositories</h1>
      <div class='toolbar'>
        <label for='repository-filter'>Filter repositories</label>
        <input id='repository-filter' type='search' value={filter} onInput={event => setFilter(event.currentTarget.value)} />
      </div>
      {error !== undefined && <p class='error' role='alert'>{error}</p>}
      <p role='status' class='status'>{loading ? 'Loading repositories…' : `${shown.length} of ${names.length} repositories`}</p>
      <ul class='repositories'>
        {shown.map(name => (
          <li key={name}><button type='button' class='link' onClick={() => onOpen(name)}>{name}</button></li>
        ))}
      </ul>
    </section>
  )
}
