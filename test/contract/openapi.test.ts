import { readFileSync } from 'node:fs'
import t from 'tap'
import { parse } from 'yaml'
import { startGateway } from '../fixtures/gateway.js'

const spec = parse(readFileSync(new URL('../../openapi.yaml', import.meta.url), 'utf8'))

/** The spec's `/images/{name}/{tag}` is one Fastify wildcard route, since names contain slashes. */
function fastifyUrl (path: string): string {
  return path === '/images/{name}/{tag}' ? '/images/*' : path.replace(/\{(\w+)\}/g, ':$1')
}

t.test('every route the app serves is in openapi.yaml, and every documented route is served', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: 'http://127.0.0.1:9' } } })
  // HEAD routes are Fastify's automatic twins of GET routes; GraphiQL's and the docs page's assets are not the API.
  const served = gateway.app.registeredRoutes
    .filter(route => route.method !== 'HEAD' && !route.url.startsWith('/graphiql') && !route.url.startsWith('/docs'))
    .map(route => `${route.method} ${route.url}`)
  const documented = Object.entries(spec.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, operations]) => Object.keys(operations).map(method => `${method.toUpperCase()} ${fastifyUrl(path)}`))
  const graphqlGet = 'GET /graphql'
  t.same([...new Set(served)].filter(route => route !== graphqlGet).sort(), documented.sort())
})

t.test('the spec lists every catalogue code', async t => {
  const { catalogue } = await import('../../src/errors.js')
  t.same([...spec.components.schemas.Problem.properties.code.enum].sort(), Object.keys(catalogue).sort())
})
