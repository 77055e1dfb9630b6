/**
 * The slash command's words, the same on every chat transport: `help`, `status <repository>:<tag>` and
 * `<repository>:<tag> [mode=auto|untag|digest]`. Only the image and mode come from the text, never who asks.
 */
import type { DeleteMode } from '../images/plan.js'
import { parseImageString, type ImageRef } from '../registry/reference.js'

export type ChatCommand =
  | { kind: 'help' }
  | { kind: 'unclear' }
  | { kind: 'bad-image', error: unknown }
  | { kind: 'plan' | 'status', ref: ImageRef, mode: DeleteMode | undefined }

const MODES: readonly string[] = ['auto', 'untag', 'digest']

export function parseCommand (text: string): ChatCommand {
  const words = text.trim().split(/\s+/).filter(word => word !== '')
  if (words.length === 0 || words[0] === 'help') return { kind: 'help' }
  const status = words[0] === 'status'
  const [image, ...options] = status ? words.slice(1) : words
  const option = options.map(word => /^mode=(.*)$/.exec(word))
  if (image === undefined || option.some(match => match === null || !MODES.includes(match[1] as string)) || (status && options.length > 0)) {
    return { kind: 'unclear' }
  }
  try {
    return { kind: status ? 'status' : 'plan', ref: parseImageString(image), mode: option.at(-1)?.[1] as DeleteMode | undefined }
  } catch (error) {
    return { kind: 'bad-image', error }
  }
}
