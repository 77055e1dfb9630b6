/** Order statistics of a sample of numbers (milliseconds, requests per second, …). */
export interface Summary {
  n: number
  median: number
  p95: number
  min: number
  max: number
  mean: number
}

/** Nearest-rank quantile of already sorted values. */
function quantile (sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[rank] as number
}

export function summarize (values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b)
  const total = sorted.reduce((sum, value) => sum + value, 0)
  const median = sorted.length % 2 === 1 || sorted.length === 0
    ? quantile(sorted, 0.5)
    : ((sorted[sorted.length / 2 - 1] as number) + (sorted[sorted.length / 2] as number)) / 2
  return {
    n: sorted.length,
    median,
    p95: quantile(sorted, 0.95),
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN,
    mean: sorted.length === 0 ? Number.NaN : total / sorted.length
  }
}

/** Rounds for the JSON report and the table: 3 significant decimals are more than the noise allows. */
export function round (value: number, digits = 3): number {
  const factor = 10 ** digits
  return Math.round(value * factor) / factor
}

export function roundSummary (summary: Summary, digits = 3): Summary {
  return Object.fromEntries(Object.entries(summary).map(([key, value]) => [key, key === 'n' ? value : round(value, digits)])) as unknown as Summary
}
