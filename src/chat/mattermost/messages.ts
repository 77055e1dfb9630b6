/**
 * What the Mattermost transport answers: slash command responses (ephemeral, with message attachments whose
 * buttons post to the gateway) and integration action responses (`update` replaces the message, `ephemeral_text`
 * tells only the clicker). Plain values, built from use-case results only.
 */
import { isGatewayError } from '../../errors.js'
import type { DeleteImageResult } from '../../images/shapes.js'
import { planText } from '../plan-text.js'

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
  '* `/image-delete help` shows this.',
  'Plans live 10 minutes and run only if the tag has not moved; **Undo** puts a deleted tag back.'
].join('\n')

/** A button: Mattermost posts its context to `url` when pressed; the context is all the gateway gets back. */
export interface Button {
  id: 'delete' | 'cancel' | 'undo'
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

export function planMessage (plan: DeleteImageResult, buttons: Button[]): object {
  return { response_type: 'ephemeral', text: '', attachments: [{ text: planText(plan, '**'), actions: buttons.map(action) }] }
}

/** A plan the policy refuses (approval included: Mattermost has no approval buttons yet): the reason, no button. */
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
