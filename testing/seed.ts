/**
 * Pushes small but well-formed test images through the registry's HTTP API. Every pushImage call makes
 * blobs of its own, so deleting that image and running garbage collection really frees them.
 */
import { createHash, randomBytes } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import { request } from 'undici'

export type ImageKind = 'schema2' | 'oci' | 'oci-index' | 'docker-list'

/** Basic auth is sent when username is given. */
export interface PushTarget { url: string, username?: string, password?: string }

export interface Platform { os: string, architecture: string }

export interface PushedImage {
  name: string
  tags: string[]
  /** sha256 of the exact manifest bytes, as the registry reported it. */
  digest: string
  mediaType: string
  manifest: Buffer
  /** The platform manifests of an index or list; empty for a single manifest. */
  children: Array<{ digest: string, mediaType: string, platform: Platform }>
}

export const MEDIA_TYPES = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip'
} as const

type Format = 'docker' | 'oci'

const FORMATS = {
  docker: { manifest: MEDIA_TYPES.dockerManifest, index: MEDIA_TYPES.dockerList, config: MEDIA_TYPES.dockerConfig, layer: MEDIA_TYPES.dockerLayer },
  oci: { manifest: MEDIA_TYPES.ociManifest, index: MEDIA_TYPES.ociIndex, config: MEDIA_TYPES.ociConfig, layer: MEDIA_TYPES.ociLayer }
} as const

const PLATFORMS: Platform[] = [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }]

interface Descriptor { mediaType: string, digest: string, size: number }

interface BuiltManifest {
  bytes: Buffer
  mediaType: string
  digest: string
  platform: Platform
  blobs: Buffer[]
}

export async function pushImage (target: PushTarget, name: string, tags: string[], kind: ImageKind): Promise<PushedImage> {
  if (kind === 'schema2' || kind === 'oci') {
    const image = buildImage(kind === 'oci' ? 'oci' : 'docker', PLATFORMS[0])
    await pushBlobs(target, name, image.blobs)
    const digest = await putUnderTags(target, name, tags, image.bytes, image.mediaType)
    return { name, tags, digest, mediaType: image.mediaType, manifest: image.bytes, children: [] }
  }
  const format: Format = kind === 'oci-index' ? 'oci' : 'docker'
  const children = PLATFORMS.map(platform => buildImage(format, platform))
  for (const child of children) {
    await pushBlobs(target, name, child.blobs)
    // an index may only reference manifests the repository already holds
    await putManifest(target, name, child.digest, child.bytes, child.mediaType)
  }
  const index = buildIndex(format, children)
  const digest = await putUnderTags(target, name, tags, index, FORMATS[format].index)
  return {
    name,
    tags,
    digest,
    mediaType: FORMATS[format].index,
    manifest: index,
    children: children.map(({ digest, mediaType, platform }) => ({ digest, mediaType, platform }))
  }
}

/** PUTs manifest bytes the repository already resolves under one more tag; returns the digest. */
export async function tagManifest (target: PushTarget, name: string, tag: string, manifest: Buffer, mediaType: string): Promise<string> {
  return await putManifest(target, name, tag, manifest, mediaType)
}

/** Monolithic upload, skipped when the repository already has the blob. */
export async function pushBlob (target: PushTarget, name: string, bytes: Buffer): Promise<{ digest: string, uploaded: boolean }> {
  const digest = sha256(bytes)
  const head = await call(target, 'HEAD', `/v2/${name}/blobs/${digest}`, [200, 404])
  if (head.status === 200) return { digest, uploaded: false }
  const started = await call(target, 'POST', `/v2/${name}/blobs/uploads/`, [202])
  const location = new URL(String(started.headers.location), target.url)
  location.searchParams.set('digest', digest)
  await call(target, 'PUT', location.toString(), [201], {
    body: bytes,
    headers: { 'content-type': 'application/octet-stream' }
  })
  return { digest, uploaded: true }
}

async function pushBlobs (target: PushTarget, name: string, blobs: Buffer[]): Promise<void> {
  await Promise.all(blobs.map(async blob => await pushBlob(target, name, blob)))
}

/** With no tags the manifest is pushed by digest only, leaving it untagged. */
async function putUnderTags (target: PushTarget, name: string, tags: string[], bytes: Buffer, mediaType: string): Promise<string> {
  const references = tags.length > 0 ? tags : [sha256(bytes)]
  for (const reference of references) await putManifest(target, name, reference, bytes, mediaType)
  return sha256(bytes)
}

async function putManifest (target: PushTarget, name: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
  const response = await call(target, 'PUT', `/v2/${name}/manifests/${reference}`, [201], {
    body: bytes,
    headers: { 'content-type': mediaType }
  })
  const expected = sha256(bytes)
  const reported = response.headers['docker-content-digest']
  if (reported !== expected) {
    throw new Error(`PUT /v2/${name}/manifests/${reference}: registry reported digest ${String(reported)}, the bytes hash to ${expected}`)
  }
  return expected
}

function buildImage (format: Format, platform: Platform): BuiltManifest {
  const types = FORMATS[format]
  const tar = tarWithOneFile('seed.txt', randomBytes(32).toString('hex') + '\n')
  const layer = gzipSync(tar)
  const config = Buffer.from(JSON.stringify({
    architecture: platform.architecture,
    os: platform.os,
    // the nonce keeps the config blob unique even though the layer already is
    config: { Labels: { 'org.example.seed.nonce': randomBytes(16).toString('hex') } },
    rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
    history: [{ created_by: 'registry-delete-gateway seed' }]
  }))
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: types.manifest,
    config: descriptor(types.config, config),
    layers: [descriptor(types.layer, layer)]
  }))
  return { bytes, mediaType: types.manifest, digest: sha256(bytes), platform, blobs: [config, layer] }
}

function buildIndex (format: Format, children: BuiltManifest[]): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: FORMATS[format].index,
    manifests: children.map(child => ({ ...descriptor(child.mediaType, child.bytes), platform: child.platform }))
  }))
}

function descriptor (mediaType: string, bytes: Buffer): Descriptor {
  return { mediaType, digest: sha256(bytes), size: bytes.length }
}

/** A single-entry ustar archive, so the layer unpacks with any real client. */
function tarWithOneFile (name: string, content: string): Buffer {
  const data = Buffer.from(content)
  const header = Buffer.alloc(512)
  header.write(name, 0)
  header.write('0000644\0', 100)
  header.write('0000000\0', 108)
  header.write('0000000\0', 116)
  header.write(data.length.toString(8).padStart(11, '0') + '\0', 124)
  header.write('00000000000\0', 136)
  header.write('        ', 148)
  header.write('0', 156)
  header.write('ustar\0', 257)
  header.write('00', 263)
  const checksum = header.reduce((sum, byte) => sum + byte, 0)
  header.write(checksum.toString(8).padStart(6, '0') + '\0 ', 148)
  const padding = Buffer.alloc((512 - (data.length % 512)) % 512)
  return Buffer.concat([header, data, padding, Buffer.alloc(1024)])
}

function sha256 (bytes: Buffer): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex')
}

interface CallResult { status: number, headers: Record<string, string | string[] | undefined> }

/** One request with the body always consumed; any status outside `expected` becomes an Error with the body. */
async function call (
  target: PushTarget,
  method: 'HEAD' | 'POST' | 'PUT',
  path: string,
  expected: number[],
  options: { body?: Buffer, headers?: Record<string, string> } = {}
): Promise<CallResult> {
  const url = new URL(path, target.url)
  const response = await request(url, {
    method,
    body: options.body,
    headers: { ...options.headers, ...authorization(target) }
  })
  const text = await response.body.text()
  if (!expected.includes(response.statusCode)) {
    const body = text === '' ? '(no body)' : text.trim()
    throw new Error(`${method} ${url.pathname} answered ${response.statusCode}: ${body}`)
  }
  return { status: response.statusCode, headers: response.headers }
}

function authorization (target: PushTarget): Record<string, string> {
  if (target.username === undefined) return {}
  const credentials = Buffer.from(`${target.username}:${target.password ?? ''}`).toString('base64')
  return { authorization: `Basic ${credentials}` }
}
