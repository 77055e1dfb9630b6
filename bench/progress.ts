/**
 * The benchmark's progress line on stderr. On a terminal it is one line rewritten in place with `\r`, at most
 * ten times a second; otherwise (a log file, CI) each phase gets a line and updates at most one every 5 s.
 */
export class Progress {
  private readonly started = performance.now()
  private readonly tty: boolean
  private last = 0
  private width = 0
  private phase = ''

  constructor (private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.tty = stream.isTTY === true
  }

  /** Starts a new phase; its first update is always shown. */
  begin (phase: string): void {
    this.phase = phase
    this.last = 0
    this.update('', true)
  }

  update (detail: string, force = false): void {
    const now = performance.now()
    if (!force && now - this.last < (this.tty ? 100 : 5000)) return
    this.last = now
    const seconds = ((now - this.started) / 1000).toFixed(0).padStart(4)
    const text = `[bench ${seconds}s] ${this.phase}${detail === '' ? '' : `: ${detail}`}`
    if (!this.tty) {
      this.stream.write(`${text}\n`)
      return
    }
    const shown = this.stream.columns === undefined ? text : text.slice(0, this.stream.columns - 1)
    this.stream.write(`\r${shown.padEnd(this.width)}`)
    this.width = shown.length
  }

  /** Clears the line so that the table starts on a clean one. */
  end (): void {
    if (this.tty && this.width > 0) this.stream.write(`\r${' '.repeat(this.width)}\r`)
    this.width = 0
  }
}
