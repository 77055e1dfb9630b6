/** The Block Kit messages the Slack transport posts: plain values, built from use-case results only. */
import { isGatewayError } from '../../errors.js'
import type { DeleteImageResult, RestoreDeletionResult } from '../../images/shapes.js'
import { deletedText, planText, restoredText } from '../plan-text.js'

/** Slack's mrkdwn treats &, < and > as markup: a reason or detail must not become a link or a mention. */
export function escapeText (text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}

/** A failure as the user sees it: the catalogue code and detail, or nothing internal at all. */
export function failureText (error: unknown): string {
  return isGatewayError(error) ? `${error.code}: ${escapeText(error.detail)}` : 'INTERNAL_ERROR: the gateway failed; the operators can find this request in the logs.'
}

const section = (text: string): object => ({ type: 'section', text: { type: 'mrkdwn', text } })

export const HELP = [
  '*/image-delete* removes one tag after you confirm the plan it shows.',
  '• `/image-delete <repository>:<tag> [mode=auto|untag|digest]` plans the deletion; *Delete* runs it, *Cancel* drops it.',
  '• `/image-delete status <repository>:<tag>` shows what deleting it would do, without buttons.',
  '• `/image-delete help` shows this.',
  'Plans live 10 minutes and run only if the tag has not moved; *Undo* puts a deleted tag back.'
].join('\n')

export function ephemeral (text: string): object {
  return { response_type: 'ephemeral', replace_original: false, text }
}

export function replacement (text: string, extra: object[] = []): object {
  return { replace_original: true, text, blocks: [section(text), ...extra] }
}

const describePlan = (plan: DeleteImageResult): string => planText(plan, '*')

const dangerButton = (actionId: string, label: string, id: string, text: string): object => ({
  type: 'button',
  action_id: actionId,
  style: 'danger',
  text: { type: 'plain_text', text: label },
  value: id,
  confirm: {
    title: { type: 'plain_text', text: 'Delete this tag?' },
    text: { type: 'mrkdwn', text },
    confirm: { type: 'plain_text', text: label },
    deny: { type: 'plain_text', text: 'Keep it' },
    style: 'danger'
  }
})

/**
 * A plan the caller may run: Delete (danger, with a confirm dialog) and Cancel, both carrying only `id`. When the
 * policy wants a second person, Request approval takes Delete's place.
 */
export function planMessage (plan: DeleteImageResult, id: string, approval = false): object {
  const text = approval ? `${describePlan(plan)}\n*Approval required:* someone else who may approve it must confirm.` : describePlan(plan)
  const first = approval
    ? { type: 'button', action_id: 'request_approval', text: { type: 'plain_text', text: 'Request approval' }, value: id }
    : dangerButton('delete', 'Delete', id, text)
  return {
    response_type: 'ephemeral',
    replace_original: false,
    text,
    blocks: [section(text), {
      type: 'actions',
      elements: [first, { type: 'button', action_id: 'cancel', text: { type: 'plain_text', text: 'Cancel' }, value: id }]
    }]
  }
}

/** A plan the policy refuses: its reason, and no button. */
export function deniedMessage (plan: DeleteImageResult): object {
  return ephemeral(`${describePlan(plan)}\n*Not allowed:* ${escapeText(plan.reason ?? 'the policy refuses it')}`)
}

export function statusMessage (plan: DeleteImageResult): object {
  return ephemeral(`${describePlan(plan)}\n${plan.allowed ? 'You may delete it.' : `You may not delete it: ${escapeText(plan.reason ?? '')}`}`)
}

export function deletedMessage (result: DeleteImageResult, undoId: string): object {
  return replacement(deletedText(result), [{
    type: 'actions',
    elements: [{ type: 'button', action_id: 'undo', text: { type: 'plain_text', text: 'Undo' }, value: undoId }]
  }])
}

export function restoredMessage (result: RestoreDeletionResult, image: string): object {
  return replacement(restoredText(result, image))
}

/** In the channel, so an approver can see it: Approve runs the plan as the requester's, naming the approver. */
export function approvalRequest (requester: string, image: string, digest: string, id: string): object {
  const text = `${escapeText(requester)} asks to delete \`${image}\` (\`${digest}\`). Someone else who may approve it can run it.`
  return {
    response_type: 'in_channel',
    replace_original: false,
    text,
    blocks: [section(text), { type: 'actions', elements: [dangerButton('approve', 'Approve', id, text)] }]
  }
}

export function announcement (subject: string, what: string): object {
  return { response_type: 'in_channel', replace_original: false, text: `${escapeText(subject)} ${what}` }
}
