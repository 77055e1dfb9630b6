import t from 'tap'
import { CursorCodec } from '../../src/images/browse-cursor.js'

const catalog = { kind: 'catalog' as const, registry: 'default', scope: 'team/' }
const tags = { kind: 'tags' as const, registry: 'default', scope: 'team/app' }
const any = (): boolean => true

t.test('catalog cursors are sealed: unreadable, unforgeable, bound to this process and this listing', async t => {
  const codec = new CursorCodec()
  const cursor = codec.encode({ ...catalog, after: 'team/secret-project' })
  t.notMatch(Buffer.from(cursor, 'base64url').toString('latin1'), /secret/)
  t.not(codec.encode({ ...catalog, after: 'team/secret-project' }), cursor, 'a fresh IV each time')
  t.equal(codec.decode(cursor, catalog, any), 'team/secret-project')
  t.throws(() => codec.decode(cursor, { ...catalog, scope: 'other/' }, any), { code: 'INVALID_REQUEST', extras: { field: 'cursor' } }, 'another prefix')
  t.throws(() => new CursorCodec().decode(cursor, catalog, any), { code: 'INVALID_REQUEST' }, 'another process')
  t.throws(() => codec.decode('c2hvcnQ', catalog, any), { code: 'INVALID_REQUEST' }, 'too short to be sealed')
  t.throws(() => codec.decode(Buffer.from(JSON.stringify(['catalog', 'default', 'team/', 'team/x'])).toString('base64url'), catalog, any),
    { code: 'INVALID_REQUEST' }, 'a plain one made up by the caller')
  t.equal(codec.decode(undefined, catalog, any), undefined)
})

t.test('tag cursors are plain, survive restarts, and still must name a valid position of the same listing', async t => {
  const cursor = new CursorCodec().encode({ ...tags, after: 'v1' })
  t.equal(new CursorCodec().decode(cursor, tags, any), 'v1')
  t.throws(() => new CursorCodec().decode(cursor, tags, () => false), { code: 'INVALID_REQUEST' })
  t.throws(() => new CursorCodec().decode(cursor, { ...tags, registry: 'mirror' }, any), { code: 'INVALID_REQUEST' })
  t.throws(() => new CursorCodec().decode('%%%', tags, any), { code: 'INVALID_REQUEST' })
})

t.test('replicas sharing browse.cursorSecret read each other\'s catalog cursors; another secret cannot', async t => {
  const secret = 'a-secret-every-replica-holds-0123456789'
  const cursor = CursorCodec.fromSecret(secret).encode({ ...catalog, after: 'team/next' })
  t.equal(CursorCodec.fromSecret(secret).decode(cursor, catalog, any), 'team/next')
  t.throws(() => CursorCodec.fromSecret(`${secret}!`).decode(cursor, catalog, any), { code: 'INVALID_REQUEST' })
  t.throws(() => new CursorCodec().decode(cursor, catalog, any), { code: 'INVALID_REQUEST' }, 'nor a process without it')
})
