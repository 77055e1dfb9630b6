/**
 * What the read API shows of a manifest and of an image config, parsed once from their bytes. Both are immutable
 * per digest, so these summaries are what the browse cache keeps: small, where the bytes can be megabytes.
 */
import { GatewayError } from '../errors.js'
import { isIndex } from '../registry/media-types.js'

export interface Platform { os: string, architecture: string, variant?: string }

export interface ManifestSummary {
  digest: string
  mediaType: string
  /** An index or list: its platform manifests. */
  platforms?: Array<Platform & { digest: string }>
  /** An index or list: every manifest it lists, platform or not (what deleting one of them would break). */
  children?: string[]
  /** An index's org.opencontainers.image.created annotation, as written. */
  created?: string
  /** A single-platform manifest: its config blob (sha256 only) and the total size of its layers. */
  configDigest?: string
  layersSize?: number
}

export interface ConfigSummary {
  created?: string
  labels: Record<string, string>
}

const SHA256 = /^sha256:[a-f0-9]{64}$/
const REFERENCE_TYPE = 'vnd.docker.reference.type'
const CREATED = 'org.opencontainers.image.created'

function garbled (registry: string, what: string, why: string): GatewayError {
  return new GatewayError('UPSTREAM_ERROR', `registry "${registry}" sent ${what}, which ${why}; refusing to show it.`, { extras: { upstreamStatus: 200 } })
}

function parseJson (bytes: Buffer, registry: string, what: string): Record<string, unknown> {
  let parsed: unknown
  try {
    parsed = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw garbled(registry, what, 'is not JSON')
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw garbled(registry, what, 'is not a JSON object')
  return parsed as Record<string, unknown>
}

const isString = (value: unknown): value is string => typeof value === 'string'

function platformOf (value: unknown): Platform | undefined {
  const platform = value as { os?: unknown, architecture?: unknown, variant?: unknown } | null | undefined
  if (!isString(platform?.os) || !isString(platform.architecture)) return undefined
  return { os: platform.os, architecture: platform.architecture, ...(isString(platform.variant) ? { variant: platform.variant } : {}) }
}

/**
 * An index lists its platforms (entries without one, and attestations, are left out); a manifest names its
 * config and layers. Any other manifest type (schema1, artifacts the gateway does not know) shows digest and type only.
 */
export function summarizeManifest (bytes: Buffer, digest: string, mediaType: string, registry: string): ManifestSummary {
  const what = `manifest ${digest}`
  const manifest = parseJson(bytes, registry, what)
  if (isIndex(mediaType)) {
    const entries = manifest.manifests
    if (!Array.isArray(entries)) throw garbled(registry, what, 'is an index without a manifests list')
    const platforms = entries.flatMap((entry: { digest?: unknown, platform?: unknown, annotations?: Record<string, unknown> } | null) => {
      const platform = platformOf(entry?.platform)
      // BuildKit lists its attestations as platform unknown/unknown, marked by this annotation: not a platform.
      if (entry?.annotations?.[REFERENCE_TYPE] === 'attestation-manifest') return []
      return platform !== undefined && isString(entry?.digest) ? [{ ...platform, digest: entry.digest }] : []
    })
    const children = entries.flatMap((entry: { digest?: unknown } | null) => isString(entry?.digest) ? [entry.digest] : [])
    const created = (manifest.annotations as Record<string, unknown> | null | undefined)?.[CREATED]
    return { digest, mediaType, platforms, children, ...(isString(created) ? { created } : {}) }
  }
  const config = manifest.config as { digest?: unknown } | undefined
  const layers = manifest.layers
  if (config === undefined && layers === undefined) return { digest, mediaType }
  if (!isString(config?.digest) || !Array.isArray(layers)) throw garbled(registry, what, 'has no config digest or layers list')
  let layersSize = 0
  for (const layer of layers as Array<{ size?: unknown } | null>) {
    const size = layer?.size
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw garbled(registry, what, 'has a layer without a valid size')
    layersSize += size
  }
  return { digest, mediaType, ...(SHA256.test(config.digest) ? { configDigest: config.digest } : {}), layersSize }
}

/** `created` and `config.Labels` of an image config; labels that are not strings are not labels. */
export function summarizeConfig (bytes: Buffer, digest: string, registry: string): ConfigSummary {
  const config = parseJson(bytes, registry, `image config ${digest}`)
  const labels = (config.config as { Labels?: unknown } | null | undefined)?.Labels
  const entries = typeof labels === 'object' && labels !== null ? Object.entries(labels).filter((entry): entry is [string, string] => isString(entry[1])) : []
  return { ...(isString(config.created) ? { created: config.created } : {}), labels: Object.fromEntries(entries) }
}
