/**
 * What the Mattermost transport answers: slash command responses (ephemeral, with message attachments whose
 * buttons post to the gateway) and integration action responses (`update` replaces the message, `ephemeral_text`
 * tells only the clicker). Plain values, built from use-case results only.
 */
import { isGatewayError } from '../../errors.js'
import type { DeleteImageResult } from '../../images/shapes.js'
import { planText } from '../plan-text.js'
import type { PendingPlan } from '../plans.js'

/** A reason or detail is shown as text: Markdown, links and @-mentions in it are escaped. */
export function escapeMarkdown (text: string): string {
  return text.replace(/[\\`*_[\]()<>|~@]/g, match => `\\${match}`)
}

export function failureText (error: unknown): string {
  return isGatewayError(error) ? `${error.code}: ${escapeMarkdown(error.detail)}` : 'INTERNAL_ERROR: the gateway failed; the operators can find this request in the logs.'
}

export const HELP = [
  '**/image-delete** removes one tag after you confirm the plan it shows.',
  '* `/image-delete <repository>:<tag> [mode=auto|untag|digest]` plans the deletion; **Delete** runs it, **Cancel** drops it.',
  '* `/image-delete status <repository>:<tag>` shows what deleting it would do, without buttons.',
  '* `/image-delete approve <id>` approves someone else\'s request and runs their plan, when you may approve it.',
  '* `/image-delete help` shows this.',
  'Plans live 10 minutes and run only if the tag has not moved; **Undo** puts a deleted tag back.',
  'Where the policy wants a second person, **Request approval** takes the place of **Delete**.'
].join('\n')

/** A button: Mattermost posts its context to `url` when pressed; the context is all the gateway gets back. */
export interface Button {
  id: 'delete' | 'cancel' | 'undo' | 'request_approval'
  name: string
  style?: 'danger' | 'default'
  url: string
  context: Record<string, string>
}

const action = (button: Button): object => ({
  id: button.id,
  name: button.name,
  type: 'button',
  style: button.style ?? 'default',
  integration: { url: button.url, context: button.context }
})

export function ephemeral (text: string): object {
  return { response_type: 'ephemeral', text }
}

export function planMessage (plan: DeleteImageResult, buttons: Button[], approval = false): object {
  const text = approval ? `${planText(plan, '**')}\n**Approval required:** someone else who may approve it must confirm.` : planText(plan, '**')
  return { response_type: 'ephemeral', text: '', attachments: [{ text, actions: buttons.map(action) }] }
}

/**
 * What the requester gets for Request approval. A button's answer can only change the clicker's own message, so
 * this names the command an approver types rather than carrying a button nobody else would see.
 */
export function approvalRequestText (requester: string, plan: PendingPlan, id: string): string {
  return `${escapeMarkdown(requester)} asks for approval to delete \`${plan.repository}:${plan.tag}\` (\`${plan.digest}\`, mode ${plan.mode}, registry ${plan.registry}): ` +
    `an approver runs \`/image-delete approve ${id}\``
}

/** The approver's answer, in the channel so the requester sees it and can press Undo. */
export function approvedMessage (text: string, buttons: Button[]): object {
  return { response_type: 'in_channel', text: '', attachments: [{ text, actions: buttons.map(action) }] }
}

/** A plan the policy refuses: the reason, no button. */
export function deniedMessage (plan: DeleteImageResult): object {
  return ephemeral(`${planText(plan, '**')}\n**Not allowed:** ${escapeMarkdown(plan.reason ?? 'the policy refuses it')}`)
}

export function statusMessage (plan: DeleteImageResult): object {
  return ephemeral(`${planText(plan, '**')}\n${plan.allowed ? 'You may delete it.' : `You may not delete it: ${escapeMarkdown(plan.reason ?? '')}`}`)
}

/** Replaces the message the button was on; its buttons go unless `buttons` brings new ones. */
export function update (text: string, buttons: Button[] = []): object {
  return { update: { message: text, props: { attachments: buttons.length === 0 ? [] : [{ text: '', actions: buttons.map(action) }] } } }
}

/** Tells the clicker alone, leaving the message and its buttons as they are. */
export function notice (text: string): object {
  return { ephemeral_text: text }
}
