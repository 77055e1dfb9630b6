/** Issue 13: the Mattermost messages, for the plan shapes and failures the real-registry tests do not all reach. */
import t from 'tap'
import { deniedMessage, escapeMarkdown, failureText, statusMessage } from '../../src/chat/mattermost/messages.js'
import { GatewayError } from '../../src/errors.js'
import type { DeleteImageResult } from '../../src/images/shapes.js'

const plan: DeleteImageResult = {
  auditId: 'a1',
  registry: 'default',
  name: 'team-a/app',
  tag: 'pr-1',
  digest: 'sha256:abc',
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  mode: 'digest',
  action: 'deleted-digest',
  strategy: 'digest',
  planId: 'plan_1',
  dryRun: true,
  deleted: false,
  removedTags: ['pr-1'],
  sharedWith: [],
  referencedBy: [],
  allowed: false
}

t.test('reasons and details are shown as text: Markdown, links and mentions are escaped', async t => {
  t.equal(escapeMarkdown('@channel [x](http://y) *b* `c` <d>'), '\\@channel \\[x\\]\\(http://y\\) \\*b\\* \\`c\\` \\<d\\>')
  t.equal(failureText(new GatewayError('NOT_FOUND', 'no @here')), 'NOT_FOUND: no \\@here')
  t.equal(failureText(new Error('at /srv/secret/path')), 'INTERNAL_ERROR: the gateway failed; the operators can find this request in the logs.', 'nothing internal is shown')
})

t.test('a refusal without a reason still says it is refused', async t => {
  t.match((deniedMessage(plan) as any).text, /\*\*Not allowed:\*\* the policy refuses it$/)
  t.match((statusMessage(plan) as any).text, /You may not delete it: $/)
  t.match((statusMessage({ ...plan, reason: 'FORBIDDEN: @all' }) as any).text, /You may not delete it: FORBIDDEN: \\@all$/)
})
