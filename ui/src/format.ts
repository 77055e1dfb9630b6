import type { Platform } from './api.js'

/** sha256:0123456789ab…: enough to tell digests apart on screen; the full one is in the title. */
export function shortDigest (digest: string): string {
  const [algorithm, hex = ''] = digest.split(':')
  return `${algorithm}:${hex.slice(0, 12)}`
}

export function bytes (size: number | undefined): string {
  if (size === undefined) return '—'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let value = size
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit++
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`
}

export function age (created: string | undefined, now = Date.now()): string {
  if (created === undefined) return '—'
  const seconds = Math.max(0, (now - Date.parse(created)) / 1000)
  if (Number.isNaN(seconds)) return '—'
  const steps: Array<[number, string]> = [[86400 * 365, 'y'], [86400 * 30, 'mo'], [86400, 'd'], [3600, 'h'], [60, 'min']]
  for (const [size, unit] of steps) if (seconds >= size) return `${Math.floor(seconds / size)} ${unit}`
  return 'just now'
}

export function platforms (list: Platform[] | undefined): string {
  if (list === undefined || list.length === 0) return '—'
  return list.map(platform => [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/')).join(', ')
}
