import neostandard from 'neostandard'

// The style Fastify's own projects use (standard, with TypeScript rules for .ts files).
export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'build/**', 'coverage/**', '.tap/**', 'node_modules/**', 'test-results/**'] }),
  {
    rules: {
      // `void reply.header(…)` marks a promise-like return that is deliberately not awaited.
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
