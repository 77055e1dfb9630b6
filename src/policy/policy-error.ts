export interface PolicyProblem {
  /** Where in the file, e.g. `roles.admin[0].repositories[1]`, or `(top level)`. */
  path: string
  /** What the value must be. */
  rule: string
}

/** A policy file that cannot be used, with every problem found, each naming its path and the rule it breaks. */
export class PolicyError extends Error {
  readonly source: string
  readonly problems: readonly PolicyProblem[]

  constructor (source: string, problems: readonly PolicyProblem[]) {
    const lines = problems.map(problem => `  ${problem.path}: ${problem.rule}`)
    super(`invalid policy ${source}:\n${lines.join('\n')}`)
    this.name = 'PolicyError'
    this.source = source
    this.problems = problems
  }
}
