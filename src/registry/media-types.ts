export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'

/**
 * Every manifest type a delete may target, indexes first. Without all four a registry answers with a
 * converted schema1 digest that exists nowhere, the amd64 child of a list, or 404 for OCI content.
 */
export const MANIFEST_ACCEPT = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(', ')

/**
 * The media type without parameters, lower-cased: `Application/vnd.oci.image.index.v1+json; charset=utf-8` is
 * an index all the same (RFC 9110 media types are case-insensitive and may carry parameters), and a registry or
 * proxy that adds a parameter must not switch a safety check off.
 */
export function essence (mediaType: string): string {
  return (mediaType.split(';', 1)[0] as string).trim().toLowerCase()
}

export function isIndex (mediaType: string): boolean {
  // The bare types, as stored, answer without a split and a lower-case copy: planning asks per tag and per comparison.
  if (mediaType === OCI_MANIFEST || mediaType === DOCKER_MANIFEST) return false
  const type = essence(mediaType)
  return type === OCI_INDEX || type === DOCKER_LIST
}
