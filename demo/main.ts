import { startDemo } from './demo.js'

// `npm run demo`: everything a newcomer needs to try the gateway, started and stopped together.
const port = process.env.PORT === undefined ? 8080 : Number(process.env.PORT)
const demo = await startDemo({
  port,
  host: process.env.HOST ?? '127.0.0.1',
  logLevel: 'warn',
  onSlackPost: message => { process.stdout.write(`Slack response_url got: ${JSON.stringify(message)}\n`) }
})
const [admin, ci, reader] = demo.keys
const lines = [
  '',
  `registry-delete-gateway demo is running at ${demo.gatewayUrl} (registry ${demo.registryUrl})`,
  `policy: ${demo.policyFile}`,
  '',
  `Web page: ${demo.uiUrl}  (sign in through the demo identity provider ${demo.issuer}, or paste an API key)`,
  'Demo users (shown once):',
  ...demo.users.map(user => `  ${user.username.padEnd(12)} password ${user.password}   ${user.what}`),
  '',
  'Demo API keys (shown once):',
  ...demo.keys.map(key => `  ${key.name.padEnd(12)} ${key.key}   ${key.what}`),
  '',
  'Sample images: team-a/app:{pr-1 (OCI index), pr-2, pr-3 = pr-3-rc, latest = v1.0.0 = pr-4}, team-b/api:{v2 = preview-7}',
  '',
  'Try:',
  `  curl -s -H 'X-API-Key: ${admin?.key}' ${demo.gatewayUrl}/me`,
  `  curl -s -X DELETE -H 'X-API-Key: ${ci?.key}' '${demo.gatewayUrl}/images/team-a/app/pr-1?dryRun=true'`,
  `  curl -s -X DELETE -H 'X-API-Key: ${ci?.key}' ${demo.gatewayUrl}/images/team-a/app/pr-1`,
  `  curl -s -X DELETE -H 'X-API-Key: ${ci?.key}' '${demo.gatewayUrl}/images/team-a/app/pr-3?mode=digest'   # 409: pr-3-rc shares the digest`,
  `  curl -s -X DELETE -H 'X-API-Key: ${ci?.key}' ${demo.gatewayUrl}/images/team-a/app/pr-3          # auto: untags pr-3, pr-3-rc stays`,
  `  curl -s -X DELETE -H 'X-API-Key: ${admin?.key}' '${demo.gatewayUrl}/images/team-a/app/pr-4?mode=digest&force=true'   # 403: would remove protected latest`,
  `  curl -s -X DELETE -H 'X-API-Key: ${reader?.key}' ${demo.gatewayUrl}/images/team-b/api/v2          # 403: reader may only dry-run`,
  `  curl -s -H 'X-API-Key: ${admin?.key}' -H 'content-type: application/json' ${demo.gatewayUrl}/graphql \\`,
  '      -d \'{"query":"mutation { deleteImage(name: \\"team-a/app\\", tag: \\"pr-2\\", dryRun: true) { digest action removedTags planId } }"}\'',
  `  GraphiQL: ${demo.gatewayUrl}/graphiql`,
  '',
  'Slack (signed as Slack signs, by user slack:T0DEMO/U0DEMO; good for 5 minutes and once; the plan is printed here):',
  `  ${demo.slackCommand('team-a/app:pr-2').curl}`,
  '',
  'Ctrl-C stops the gateway, the identity provider and the registry.'
]
process.stdout.write(`${lines.join('\n')}\n`)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void demo.stop().then(() => process.exit(0))
  })
}
