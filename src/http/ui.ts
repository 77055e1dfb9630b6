import { fileURLToPath } from 'node:url'
import type { FastifyPluginAsync } from 'fastify'
import fastifyStatic from '@fastify/static'
import Type, { type Static } from 'typebox'
import type { Config } from '../config/schema.js'
import type { PolicySource } from '../policy/types.js'

/** The built page (vite → dist/ui), two levels up from src/http/ or dist/http/ alike. */
export const UI_ROOT = fileURLToPath(new URL('../../dist/ui/', import.meta.url))

export const UiConfigSchema = Type.Object({
  oidc: Type.Optional(Type.Object({
    issuer: Type.String(),
    clientId: Type.String(),
    scopes: Type.String()
  }))
})
export type UiConfig = Static<typeof UiConfigSchema>

/**
 * The page's scripts and styles are files of its own origin: no inline script or style, nothing from elsewhere
 * but the identity provider it signs in with (token and discovery requests) and the API on the same origin.
 */
function contentSecurityPolicy (issuer: string | undefined): string {
  const connect = issuer === undefined ? "'self'" : `'self' ${new URL(issuer).origin}`
  return [
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", `connect-src ${connect}`,
    "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'"
  ].join('; ')
}

export interface UiOptions {
  ui: Config['ui']
  policy: PolicySource
  /** The built page; UI_ROOT unless given. */
  root?: string
}

/**
 * The web page at /ui/, encapsulated so its headers and its openness stay here: the page and its config need no
 * credentials (they hold none), while every API call the page makes does.
 */
export const uiRoutes = (options: UiOptions): FastifyPluginAsync => async (app) => {
  // Read per request: a policy reload may bring another issuer. An issuer that is not a URL (the policy allows any
  // string) cannot be an OpenID provider the browser talks to: the page then offers API keys only.
  const signIn = (): UiConfig['oidc'] => {
    const oidc = options.ui.oidc
    const issuer = options.policy.current()?.jwt?.issuer
    if (oidc === undefined || issuer === undefined || !URL.canParse(issuer)) return undefined
    return { issuer, clientId: oidc.clientId, scopes: oidc.scopes }
  }
  app.addHook('onRoute', route => {
    route.config = { ...route.config, public: true }
  })
  app.addHook('onSend', async (_request, reply) => {
    void reply.header('content-security-policy', contentSecurityPolicy(signIn()?.issuer))
    void reply.header('referrer-policy', 'no-referrer')
    void reply.header('x-content-type-options', 'nosniff')
    void reply.header('x-frame-options', 'DENY')
    void reply.header('cross-origin-opener-policy', 'same-origin')
  })
  app.get('/ui/config.json', { schema: { response: { 200: UiConfigSchema } } }, async (_request, reply): Promise<UiConfig> => {
    void reply.header('cache-control', 'no-store')
    const oidc = signIn()
    return oidc === undefined ? {} : { oidc }
  })
  app.get('/ui', async (_request, reply) => await reply.redirect('/ui/', 301))
  await app.register(fastifyStatic, {
    root: options.root ?? UI_ROOT,
    prefix: '/ui/',
    // The page names its assets by content hash: they never change, index.html always may.
    setHeaders: (reply, path) => {
      void reply.header('cache-control', path.endsWith('.html') ? 'no-cache' : 'public, max-age=31536000, immutable')
    },
    decorateReply: false,
    wildcard: true,
    index: 'index.html',
    serveDotFiles: false
  })
}
