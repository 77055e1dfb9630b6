/** Issue 13: response_url goes only to allowed origins, and a failed post is reported, never thrown. */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { allowedResponseUrl, responseUrlPoster } from '../../src/chat/slack/response-url.js'

t.test('only an allowed origin, without credentials, is accepted', async t => {
  const origins = ['https://hooks.slack.com']
  t.equal(allowedResponseUrl('https://hooks.slack.com/actions/T1/2/x', origins)?.href, 'https://hooks.slack.com/actions/T1/2/x')
  for (const refused of ['https://hooks.slack.com.evil.example/x', 'http://hooks.slack.com/x', 'https://hooks.slack.com:8443/x',
    'https://user@hooks.slack.com/x', 'https://:pw@hooks.slack.com/x', '/actions/x', 'nonsense', 42, undefined]) {
    t.equal(allowedResponseUrl(refused, origins), undefined, String(refused))
  }
})

t.test('a post the endpoint refuses, or that cannot connect, is reported to onFailure', async t => {
  const server = createServer((request, response) => { request.resume(); response.statusCode = 500; response.end('no') })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const failures: string[] = []
  const post = responseUrlPoster({ timeoutMs: 2000, onFailure: error => failures.push((error as Error).message) })
  await post(`http://127.0.0.1:${port}/x`, { text: 'hi' })
  await new Promise(resolve => server.close(resolve))
  await post(`http://127.0.0.1:${port}/x`, { text: 'hi' })
  t.equal(failures[0], 'response_url answered 500')
  t.match(failures[1], /ECONNREFUSED|connect/)
  t.equal(failures.length, 2)
})
