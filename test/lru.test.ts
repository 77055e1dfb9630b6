import t from 'tap'
import { Lru } from '../src/lru.js'

t.test('keeps the most recently used entries up to its capacity', async t => {
  const lru = new Lru<string, number>(2)
  lru.set('a', 1)
  lru.set('b', 2)
  t.equal(lru.get('a'), 1)
  lru.set('c', 3)
  t.equal(lru.get('b'), undefined, 'b was the least recently used')
  t.equal(lru.get('a'), 1)
  t.equal(lru.get('c'), 3)
  lru.set('a', 4)
  t.equal(lru.size, 2, 'replacing a value does not grow it')
  lru.delete('a')
  t.equal(lru.get('a'), undefined)
  lru.set('d', 5)
  lru.deleteWhere(value => value > 4)
  t.equal(lru.size, 1)
  t.equal(lru.get('c'), 3)
  t.throws(() => new Lru(0), RangeError)
})
