import { readFileSync } from 'node:fs'
import t from 'tap'
import { DockerfileParser } from 'dockerfile-ast'

// No Docker engine runs here, so the image is checked as text: what would break at run time if it drifted.
const text = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8')
const dockerfile = DockerfileParser.parse(text)
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))
const instructions = dockerfile.getInstructions()
const stages = dockerfile.getFROMs()
const finalStageStart = stages.at(-1)?.getRange().start.line ?? 0
const finalStage = instructions.filter(instruction => instruction.getRange().start.line >= finalStageStart)
const args = (keyword: string): string[] => finalStage.filter(instruction => instruction.getKeyword() === keyword).map(instruction => instruction.getArgumentsContent() ?? '')

t.test('multi-stage: builds with dev dependencies, runs with production ones', async t => {
  t.ok(stages.length >= 2, 'at least two stages')
  t.ok(stages.every(from => /^node:20\b/.test(from.getImageName() ?? '') || from.getImageName() === 'node'), 'Node 20 images')
  t.match(text, /RUN npm ci[^\n]*\n[^]*RUN npm run build/, 'the build stage installs everything and builds')
  t.ok(args('RUN').some(run => /npm ci --omit=dev/.test(run)), 'the runtime stage installs production dependencies only')
  const finalText = text.split('\n').slice(finalStageStart).join('\n')
  t.match(finalText, /COPY --from=build \/app\/dist /, 'the runtime stage takes dist from the build stage')
})

t.test('the runtime stage has every file the server reads at run time', async t => {
  const copies = args('COPY').join('\n')
  for (const needed of ['schema', 'openapi.yaml', 'package.json']) t.match(copies, needed, needed)
})

t.test('runs as a non-root user, listening on all interfaces on the exposed port', async t => {
  const users = args('USER')
  t.ok(users.length > 0 && !['root', '0'].includes(users.at(-1) as string), 'USER is not root')
  const env = args('ENV').join(' ')
  t.match(env, /HOST=0\.0\.0\.0/)
  const port = /PORT=(\d+)/.exec(env)?.[1]
  t.ok(port !== undefined, 'PORT is set')
  t.same(args('EXPOSE'), [port], 'EXPOSE matches PORT')
})

t.test('the health check probes /healthz and the entrypoint is the package\'s own bin', async t => {
  const healthchecks = dockerfile.getHEALTHCHECKs()
  t.equal(healthchecks.length, 1)
  t.match(healthchecks[0]?.getArgumentsContent(), /\/healthz/)
  const entrypoint = dockerfile.getENTRYPOINTs()[0]?.getArgumentsContent() ?? ''
  const bin = pkg.bin['registry-delete-gateway'] as string
  t.match(entrypoint, bin, `ENTRYPOINT runs ${bin}`)
  t.match(dockerfile.getCMDs()[0]?.getArgumentsContent(), /serve/, 'and its serve command')
})

t.test('.dockerignore keeps local state out of the build context', async t => {
  const ignored = readFileSync(new URL('../../.dockerignore', import.meta.url), 'utf8').split('\n')
  for (const path of ['node_modules', 'dist', '.git', 'data']) t.ok(ignored.includes(path), path)
})
