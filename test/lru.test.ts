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

t.test('evicts the least recently used entry however entries were used, deleted and replaced in between', async t => {
  // Checked against a plain model (an array in order of use), over a long mixed sequence, so evictions keep going
  // through the Map's rehashes.
  const lru = new Lru<number, number>(50)
  const model: number[] = []
  let seed = 7
  const random = (bound: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return (seed >>> 16) % bound
  }
  const mismatches: string[] = []
  for (let step = 0; step < 20_000; step++) {
    const key = random(120)
    const operation = random(10)
    const at = model.indexOf(key)
    if (operation < 5) {
      lru.set(key, step)
      if (at !== -1) model.splice(at, 1)
      model.push(key)
      if (model.length > 50) model.shift()
    } else if (operation < 9) {
      if ((lru.get(key) !== undefined) !== (at !== -1)) mismatches.push(`step ${step}: get ${key}`)
      if (at !== -1) model.push(...model.splice(at, 1))
    } else {
      lru.delete(key)
      if (at !== -1) model.splice(at, 1)
    }
  }
  t.same(mismatches, [])
  t.equal(lru.size, model.length)
  for (const key of model) t.not(lru.get(key), undefined, `${key} is kept`)
})
