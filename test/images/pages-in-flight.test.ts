import t from 'tap'
import { PagesInFlight } from '../../src/images/browse.js'

t.test('at most the limit per caller at once; slots come back however the work ends', async t => {
  const pages = new PagesInFlight(2)
  let finishFirst!: () => void
  let failSecond!: (error: Error) => void
  const first = pages.run('apikey:a', async () => await new Promise<string>(resolve => { finishFirst = () => { resolve('first') } }))
  const second = pages.run('apikey:a', async () => await new Promise<string>((_resolve, reject) => { failSecond = reject }))
  await t.rejects(pages.run('apikey:a', async () => 'third'), { code: 'RATE_LIMITED', retryAfter: 1, message: /apikey:a already has 2 pages/ })
  t.equal(await pages.run('apikey:b', async () => 'other caller'), 'other caller')
  finishFirst()
  t.equal(await first, 'first')
  t.equal(await pages.run('apikey:a', async () => 'a slot came back'), 'a slot came back')
  failSecond(new Error('registry down'))
  await t.rejects(second, /registry down/)
  const [x, y] = await Promise.all([pages.run('apikey:a', async () => 'x'), pages.run('apikey:a', async () => 'y')])
  t.same([x, y], ['x', 'y'], 'both slots came back, the failed one too')
})
