import type { CleanupNotificationEvent, NotificationEvent } from './shapes.js'

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
export function slackMessage (event: NotificationEvent | CleanupNotificationEvent): { text: string, blocks: unknown[] } {
  if (isCleanupEvent(event)) return section(...cleanupLines(event))
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
  return section(head, details)
}

function section (head: string, details: readonly string[]): { text: string, blocks: unknown[] } {
  return {
    text: escape(`${head}. ${details.join('; ')}`),
    blocks: [{ type: 'section', text: { type: 'mrkdwn', text: escape(`*${head}*\n${details.join('\n')}`) } }]
  }
}

function isCleanupEvent (event: NotificationEvent | CleanupNotificationEvent): event is CleanupNotificationEvent {
  return event.type.startsWith('cleanup.')
}

function cleanupLines (event: CleanupNotificationEvent): [string, string[]] {
  const { data } = event
  const what = `Retention policy ${data.policy} (${data.registry}: ${data.repositories.join(', ')})`
  const plan = data.cleanupId === undefined ? [] : [`cleanup ${data.cleanupId}`]
  if (event.type === 'cleanup.failed') return [`${what} did not run`, [`${data.errorCode ?? 'error'}: ${data.detail ?? ''}`, ...plan]]
  if (event.type === 'cleanup.planned') {
    const totals = data.totals as NonNullable<typeof data.totals>
    return [`${what} planned a dry run`, [`would remove ${totals.remove}, keep ${totals.keep}, refuse ${totals.refuse} of ${totals.tags} tags`, ...plan]]
  }
  const counts = data.counts as NonNullable<typeof data.counts>
  return [`${what} ran: ${data.state ?? 'done'}`, [`done ${counts.done}, stale ${counts.stale}, failed ${counts.failed}, skipped ${counts.skipped}`, ...plan]]
}
