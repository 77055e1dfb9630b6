import { Fragment, type ComponentChildren } from 'preact'
import { useEffect, useMemo, useRef, useState } from 'preact/hooks'
import { allPages, ApiError, type Api, type ImageTag, type Plan } from './api.js'
import { age, bytes, platforms, shortDigest } from './format.js'
import { UndoButton } from './undo.js'

type SortKey = 'tag' | 'digest' | 'age' | 'size'
type Phase = 'browse' | 'preview' | 'confirm' | 'results'
type Planned = { tag: string, plan?: Plan, error?: string }
type Outcome = { tag: string, result?: Plan, error?: string }

/** Tags whose age is looked up (one request each) once the list is in; the rest show a dash. */
const AGE_LOOKUPS = 30
/**
 * The first page asks this many tags: about a screenful, so a cold repository shows rows after a quarter of the
 * registry reads a full page costs (each tag of a page is a manifest the gateway reads). Later pages ask the most.
 */
const FIRST_PAGE = 25

function message (failure: unknown): string {
  return failure instanceof Error ? failure.message : String(failure)
}

export function Tags ({ api, repository, onBack }: { api: Api, repository: string, onBack: () => void }) {
  const [tags, setTags] = useState<ImageTag[]>([])
  const [loading, setLoading] = useState(true)
  const [reload, setReload] = useState(0)
  const [error, setError] = useState<string | undefined>()
  const [created, setCreated] = useState<Record<string, string | undefined>>({})
  const [filter, setFilter] = useState('')
  const [sort, setSort] = useState<{ key: SortKey, ascending: boolean }>({ key: 'tag', ascending: true })
  const [selected, setSelected] = useState<Set<string>>(new Set())
  const [phase, setPhase] = useState<Phase>('browse')
  const [plans, setPlans] = useState<Planned[]>([])
  const [outcomes, setOutcomes] = useState<Outcome[]>([])
  const [busy, setBusy] = useState(false)
  const heading = useRef<HTMLHeadingElement>(null)

  useEffect(() => {
    let gone = false
    setTags([])
    setLoading(true)
    setError(undefined)
    const loaded: ImageTag[] = []
    // Every page shows as it comes: a long table renders only the rows in view (TagTable), so a render is cheap.
    allPages((cursor, page) => api.tags(repository, cursor, page === 0 ? FIRST_PAGE : 100), items => {
      loaded.push(...items)
      if (!gone) setTags([...loaded])
    })
      .then(async () => {
        // Ages come from each image's config: a request per tag, so only for the first rows, two at a time.
        const queue = loaded.slice(0, AGE_LOOKUPS).map(item => item.tag)
        const worker = async (): Promise<void> => {
          for (let tag = queue.shift(); tag !== undefined; tag = queue.shift()) {
            const name = tag
            const detail = await api.tag(repository, name).catch(() => undefined)
            if (gone) return
            setCreated(all => ({ ...all, [name]: detail?.created }))
          }
        }
        await Promise.all([worker(), worker()])
      })
      .catch((failure: unknown) => { if (!gone) setError(message(failure)) })
      .finally(() => { if (!gone) setLoading(false) })
    return () => { gone = true }
  }, [api, repository, reload])

  useEffect(() => { heading.current?.focus() }, [phase])

  const shown = useMemo(() => {
    const needle = filter.trim().toLowerCase()
    const list = needle === '' ? [...tags] : tags.filter(item => item.tag.toLowerCase().includes(needle))
    const value = (item: ImageTag): string | number => {
      if (sort.key === 'size') return item.size ?? -1
      if (sort.key === 'age') return -(Date.parse(created[item.tag] ?? '') || 0)
      return sort.key === 'digest' ? item.digest : item.tag
    }
    list.sort((a, b) => {
      const [x, y] = [value(a), value(b)]
      const order = x < y ? -1 : x > y ? 1 : 0
      return sort.ascending ? order : -order
    })
    return list
  }, [tags, filter, sort, created])

  const toggle = (tag: string) => {
    setSelected(current => {
      const next = new Set(current)
      if (next.has(tag)) next.delete(tag)
      else next.add(tag)
      return next
    })
  }
  const allShownSelected = shown.length > 0 && shown.every(item => selected.has(item.tag))
  const toggleAll = () => {
    setSelected(current => {
      const next = new Set(current)
      for (const item of shown) {
        if (allShownSelected) next.delete(item.tag)
        else next.add(item.tag)
      }
      return next
    })
  }

  const preview = async () => {
    setBusy(true)
    setPhase('preview')
    const chosen = tags.filter(item => selected.has(item.tag)).map(item => item.tag)
    setPlans(chosen.map(tag => ({ tag })))
    const done: Planned[] = []
    // One at a time: each dry-run checks the repository's co-tags, and the gateway bounds those per caller.
    for (const tag of chosen) {
      try {
        done.push({ tag, plan: await api.plan(repository, tag) })
      } catch (failure) {
        done.push({ tag, error: message(failure) })
      }
      setPlans([...done, ...chosen.slice(done.length).map(rest => ({ tag: rest }))])
    }
    setBusy(false)
  }

  const deletable = plans.filter(item => item.plan?.allowed === true)
  const execute = async () => {
    setBusy(true)
    setPhase('results')
    const done: Outcome[] = []
    for (const { tag, plan } of deletable) {
      try {
        done.push({ tag, result: await api.execute(plan as Plan) })
      } catch (failure) {
        done.push({ tag, error: failure instanceof ApiError ? `${failure.code}: ${failure.message}` : message(failure) })
      }
      setOutcomes([...done])
    }
    setSelected(new Set())
    setBusy(false)
  }

  const sortButton = (key: SortKey, label: string) => (
    <th scope='col' aria-sort={sort.key === key ? (sort.ascending ? 'ascending' : 'descending') : undefined}>
      <button type='button' class='sort' onClick={() => setSort(current => ({ key, ascending: current.key === key ? !current.ascending : true }))}>
        {label}<span aria-hidden='true'>{sort.key === key ? (sort.ascending ? ' ▲' : ' ▼') : ''}</span>
      </button>
    </th>
  )

  if (phase === 'preview' || phase === 'confirm') {
    const going = deletable.flatMap(item => (item.plan as Plan).removedTags)
    return (
      <section aria-labelledby='preview-heading'>
        <h1 id='preview-heading' tabIndex={-1} ref={heading}>{phase === 'preview' ? 'Preview' : 'Confirm deletion'}: {repository}</h1>
        <p role='status' class='status'>{busy ? `Checking ${plans.length} tags…` : `${deletable.length} of ${plans.length} tags can be deleted`}</p>
        <ul class='plans'>
          {plans.map(item => <PlanItem key={item.tag} item={item} />)}
        </ul>
        {phase === 'preview' && (
          <div class='actions'>
            <button type='button' onClick={() => setPhase('browse')}>Back to tags</button>
            {!busy && deletable.length > 0 && <button type='button' class='danger' onClick={() => setPhase('confirm')}>Delete {deletable.length} {deletable.length === 1 ? 'tag' : 'tags'}…</button>}
          </div>
        )}
        {phase === 'confirm' && (
          <div class='confirm' role='group' aria-labelledby='confirm-what'>
            <p id='confirm-what'>This removes from <strong>{repository}</strong>: {going.map((tag, index) => <Fragment key={tag}><code>{tag}</code>{index < going.length - 1 ? ', ' : ''}</Fragment>)}.
              {' '}Space is freed at the registry's next garbage collection; until then each can be undone.
            </p>
            <div class='actions'>
              <button type='button' onClick={() => setPhase('preview')}>Cancel</button>
              <button type='button' class='danger' onClick={() => { void execute() }}>Yes, delete {going.length} {going.length === 1 ? 'tag' : 'tags'}</button>
            </div>
          </div>
        )}
      </section>
    )
  }

  if (phase === 'results') {
    return (
      <section aria-labelledby='results-heading'>
        <h1 id='results-heading' tabIndex={-1} ref={heading}>Results: {repository}</h1>
        <p role='status' class='status'>{busy ? 'Deleting…' : `${outcomes.filter(item => item.result !== undefined).length} of ${outcomes.length} deleted`}</p>
        <ul class='results'>
          {outcomes.map(item => (
            <li key={item.tag}>
              <code>{item.tag}</code>{' '}
              {item.result !== undefined ? <Done api={api} tag={item.tag} result={item.result} /> : null}
              {item.error !== undefined ? <span class='error'>{item.error}</span> : null}
            </li>
          ))}
        </ul>
        <div class='actions'>
          <button type='button' disabled={busy} onClick={() => { setPhase('browse'); setReload(count => count + 1) }}>Back to tags</button>
        </div>
      </section>
    )
  }

  return (
    <section aria-labelledby='tags-heading'>
      <p><button type='button' class='link' onClick={onBack}>← Repositories</button></p>
      <h1 id='tags-heading' tabIndex={-1} ref={heading}>{repository}</h1>
      <div class='toolbar'>
        <label for='tag-filter'>Filter tags</label>
        <input id='tag-filter' type='search' value={filter} onInput={event => setFilter(event.currentTarget.value)} />
        <button type='button' class='primary' disabled={selected.size === 0} onClick={() => { void preview() }}>
          Preview deletion ({selected.size})
        </button>
      </div>
      {error !== undefined && <p class='error' role='alert'>{error}</p>}
      <p role='status' class='status'>{loading && tags.length === 0 ? 'Loading tags…' : `${shown.length} of ${tags.length} tags${loading ? ' (loading more…)' : ''}, ${selected.size} selected`}</p>
      <TagTable
        repository={repository} shown={shown} selected={selected} created={created} allShownSelected={allShownSelected}
        header={<>{sortButton('tag', 'Tag')}{sortButton('digest', 'Digest')}<th scope='col'>Co-tags</th><th scope='col'>Platforms</th><th scope='col'>Protected</th>{sortButton('age', 'Age')}{sortButton('size', 'Size')}</>}
        onToggle={toggle} onToggleAll={toggleAll}
      />
    </section>
  )
}

/** Past this many rows the table renders only those in view (and a few around them), in a scrolling box. */
const WINDOWED_FROM = 200
/** Rows rendered above and below the ones in view, so that scrolling and Tab find them already there. */
const OVERSCAN = 20

interface TagTableProps {
  repository: string
  shown: ImageTag[]
  selected: Set<string>
  created: Record<string, string | undefined>
  allShownSelected: boolean
  header: ComponentChildren
  onToggle: (tag: string) => void
  onToggleAll: () => void
}

/**
 * The tags table. A long one is windowed: rows have one height (their cells do not wrap), so the rows in view
 * follow from the scroll position, and spacers stand for the others; the table still tells assistive technology
 * how many rows there are and where each rendered one sits (aria-rowcount, aria-rowindex).
 */
function TagTable ({ repository, shown, selected, created, allShownSelected, header, onToggle, onToggleAll }: TagTableProps) {
  const box = useRef<HTMLDivElement>(null)
  const [view, setView] = useState({ top: 0, height: 800, rowHeight: 37 })
  const windowed = shown.length > WINDOWED_FROM
  const measure = () => {
    const element = box.current
    if (element === null) return
    const row = element.querySelector<HTMLElement>('tbody tr:not(.spacer)')
    const next = { top: element.scrollTop, height: element.clientHeight, rowHeight: row?.offsetHeight ?? view.rowHeight }
    if (next.top !== view.top || next.height !== view.height || next.rowHeight !== view.rowHeight) setView(next)
  }
  useEffect(measure)
  const first = windowed ? Math.max(0, Math.floor(view.top / view.rowHeight) - OVERSCAN) : 0
  const count = windowed ? Math.ceil(view.height / view.rowHeight) + 2 * OVERSCAN : shown.length
  const rows = shown.slice(first, first + count)
  const below = shown.length - first - rows.length
  const spacer = (rowsStoodFor: number) => (
    <tr class='spacer' aria-hidden='true'><td colSpan={8} style={{ height: `${rowsStoodFor * view.rowHeight}px` }} /></tr>
  )
  return (
    <div class={windowed ? 'scroll windowed' : 'scroll'} ref={box} onScroll={windowed ? measure : undefined}>
      <table class='tags' aria-rowcount={windowed ? shown.length + 1 : undefined}>
        <caption class='visually-hidden'>Tags of {repository}</caption>
        <thead>
          <tr aria-rowindex={windowed ? 1 : undefined}>
            <th scope='col'><input type='checkbox' aria-label='Select every tag shown' checked={allShownSelected} onChange={onToggleAll} /></th>
            {header}
          </tr>
        </thead>
        <tbody>
          {first > 0 && spacer(first)}
          {rows.map((item, index) => (
            <tr key={item.tag} class={selected.has(item.tag) ? 'selected' : undefined} aria-rowindex={windowed ? first + index + 2 : undefined}>
              <td><input type='checkbox' aria-label={`Select ${item.tag}`} checked={selected.has(item.tag)} onChange={() => onToggle(item.tag)} /></td>
              <th scope='row'>{item.tag}</th>
              <td><code title={item.digest}>{shortDigest(item.digest)}</code></td>
              <td>{item.coTags.length === 0 ? '—' : item.coTags.join(', ')}</td>
              <td>{platforms(item.platforms)}</td>
              <td>
                {item.protected ? <span class='badge' title={item.actions.delete.reason}>protected</span> : ''}
                {item.actions.delete.approvalRequired === true ? <span class='badge' title={item.actions.delete.reason}>needs approval</span> : ''}
              </td>
              <td>{age(created[item.tag])}</td>
              <td>{bytes(item.size)}</td>
            </tr>
          ))}
          {below > 0 && spacer(below)}
        </tbody>
      </table>
    </div>
  )
}

function PlanItem ({ item }: { item: Planned }) {
  const { plan } = item
  if (item.error !== undefined) return <li class='plan'><code>{item.tag}</code> <span class='error'>{item.error}</span></li>
  if (plan === undefined) return <li class='plan'><code>{item.tag}</code> checking…</li>
  const kept = plan.sharedWith.filter(tag => !plan.removedTags.includes(tag))
  return (
    <li class={plan.allowed ? 'plan' : 'plan denied'}>
      <code>{item.tag}</code>{' '}
      {plan.allowed
        ? plan.action === 'untagged'
          ? <span>untag: only this tag goes{kept.length > 0 ? <>; co-tags kept: {kept.join(', ')}</> : ''}</span>
          : <span>delete the manifest {shortDigest(plan.digest)}: removes {plan.removedTags.join(', ')}</span>
        : <span><strong>Not allowed.</strong> {plan.reason}</span>}
    </li>
  )
}

function Done ({ api, tag, result }: { api: Api, tag: string, result: Plan }) {
  return (
    <>
      <span class='ok'>{result.action === 'untagged' ? 'untagged' : 'manifest deleted'}: {result.removedTags.join(', ')}</span>{' '}
      <UndoButton api={api} deletionId={result.auditId} label={`Undo ${tag}`} />
    </>
  )
}
