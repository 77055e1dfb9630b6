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
  // With Slack and Mattermost configured, so their optional routes are served and checked too.
  const gateway = await startGateway(t, { registries: { default: { url: 'http://127.0.0.1:9' } }, config: { chat: { slack: { signingSecret: 'a-signing-secret' }, mattermost: { token: 'a-command-token', actionSecret: 'an-action-secret-long-enough', publicUrl: 'https://gateway.example' } } } })
  // HEAD routes are Fastify's automatic twins of GET routes; GraphiQL's, the docs page's and the web page's assets
  // are not the API (the web page's config is).
  const page = (url: string): boolean => url.startsWith('/ui') && url !== '/ui/config.json'
  const served = gateway.app.registeredRoutes
    .filter(route => route.method !== 'HEAD' && !route.url.startsWith('/graphiql') && !route.url.startsWith('/docs') && !page(route.url))
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

t.test('openapi.yaml is a valid OpenAPI 3.1 document', async t => {
  const { Validator } = await import('@seriousme/openapi-schema-validator')
  const result = await new Validator().validate(spec)
  t.same(result.errors, undefined, JSON.stringify(result.errors, null, 1)?.slice(0, 2000))
  t.equal(result.valid, true)
  t.equal(spec.openapi, '3.1.0')
})

t.test('the response checker catches undeclared statuses, media types and body shapes', async t => {
  const { contractProblems } = await import('../fixtures/contract.js')
  t.same(contractProblems('GET', '/me', 200, 'application/json', { subject: 's', groups: [], roles: [] }), [])
  t.match(contractProblems('GET', '/me', 200, 'application/json', { subject: 1 }), [/must have required property/])
  t.match(contractProblems('GET', '/me', 200, 'text/html', {}), [/answered text\/html/])
  t.same(contractProblems('GET', '/not-in-the-contract', 200, 'application/json', {}), [])
  t.match(contractProblems('GET', '/healthz', 418, 'application/json', {}), [/answered 418, which openapi.yaml does not declare/])
  t.match(contractProblems('DELETE', '/images/a/b/c', 200, 'application/json', { digest: 'x' }), [/must have required property/])
})
