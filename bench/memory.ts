import { readFileSync } from 'node:fs'

/** Resident set size now (VmRSS) and at its peak so far (VmHWM), in bytes, from /proc/PID/status. */
export function memoryOf (pid: number): { rss: number, hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
    return match === null ? Number.NaN : Number(match[1]) * 1024
  }
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') }
}
