import t from 'tap'
import { GatewayError } from '../../src/errors.js'
import { asGatewayError, toProblem } from '../../src/http/problem.js'

t.test('catalogue errors pass through; problems carry code, type, extras and retryAfter', async t => {
  const limited = new GatewayError('RATE_LIMITED', 'slow down', { retryAfter: 3, extras: { upstreamStatus: 429 } })
  t.equal(asGatewayError(limited), limited)
  t.same(toProblem(limited, 'req-1'), {
    type: 'https://github.com/registry-delete-gateway/errors#rate-limited',
    title: 'Rate limited',
    status: 429,
    detail: 'slow down',
    code: 'RATE_LIMITED',
    requestId: 'req-1',
    upstreamStatus: 429,
    retryAfter: 3
  })
  t.equal(new GatewayError('NOT_FOUND', 'x', { cause: new Error('inner') }).cause instanceof Error, true, 'the cause is kept for logs')
})

t.test('schema validation errors name the field and the rule', async t => {
  const typed = asGatewayError(Object.assign(new Error('v'), { validation: [{ instancePath: '/dryRun', message: 'must be boolean', params: {} }], validationContext: 'querystring' }))
  t.match(typed, { code: 'INVALID_REQUEST', detail: 'querystring parameter dryRun must be boolean.', extras: { field: 'dryRun', rule: 'must be boolean', location: 'querystring' } })
  const unknown = asGatewayError(Object.assign(new Error('v'), { validation: [{ instancePath: '', message: 'must NOT have additional properties', params: { additionalProperty: 'dryrun' } }], validationContext: 'querystring' }))
  t.match(unknown, { extras: { field: 'dryrun', rule: 'is not a known parameter' } })
  const whole = asGatewayError(Object.assign(new Error('v'), { validation: [{ instancePath: '', params: {} }] }))
  t.match(whole, { detail: 'request is invalid.', extras: { field: 'request', location: 'request' } })
})

t.test('other 4xx become INVALID_REQUEST; anything else is an internal error that reveals nothing', async t => {
  t.match(asGatewayError(Object.assign(new Error('Unsupported Media Type'), { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE' })),
    { code: 'INVALID_REQUEST', status: 400, detail: 'Unsupported Media Type', extras: { rule: 'FST_ERR_CTP_INVALID_MEDIA_TYPE' } })
  const internal = asGatewayError(new Error('database password is hunter2'))
  t.equal(internal.code, 'INTERNAL_ERROR')
  t.notMatch(internal.detail, /hunter2/)
  t.equal(asGatewayError(Object.assign(new Error('boom'), { statusCode: 503 })).code, 'INTERNAL_ERROR')
})

t.test('client errors carry no stack trace; server errors keep theirs; the limit is restored', async t => {
  const before = Error.stackTraceLimit
  t.notMatch(new GatewayError('INVALID_REFERENCE', 'bad').stack, /\n\s+at /)
  t.match(new GatewayError('UPSTREAM_ERROR', 'broken').stack, /\n\s+at /)
  t.equal(Error.stackTraceLimit, before)
})
