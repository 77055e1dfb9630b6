import neostandard from 'neostandard'

// The style Fastify's own projects use (standard, with TypeScript rules for .ts files).
export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'build/**', 'coverage/**', '.tap/**', 'node_modules/**', 'test-results/**'] }),
  {
    rules: {
      // `void reply.header(…)` marks a promise-like return that is deliberately not awaited.
      'no-void': ['error', { allowAsStatement: true }]
    }
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      // Short enough to read a call whole; a line that is only a message is exempt, so every message stays one
      // greppable string (split messages cannot be found from what a user pastes).
      '@stylistic/max-len': ['error', {
        code: 160,
        ignorePattern: String.raw`^\s*[^'"\x60]{0,40}['"\x60].*['"\x60][,)+ ]*$`,
        ignoreComments: false,
        ignoreUrls: true
      }]
    }
  }
]
