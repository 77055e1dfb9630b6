/** Issue 13: the Slack messages, for the plan shapes the real-registry tests do not all reach. */
import t from 'tap'
import { deletedMessage, deniedMessage, escapeText, failureText, planMessage, statusMessage } from '../../src/chat/slack/messages.js'
import { GatewayError } from '../../src/errors.js'
import type { DeleteImageResult } from '../../src/images/shapes.js'

const digestPlan: DeleteImageResult = {
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
  removedTags: ['pr-1', 'pr-1-rc'],
  sharedWith: ['pr-1-rc'],
  referencedBy: [{ digest: 'sha256:idx', tags: ['multi'] }],
  allowed: true
}

t.test('a digest plan names every tag that goes and the index that references it', async t => {
  const message = planMessage(digestPlan, 'cp_x') as any
  t.equal(message.text, '*Plan:* delete the image `sha256:abc` of `team-a/app:pr-1` (registry default), removing `pr-1`, `pr-1-rc`.\n' +
    'Also tagged `pr-1-rc`: those tags go too.\nPart of the multi-platform image tagged `multi`.')
  t.same(message.blocks[1].elements.map((button: any) => [button.action_id, button.value]), [['delete', 'cp_x'], ['cancel', 'cp_x']])
  t.match((deletedMessage({ ...digestPlan, dryRun: false, deleted: true }, 'cp_u') as any).text,
    /^Deleted `team-a\/app@sha256:abc` \(`pr-1`, `pr-1-rc`; space is freed at the registry's next garbage collection\)\. Audit id `a1`\.$/)
})

t.test('refusals carry the reason, escaped so it cannot become a link or a mention', async t => {
  t.equal(escapeText('<!channel> & <http://x|y>'), '&lt;!channel&gt; &amp; &lt;http://x|y&gt;')
  t.equal(failureText(new GatewayError('NOT_FOUND', 'no <tag>')), 'NOT_FOUND: no &lt;tag&gt;')
  t.equal(failureText(new Error('at /srv/secret/path')), 'INTERNAL_ERROR: the gateway failed; the operators can find this request in the logs.', 'nothing internal is shown')
  t.match((deniedMessage({ ...digestPlan, allowed: false, reason: 'FORBIDDEN: <@U1>' }) as any).text, /\*Not allowed:\* FORBIDDEN: &lt;@U1&gt;$/)
  t.match((deniedMessage({ ...digestPlan, allowed: false }) as any).text, /\*Not allowed:\* the policy refuses it$/)
  t.match((statusMessage({ ...digestPlan, allowed: false, reason: 'PROTECTED_TAG: no' }) as any).text, /You may not delete it: PROTECTED_TAG: no$/)
  t.match((statusMessage({ ...digestPlan, allowed: false }) as any).text, /You may not delete it: $/)
})
