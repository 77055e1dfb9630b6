import { GatewayError } from '../errors.js'

/**
 * The distribution reference grammar (github.com/distribution/reference), restricted to what the gateway takes:
 * a repository path without a registry host (the registry is chosen by configuration), a tag, or a digest.
 * Checked before any upstream call so a bad reference never reaches the registry.
 */
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const TAG = /^[\w][\w.-]{0,127}$/
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/
const SHA256_HEX = /^[a-f0-9]{64}$/
export const MAX_NAME_LENGTH = 255

export interface ImageRef {
  repository: string
  tag: string
}

function invalid (field: string, value: string, rule: string): GatewayError {
  // Long or binary input is cut so the error stays readable and bounded.
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value
  return new GatewayError('INVALID_REFERENCE', `${field} ${JSON.stringify(shown)} is invalid: ${rule}`, {
    extras: { field, rule }
  })
}

export function validateName (name: string): string {
  if (name.length === 0) throw invalid('name', name, 'must not be empty')
  if (name.length > MAX_NAME_LENGTH) throw invalid('name', name, `must be at most ${MAX_NAME_LENGTH} characters`)
  for (const component of name.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      throw invalid('name', name,
        'each /-separated component must be lowercase letters and digits, separated by ".", "_", "__" or dashes, and must not be empty')
    }
  }
  return name
}

export function validateTag (tag: string): string {
  if (!TAG.test(tag)) {
    throw invalid('tag', tag, 'must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}')
  }
  return tag
}

export function validateDigest (digest: string): string {
  if (!DIGEST.test(digest)) throw invalid('digest', digest, 'must be algorithm:hex, e.g. sha256:<64 hex digits>')
  const [algorithm, hex] = digest.split(':') as [string, string]
  if (algorithm === 'sha256' && !SHA256_HEX.test(hex)) throw invalid('digest', digest, 'sha256 needs 64 lowercase hex digits')
  return digest
}

export function parseImageRef (repository: string, tag: string): ImageRef {
  return { repository: validateName(repository), tag: validateTag(tag) }
}

/** `name:tag` as people write it; the last colon after the last slash separates the tag. */
export function parseImageString (image: string): ImageRef {
  const slash = image.lastIndexOf('/')
  const colon = image.lastIndexOf(':')
  if (colon <= slash) throw invalid('image', image, 'must be name:tag')
  return parseImageRef(image.slice(0, colon), image.slice(colon + 1))
}
