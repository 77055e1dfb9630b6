import type { NotificationEvent } from './shapes.js'

const VERBS: Record<NotificationEvent['type'], string> = {
  'image.deleted': 'deleted',
  'image.untagged': 'untagged',
  'image.restored': 'restored',
  'image.refused': 'was refused',
  'image.approved': 'approved'
}

/** Slack's mrkdwn treats these three as markup; everything a caller named is escaped. */
function escape (text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}

/** The event as a Slack incoming webhook takes it: a plain `text` fallback and one section block. */
export function slackMessage (event: NotificationEvent): { text: string, blocks: unknown[] } {
  const { data } = event
  const image = `${data.registry}/${data.name}:${data.tag}`
  const who = data.approvedBy === undefined ? data.subject : `${data.subject} (approved by ${data.approvedBy})`
  const head = event.type === 'image.refused'
    ? `A deletion of ${image} by ${who} was refused`
    : `${image} ${VERBS[event.type]} by ${who}`
  const details = [
    ...(data.removedTags.length > 1 ? [`tags removed: ${data.removedTags.join(', ')}`] : []),
    ...(data.digest === undefined ? [] : [`digest ${data.digest}`]),
    ...(event.type === 'image.refused' ? [`reason: ${data.reason}`] : []),
    `audit ${data.auditId}`
  ]
  const text = `${head}. ${details.join('; ')}`
  return {
    text: escape(text),
    blocks: [{ type: 'section', text: { type: 'mrkdwn', text: escape(`*${head}*\n${details.join('\n')}`) } }]
  }
}
