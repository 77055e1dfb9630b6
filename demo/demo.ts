import { createHash, createHmac, randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { validateConfig } from '../src/config/load.js'
import { startOidcProvider, type OidcProviderProcess } from '../testing/oidc-provider.js'
import { freePort } from '../testing/ports.js'
import { startRegistry, type RegistryProcess } from '../testing/registry-process.js'
import { pushImage, tagManifest } from '../testing/seed.js'

export interface DemoKey { name: string, key: string, what: string }

/** A slash command as Slack would send it: signed now, so good for 5 minutes and once. */
export interface SlackCommand { url: string, headers: Record<string, string>, body: string, curl: string }
/** A person who signs in to the web page through the demo's identity provider. */
export interface DemoUser { username: string, password: string, what: string }

export interface Demo {
  gatewayUrl: string
  /** The web page. */
  uiUrl: string
  /** The demo's OpenID provider (oidc-provider), whose tokens the policy's jwt section trusts. */
  issuer: string
  users: DemoUser[]
  registryUrl: string
  policyFile: string
  keys: DemoKey[]
  /** Signs `/image-delete <text>` from the demo's Slack user (slack:T0DEMO/U0DEMO, a preview-cleaner). */
  slackCommand: (text: string) => SlackCommand
  stop: () => Promise<void>
}

export interface DemoOptions {
  host: string
  port: number
  logLevel: 'info' | 'warn' | 'silent'
  /** Told each message the gateway posts to the demo's stand-in for Slack's response_url. */
  onSlackPost?: (message: unknown) => void
}

/** Plays Slack's response_url on loopback, so the plan the gateway posts after "planning…" can be seen. */
async function responseUrlSink (onPost: (message: unknown) => void): Promise<Server> {
  const server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      response.end('ok')
      onPost(JSON.parse(Buffer.concat(chunks).toString('utf8')))
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return server
}

function signedCommand (gatewayUrl: string, secret: string, responseUrl: string, text: string): SlackCommand {
  const body = new URLSearchParams({
    team_id: 'T0DEMO', user_id: 'U0DEMO', command: '/image-delete', text, response_url: responseUrl, trigger_id: randomBytes(8).toString('hex')
  }).toString()
  const timestamp = String(Math.floor(Date.now() / 1000))
  const signature = `v0=${createHmac('sha256', secret).update(`v0:${timestamp}:${body}`).digest('hex')}`
  const url = `${gatewayUrl}/chat/slack/commands`
  const headers = { 'content-type': 'application/x-www-form-urlencoded', 'x-slack-request-timestamp': timestamp, 'x-slack-signature': signature }
  return { url, headers, body, curl: `curl -s ${url} -H 'X-Slack-Request-Timestamp: ${timestamp}' -H 'X-Slack-Signature: ${signature}' --data-raw '${body}'` }
}

const DEMO_ACCOUNTS = [
  { name: 'demo-admin', groups: [], what: 'admin: may delete and force anything except protected tags' },
  { name: 'demo-ci', groups: ['ci'], what: 'preview-cleaner: may delete pr-* and preview-* tags of team-a/**' },
  { name: 'demo-reader', groups: [], what: 'reader: may only dry-run' }
] as const

const DEMO_PEOPLE = [
  { username: 'alice', groups: ['admins'], what: 'admin: may delete and force anything except protected tags' },
  { username: 'bob', groups: ['developers'], what: 'developer: may delete (and undo) pr-* and preview-* tags of team-a/**, sees his activity' }
] as const
export const DEMO_CLIENT_ID = 'registry-gateway-ui'
const DEMO_AUDIENCE = 'registry-gateway'

function demoPolicy (keys: DemoKey[], idp: OidcProviderProcess): string {
  const hash = (key: string): string => createHash('sha256').update(key).digest('hex')
  const apiKeys = DEMO_ACCOUNTS.map((account, index) =>
    `  - name: ${account.name}\n    sha256: ${hash((keys[index] as DemoKey).key)}\n    groups: [${account.groups.join(', ')}]`).join('\n')
  return `# Demo policy written by \`npm run demo\`; the keys and the people's passwords were printed when it started.
jwt:
  issuer: ${idp.issuer}
  audience: ${DEMO_AUDIENCE}
  jwksUri: ${idp.jwksUri}
apiKeys:
${apiKeys}
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
  preview-cleaner:
    - actions: [delete]
      repositories: ["team-a/**"]
      tags: ["pr-*", "preview-*"]
  reader:
    - actions: [read]
      repositories: ["**"]
  developer:
    - actions: [delete, restore]
      repositories: ["team-a/**"]
      tags: ["pr-*", "preview-*"]
    - actions: [read, audit]
      repositories: ["team-a/**"]
bindings:
  - role: admin
    subjects: ["apikey:demo-admin"]
  - role: preview-cleaner
    subjects: ["keygroup:ci", "slack:T0DEMO/U0DEMO"]
  - role: reader
    subjects: ["apikey:demo-reader"]
  - role: admin
    subjects: ["group:admins"]
  - role: developer
    subjects: ["group:developers"]
protectedTags:
  - repositories: ["**"]
    tags: ["latest", "v*.*.*"]
`
}

/** Sample images covering every manifest kind, and the co-tag situations the gateway guards against. */
async function seed (registryUrl: string): Promise<void> {
  const target = { url: registryUrl }
  await pushImage(target, 'team-a/app', ['pr-1'], 'oci-index')
  await pushImage(target, 'team-a/app', ['pr-2'], 'schema2')
  await pushImage(target, 'team-a/app', ['pr-3', 'pr-3-rc'], 'oci')
  const release = await pushImage(target, 'team-a/app', ['latest'], 'docker-list')
  await tagManifest(target, 'team-a/app', 'v1.0.0', release.manifest, release.mediaType)
  await tagManifest(target, 'team-a/app', 'pr-4', release.manifest, release.mediaType)
  await pushImage(target, 'team-b/api', ['v2', 'preview-7'], 'oci')
}

/** A registry with sample images, a demo policy with fresh keys, and the gateway in front: everything `npm run demo` shows. */
export async function startDemo (options: DemoOptions): Promise<Demo> {
  const dir = await mkdtemp(join(tmpdir(), 'rdg-demo-'))
  let registry: RegistryProcess | undefined
  let app: FastifyInstance | undefined
  let sink: Server | undefined
  let idp: OidcProviderProcess | undefined
  const stop = async (): Promise<void> => {
    await app?.close()
    await idp?.close()
    await new Promise(resolve => sink === undefined ? resolve(undefined) : sink.close(resolve))
    await registry?.stop()
    await rm(dir, { recursive: true, force: true })
  }
  try {
    registry = await startRegistry()
    await seed(registry.url)
    const keys = DEMO_ACCOUNTS.map(account => ({ name: account.name, key: `rdg_${randomBytes(24).toString('base64url')}`, what: account.what }))
    // The identity provider must know where the page sends people back to, so the gateway's port is fixed first.
    const port = options.port === 0 ? await freePort() : options.port
    const users = DEMO_PEOPLE.map(person => ({ username: person.username, password: randomBytes(9).toString('base64url'), what: person.what }))
    const uiUrl = `http://${options.host}:${port}/ui/`
    idp = await startOidcProvider({
      users: DEMO_PEOPLE.map((person, index) => ({ username: person.username, password: (users[index] as DemoUser).password, groups: [...person.groups] })),
      clientId: DEMO_CLIENT_ID,
      redirectUris: [uiUrl],
      audience: DEMO_AUDIENCE
    })
    const policyFile = join(dir, 'policy.yaml')
    await writeFile(policyFile, demoPolicy(keys, idp))
    sink = await responseUrlSink(options.onSlackPost ?? (() => {}))
    const sinkOrigin = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`
    const signingSecret = randomBytes(24).toString('hex')
    const config = validateConfig({
      host: options.host,
      port,
      ui: { oidc: { clientId: DEMO_CLIENT_ID } },
      logLevel: options.logLevel,
      graphql: { graphiql: true },
      registries: { default: { url: registry.url } },
      policyFile,
      audit: { path: join(dir, 'audit.db') },
      chat: { slack: { signingSecret, responseOrigins: [sinkOrigin] } }
    }, 'the demo')
    app = await buildApp(config)
    const address = await app.listen({ host: config.host, port: config.port })
    const slackCommand = (text: string): SlackCommand => signedCommand(address, signingSecret, `${sinkOrigin}/commands/demo`, text)
    return { gatewayUrl: address, uiUrl, issuer: idp.issuer, users, registryUrl: registry.url, policyFile, keys, slackCommand, stop }
  } catch (error) {
    await stop()
    throw error
  }
}
