/**
 * What a plan will do and what was done, in the words every chat transport shows. Slack's mrkdwn and
 * Mattermost's Markdown differ only in how bold is written, so the caller passes its marker.
 */
import type { DeleteImageResult, RestoreDeletionResult } from '../images/shapes.js'

export function planText (plan: DeleteImageResult, bold: '*' | '**'): string {
  const image = `\`${plan.name}:${plan.tag}\``
  const quoted = (tags: string[]): string => tags.map(tag => `\`${tag}\``).join(', ')
  const lines = [
    plan.action === 'untagged'
      ? `${bold}Plan:${bold} untag ${image} only (registry ${plan.registry}); the image \`${plan.digest}\` stays.`
      : `${bold}Plan:${bold} delete the image \`${plan.digest}\` of ${image} (registry ${plan.registry}), removing ${quoted(plan.removedTags)}.`
  ]
  const fate = plan.action === 'untagged' ? 'those tags keep it.' : 'those tags go too.'
  if (plan.sharedWith.length > 0) lines.push(`Also tagged ${quoted(plan.sharedWith)}: ${fate}`)
  if (plan.referencedBy.length > 0) lines.push(`Part of the multi-platform image tagged ${quoted(plan.referencedBy.flatMap(index => index.tags))}.`)
  return lines.join('\n')
}

export function deletedText (result: DeleteImageResult): string {
  const what = result.action === 'untagged'
    ? `Untagged \`${result.name}:${result.tag}\``
    : `Deleted \`${result.name}@${result.digest}\` (${result.removedTags.map(tag => `\`${tag}\``).join(', ')}; space is freed at the registry's next garbage collection)`
  return `${what}. Audit id \`${result.auditId}\`.`
}

export function restoredText (result: RestoreDeletionResult, image: string): string {
  return `Restored \`${image}\`: ${result.restoredTags.map(tag => `\`${tag}\``).join(', ')} point at \`${result.digest}\` again.`
}
