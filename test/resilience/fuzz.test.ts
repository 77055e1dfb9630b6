/**
 * Hostile input, property-based (fast-check): names, tags, registry names, query strings and GraphQL documents.
 * Every answer must be below 500 and well-formed, and nothing invalid may reach the registry (a real registry
 * behind a counting dispatcher: every request it receives is checked against the distribution grammar).
 *
 * `npm test` runs a sample (FUZZ_RUNS, default 12000 generated cases plus the fixed examples); `npm run fuzz` runs
 * FUZZ_RUNS=100000. FUZZ_SEED replays a run: a failure prints the seed and the path of the shrunk counterexample.
 */
import fc from 'fast-check'
import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { ADMIN_KEY, countingDispatcher, startGateway } from '../fixtures/gateway.js'
import { FUZZ_PROPERTIES, type FuzzHarness } from '../fixtures/hostile-input/index.js'

const TOTAL_RUNS = Number(process.env.FUZZ_RUNS ?? 12000)
const SEED = process.env.FUZZ_SEED === undefined ? Date.now() ^ (Math.random() * 0x7fffffff) : Number(process.env.FUZZ_SEED)

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const counted = countingDispatcher(t)
const gateway = await startGateway(t, {
  registries: { default: { url: registry.url }, mirror: { url: registry.url } },
  dispatcher: counted.dispatcher,
  config: { limits: { requestsPerWindow: 1_000_000, coTagScansPerCaller: 10_000 } }
})
const harness: FuzzHarness = {
  inject: async options => await gateway.app.inject(options),
  upstream: counted.requests,
  registries: ['default', 'mirror'],
  key: ADMIN_KEY
}

t.comment(`fuzz seed ${SEED} (replay with FUZZ_SEED=${SEED}), ${TOTAL_RUNS} generated cases`)
const planned = FUZZ_PROPERTIES.map(property => Math.max(1, Math.ceil(TOTAL_RUNS * property.share)))
t.ok(planned.reduce((sum, runs) => sum + runs, 0) >= TOTAL_RUNS, 'the properties\' shares cover the whole budget')

t.test('distinct oversized documents do not pile up in memory (parse and validation caches)', async t => {
  // Each is about 54 kB of aliases: refused (too many fields), but its parsed form must not be kept.
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < 200; i++) {
    const query = `{ ${Array.from({ length: 2500 }, (_, k) => `a${k}: me { subject }`).join(' ')} } # ${i}`
    const response = await gateway.app.inject({ method: 'POST', url: '/graphql', headers: { 'x-api-key': ADMIN_KEY }, payload: { query } })
    if (response.statusCode !== 400) t.fail(`expected 400, got ${response.statusCode}`)
  }
  const grown = (process.memoryUsage().heapUsed - before) / 1024 / 1024
  t.ok(grown < 300, `heap grew ${grown.toFixed(0)} MiB after 200 refused 54 kB documents`)
})

let ran = 0
FUZZ_PROPERTIES.forEach((property, index) => {
  t.test(property.name, async t => {
    const numRuns = planned[index] as number
    const started = performance.now()
    const details = await fc.check(property.build(harness), {
      numRuns,
      seed: SEED + index,
      ...(property.examples === undefined ? {} : { examples: property.examples })
    })
    ran += details.numRuns
    const what = `${details.numRuns} cases (${property.examples?.length ?? 0} of them fixed) in ${Math.round(performance.now() - started)} ms`
    if (details.failed) {
      t.fail(`${fc.defaultReportMessage(details) ?? 'failed'}\n(${what})`)
    } else {
      t.ok(details.numRuns >= numRuns, what)
    }
  })
})

t.teardown(() => {
  console.log(`# fuzz: ${ran} cases run, ${counted.requests.length} registry requests in all`)
})
