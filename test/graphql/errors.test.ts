import t from 'tap'
import { GraphQLError } from 'graphql'
import { GatewayError } from '../../src/errors.js'
import { graphqlErrorFormatter, isGraphQLDocumentError } from '../../src/graphql/errors.js'

function context (logged: unknown[]): Parameters<typeof graphqlErrorFormatter>[1] {
  const log = { error: (details: unknown) => { logged.push(details) } }
  return { reply: { request: { id: 'req-9' }, log }, app: { log } } as never
}

t.test('catalogue errors become extensions with the REST code; the 200 stays', async t => {
  const original = new GatewayError('SHARED_DIGEST', 'shared', { extras: { sharedWith: ['b'] } })
  const { statusCode, response } = graphqlErrorFormatter({ data: null, errors: [new GraphQLError('shared', { path: ['deleteImage'], originalError: original })] }, context([]))
  t.equal(statusCode, 200)
  t.same(response.errors?.[0], { message: 'shared', path: ['deleteImage'], extensions: { code: 'SHARED_DIGEST', status: 409, requestId: 'req-9', sharedWith: ['b'] } })
})

t.test('unexpected resolver failures are logged and reported without internals', async t => {
  const logged: unknown[] = []
  const { response } = graphqlErrorFormatter({ data: { me: null }, errors: [new GraphQLError('secret internals', { originalError: new Error('secret internals') })] }, context(logged))
  t.equal(response.errors?.[0]?.extensions?.code, 'INTERNAL_ERROR')
  t.notMatch(JSON.stringify(response), /secret internals/)
  t.equal(logged.length, 1)
})

t.test('GraphQL\'s own errors pass through unchanged; without a reply the app logger is used', async t => {
  const plain = new GraphQLError('Cannot query field "x"')
  const nested = new GraphQLError('wrapper', { originalError: Object.assign(new Error('wrapper'), { errors: [plain] }) })
  const log = { error: () => { t.fail('nothing to log') } }
  const { statusCode, response } = graphqlErrorFormatter({ errors: [plain, nested], statusCode: 400 } as never, { app: { log } } as never)
  t.equal(statusCode, 400)
  t.same(response.errors?.map(error => error.message), ['Cannot query field "x"', 'wrapper'])
  t.equal(isGraphQLDocumentError({ errors: [plain] }), true)
  t.equal(isGraphQLDocumentError({ errors: ['no'] }), false)
  t.equal(isGraphQLDocumentError({ errors: [new Error('too deep')] }), true, 'mercurius\'s own errors count too')
  t.equal(isGraphQLDocumentError(new Error('x')), false)
})
