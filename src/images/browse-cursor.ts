/**
 * The read API's cursors. A cursor is a position, not a permission: every page is filtered by the policy again.
 * It is bound to the listing it came from (registry, and repository or prefix), so one handed out for another
 * listing is refused. A catalog cursor can sit on a repository the caller may not read (a page that ran out of
 * catalog requests continues after the last name it read), so it is sealed (AES-256-GCM) with a key of this
 * process, or of the configured secret that replicas share: the caller can neither read the name nor make up a
 * position. A tag cursor only ever names a tag the caller was shown, so it is plain and survives restarts.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'
import { invalidField } from '../errors.js'

export interface Cursor { kind: 'catalog' | 'tags', registry: string, scope: string, after: string }

const IV_BYTES = 12
const TAG_BYTES = 16

function seal (key: Buffer, text: string): string {
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', key, iv)
  const sealed = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64url')
}

function unseal (key: Buffer, value: string): string {
  const bytes = Buffer.from(value, 'base64url')
  const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, IV_BYTES))
  // Throws for anything shorter than an IV and a tag, or altered in any byte.
  decipher.setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
  return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8')
}

export class CursorCodec {
  constructor (private readonly key: Buffer = randomBytes(32)) {}

  /** A key derived from a secret every replica holds, for this use alone, so a cursor works on any of them. */
  static fromSecret (secret: string): CursorCodec {
    return new CursorCodec(Buffer.from(hkdfSync('sha256', secret, 'registry-delete-gateway', 'catalog cursor', 32)))
  }

  encode (cursor: Cursor): string {
    const text = JSON.stringify([cursor.kind, cursor.registry, cursor.scope, cursor.after])
    return cursor.kind === 'catalog' ? seal(this.key, text) : Buffer.from(text).toString('base64url')
  }

  /** The position after which the listing continues; INVALID_REQUEST for a cursor not handed out for it. */
  decode (value: string | undefined, expected: Omit<Cursor, 'after'>, valid: (after: string) => boolean): string | undefined {
    if (value === undefined) return undefined
    let parsed: unknown
    try {
      parsed = JSON.parse(expected.kind === 'catalog' ? unseal(this.key, value) : Buffer.from(value, 'base64url').toString('utf8'))
    } catch {
      parsed = undefined
    }
    const [kind, registry, scope, after] = Array.isArray(parsed) && parsed.length === 4 ? parsed as unknown[] : []
    if (kind !== expected.kind || registry !== expected.registry || scope !== expected.scope || typeof after !== 'string' || !valid(after)) {
      throw invalidField('cursor', 'a nextCursor this gateway handed out for the same listing',
        'cursor is not one this gateway handed out for this listing (catalog cursors also end when the gateway restarts, unless browse.cursorSecret is set): start again without it.')
    }
    return after
  }
}
