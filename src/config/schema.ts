import Type, { type Static } from 'typebox'
import { CleanupRulesSchema } from '../cleanups/shapes.js'
import { WebhookEventNameSchema } from '../notifications/shapes.js'

export const RegistrySchema = Type.Object({
  url: Type.String({ pattern: '^https?://[^\\s]+$', description: 'Base URL of the registry, e.g. https://registry.example.com' }),
  username: Type.Optional(Type.String({ minLength: 1 })),
  password: Type.Optional(Type.String({ minLength: 1 })),
  timeouts: Type.Object({
    connectMs: Type.Integer({ minimum: 1, maximum: 600_000, default: 2000 }),
    requestMs: Type.Integer({ minimum: 1, maximum: 600_000, default: 10_000 })
  }, { additionalProperties: false, default: {} }),
  tls: Type.Object({
    caFile: Type.Optional(Type.String({ minLength: 1 })),
    insecure: Type.Boolean({ default: false })
  }, { additionalProperties: false, default: {} }),
  tokenRealmOrigins: Type.Array(Type.String({ pattern: '^https?://[^/\\s]+$' }), { default: [] }),
  /** Registry tokens kept at most (one per repository and scope); the least recently used go first. */
  tokenCacheSize: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 }),
  connections: Type.Integer({ minimum: 1, maximum: 256, default: 16 }),
  untagStrategy: Type.Union([Type.Literal('swap'), Type.Literal('native')], {
    default: 'swap',
    description: 'How a single tag is removed: swap (placeholder PUT, then DELETE by digest; any registry) or native (DELETE by tag; only registries known to untag that way, never probed)'
  }),
  defaultMode: Type.Union([Type.Literal('auto'), Type.Literal('untag'), Type.Literal('digest')], {
    default: 'auto',
    description: 'Delete mode when a request names none'
  })
}, { additionalProperties: false })

export const WebhookSchema = Type.Object({
  /** Names the endpoint in metrics, logs and the delivery listing (never the URL, which may hold a token). */
  name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$' }),
  /** Where events are POSTed (env WEBHOOK_<NAME>_URL; a Slack incoming-webhook URL is itself a secret). */
  url: Type.String({ pattern: '^https?://[^\\s]+$' }),
  /** Standard Webhooks signing secret, whsec_ and base64 of 24 to 64 bytes (env WEBHOOK_<NAME>_SECRET); never logged. */
  secret: Type.Optional(Type.String({ pattern: '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$' })),
  events: Type.Array(WebhookEventNameSchema, {
    minItems: 1, uniqueItems: true, default: ['deleted', 'untagged', 'restored', 'approved', 'cleanup.planned', 'cleanup.finished', 'cleanup.failed']
  }),
  /** standard: the signed JSON event. slack: {text, blocks} for a Slack incoming webhook (unsigned; the URL is the secret). */
  format: Type.Union([Type.Literal('standard'), Type.Literal('slack')], { default: 'standard' }),
  /** Each attempt gives up after this long (connect, headers and body together). */
  timeoutMs: Type.Integer({ minimum: 100, maximum: 60_000, default: 10_000 })
}, { additionalProperties: false })

export const ConfigSchema = Type.Object({
  host: Type.String({ minLength: 1, default: '127.0.0.1' }),
  port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
  /**
   * Addresses or CIDR ranges of the load balancers in front (env TRUST_PROXY, comma-separated). A request from one
   * of them is the client named in its X-Forwarded-For, so the failed-authentication budget is per client, not
   * per balancer. Only listed hops are believed: trusting every sender would let anyone pick their own address.
   */
  trustProxy: Type.Array(Type.String({ minLength: 1, maxLength: 64, pattern: '^[0-9A-Fa-f.:]+(/[0-9]{1,3})?$' }), { maxItems: 100, default: [] }),
  logLevel: Type.Union([
    Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'),
    Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent')
  ], { default: 'info' }),
  graphql: Type.Object({
    graphiql: Type.Boolean({ default: false }),
    introspection: Type.Boolean({ default: true }),
    maxDepth: Type.Integer({ minimum: 1, maximum: 100, default: 8 }),
    maxFields: Type.Integer({ minimum: 1, maximum: 10_000, default: 200 }),
    /** Mutation fields (aliases included) one document may run: each is a deletion or a restore. */
    maxMutationsPerDocument: Type.Integer({ minimum: 1, maximum: 100, default: 1 }),
    /** `auditEvents` fields (aliases included) one document may ask for: each reads up to audit.listScanLimit rows. */
    maxAuditEventsPerDocument: Type.Integer({ minimum: 1, maximum: 100, default: 1 }),
    /** `repositories`, `tag` and `image` fields (aliases included, and every `tags` of an image after its first) one document may ask for. */
    maxRegistryReadsPerDocument: Type.Integer({ minimum: 1, maximum: 100, default: 1 })
  }, { additionalProperties: false, default: {} }),
  limits: Type.Object({
    bodyBytes: Type.Integer({ minimum: 1024, maximum: 10 * 1024 * 1024, default: 64 * 1024 }),
    /** Requests per caller identity per window; health, readiness and metrics are exempt. */
    requestsPerWindow: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 600 }),
    windowMs: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 60_000 }),
    /** Requests that fail authentication per client address per window; beyond it 429 before credentials are checked. */
    failedAuthPerWindow: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 30 }),
    /** Deletions and dry-runs checking co-tags at once per caller identity; more get 429 at once. */
    coTagScansPerCaller: Type.Integer({ minimum: 1, maximum: 10_000, default: 2 })
  }, { additionalProperties: false, default: {} }),
  metrics: Type.Object({
    enabled: Type.Boolean({ default: true }),
    /** Serve /metrics on this port instead of the API's (keeps it off the public listener). */
    port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
    /** Serve /metrics on the API port without credentials; otherwise any valid API key or token is needed there. */
    public: Type.Boolean({ default: false })
  }, { additionalProperties: false, default: {} }),
  shutdownTimeoutMs: Type.Integer({ minimum: 0, maximum: 600_000, default: 10_000 }),
  defaultRegistry: Type.String({ minLength: 1, default: 'default' }),
  registries: Type.Record(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' }), RegistrySchema, { minProperties: 1 }),
  coTagConcurrency: Type.Integer({ minimum: 1, maximum: 256, default: 16 }),
  /** A tag list longer than this is refused as incomplete (UPSTREAM_ERROR), never used in part. */
  /** Manifests one deletion or dry-run may fetch to check co-tags; a bigger repository is refused (UPSTREAM_ERROR). */
  coTagScanLimit: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 50_000 }),
  tagListMaxPages: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 }),
  tagListMaxBytes: Type.Integer({ minimum: 1024, maximum: 1024 * 1024 * 1024, default: 32 * 1024 * 1024 }),
  policyFile: Type.Optional(Type.String({ minLength: 1 })),
  audit: Type.Object({
    /** sqlite: one file, one replica (the default). postgres: a database several replicas share. */
    driver: Type.Union([Type.Literal('sqlite'), Type.Literal('postgres')], { default: 'sqlite' }),
    path: Type.String({ minLength: 1, default: './data/audit.db', description: 'SQLite file of the audit trail' }),
    /** postgres://user:password@host:port/database (env DATABASE_URL); required with driver postgres. A secret: never logged. */
    url: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
    /** Connections each replica keeps to PostgreSQL at most. */
    poolSize: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
    /** PostgreSQL cancels any audit statement that runs longer, so a stuck lock cannot hold a connection forever. */
    statementTimeoutMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 10_000 }),
    /** PostgreSQL: how long a replica waits for another replica's lock on a repository before answering 503. */
    lockWaitMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 60_000 }),
    /** How often every replica looks for `pending` records to reconcile (besides at start-up). */
    reconcileIntervalMs: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 300_000 }),
    /** A pending record younger than this may still be in flight on some replica: reconciliation leaves it alone. */
    reconcileAfterMs: Type.Integer({ minimum: 0, maximum: 86_400_000, default: 300_000 }),
    /**
     * TLS to PostgreSQL, as files (PEM) read once at start-up. Alternatively put libpq's sslmode/sslrootcert/sslcert/
     * sslkey in audit.url; not both, so one place says how the connection is protected.
     */
    tls: Type.Optional(Type.Object({
      /** CA that signed the server's certificate; without it the system's CAs are trusted. */
      caFile: Type.Optional(Type.String({ minLength: 1 })),
      /** Client certificate and key, for a server that asks for one (pg_hba clientcert or cert authentication). */
      certFile: Type.Optional(Type.String({ minLength: 1 })),
      keyFile: Type.Optional(Type.String({ minLength: 1 })),
      /** false accepts any server certificate: encrypted but not authenticated. For tests only. */
      rejectUnauthorized: Type.Boolean({ default: true }),
      /** The name the server's certificate must carry, when audit.url names the host by address or another name. */
      servername: Type.Optional(Type.String({ minLength: 1 }))
    }, { additionalProperties: false })),
    /** PostgreSQL unreachable at start-up (or when first opened): retry connecting and migrating, doubling the wait up to maxMs. */
    connectRetry: Type.Object({
      initialMs: Type.Integer({ minimum: 10, maximum: 60_000, default: 500 }),
      maxMs: Type.Integer({ minimum: 10, maximum: 600_000, default: 30_000 })
    }, { additionalProperties: false, default: {} }),
    retentionDays: Type.Integer({ minimum: 1, maximum: 36_500, default: 90 }),
    /** Rows one audit page may read at most, so no caller can make a page scan the whole trail. */
    listScanLimit: Type.Integer({ minimum: 201, maximum: 100_000, default: 1000 })
  }, { additionalProperties: false, default: {} }),
  /** Chat-ops: a transport that only makes plans and executes them after a confirm button. */
  chat: Type.Object({
    /** Absent: the Slack routes are not served at all. */
    slack: Type.Optional(Type.Object({
      /** The app's signing secret (env SLACK_SIGNING_SECRET); every request is verified with it. */
      signingSecret: Type.String({ minLength: 8 }),
      /** Origins response_url may point at; a command naming another is refused, nothing posted there. */
      responseOrigins: Type.Array(Type.String({ pattern: '^https?://[^/\\s]+$' }), { minItems: 1, default: ['https://hooks.slack.com'] }),
      /** Post a short public note in the channel after each deletion and undo. */
      announce: Type.Boolean({ default: false }),
      /** How long a plan waits for its button (Slack's response_url itself lives 30 minutes). */
      planTtlMs: Type.Integer({ minimum: 1000, maximum: 1_800_000, default: 600_000 }),
      /** Plans and undo buttons kept at once; past it the oldest go first. */
      maxPlans: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 }),
      /** Signatures remembered against replay within the 5-minute window; past it requests are refused (429). */
      replayCacheSize: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 100_000 }),
      /** Timeout of each post to response_url. */
      postTimeoutMs: Type.Integer({ minimum: 100, maximum: 60_000, default: 5000 })
    }, { additionalProperties: false })),
    /** Absent: the Mattermost routes are not served at all. */
    mattermost: Type.Optional(Type.Object({
      /** The slash command's token (env MATTERMOST_TOKEN); the command route refuses any request without it. */
      token: Type.String({ minLength: 8 }),
      /**
       * Key of the HMAC each button's context carries (env MATTERMOST_ACTION_SECRET): Mattermost does not sign
       * button posts, so this is what tells a button the gateway made from a forged one.
       */
      actionSecret: Type.String({ minLength: 16 }),
      /** The gateway's own public URL as Mattermost reaches it; buttons post to <publicUrl>/chat/mattermost/actions. */
      publicUrl: Type.String({ pattern: '^https?://[^/\\s]+(/[^\\s]*)?$' }),
      /** How long a plan waits for its button. */
      planTtlMs: Type.Integer({ minimum: 1000, maximum: 1_800_000, default: 600_000 }),
      /** Plans and undo buttons kept at once; past it the oldest go first. */
      maxPlans: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 })
    }, { additionalProperties: false }))
  }, { additionalProperties: false, default: {} }),
  /** Signed webhooks, delivered at least once from the outbox in the audit store. */
  notifications: Type.Object({
    webhooks: Type.Array(WebhookSchema, { maxItems: 32, default: [] }),
    /** How often the delivery worker looks for due deliveries (a new audit record wakes it at once). */
    pollMs: Type.Integer({ minimum: 10, maximum: 60_000, default: 1000 }),
    /** Deliveries in flight at once, over all endpoints. */
    concurrency: Type.Integer({ minimum: 1, maximum: 256, default: 16 }),
    /** Exponential backoff with jitter: the first retry after about firstDelayMs, doubling up to maxDelayMs; 24 h in all. */
    retry: Type.Object({
      firstDelayMs: Type.Integer({ minimum: 10, maximum: 3_600_000, default: 5000 }),
      maxDelayMs: Type.Integer({ minimum: 10, maximum: 86_400_000, default: 3_600_000 })
    }, { additionalProperties: false, default: {} })
  }, { additionalProperties: false, default: {} }),
  /** The read API (catalog, tags, one tag). */
  browse: Type.Object({
    /** Manifests, configs and tag resolutions kept each; manifests and configs are immutable per digest. */
    cacheEntries: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 }),
    /** How long a page of tags reuses a tag's digest before asking the registry again (0: always ask). */
    tagTtlMs: Type.Integer({ minimum: 0, maximum: 3_600_000, default: 5000 }),
    /** Names per catalog request (distribution refuses more than 1,000). */
    catalogPageSize: Type.Integer({ minimum: 1, maximum: 1000, default: 1000 }),
    /** Catalog requests one page of repositories may make; past it the page ends early with a cursor. */
    catalogPagesPerRequest: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }),
    /** Pages of repositories or tags one caller identity may have in flight; more get 429 at once. */
    pagesPerCaller: Type.Integer({ minimum: 1, maximum: 10_000, default: 4 }),
    /**
     * Key of the sealed catalog cursors (env BROWSE_CURSOR_SECRET). Without it each process makes its own, so a
     * cursor ends with the process that made it; replicas behind one load balancer need the same secret.
     */
    cursorSecret: Type.Optional(Type.String({ minLength: 32 }))
  }, { additionalProperties: false, default: {} }),
  /** Cleanups by rule (issue 15): planned per tag through the same core as a single deletion. */
  cleanups: Type.Object({
    /** Tags one cleanup may read across its repositories; a bigger one is refused before any manifest is read. */
    maxTags: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 100_000 }),
    /** Manifests and configs one cleanup fetches at once. */
    concurrency: Type.Integer({ minimum: 1, maximum: 256, default: 16 }),
    /** Cleanups one caller may be planning at once; a further one is 429 at once. */
    plansPerCaller: Type.Integer({ minimum: 1, maximum: 1000, default: 2 }),
    /** Removals one run makes at once (part 2: POST /cleanups/<id>/execute). */
    runConcurrency: Type.Integer({ minimum: 1, maximum: 64, default: 4 }),
    /** Removals one run may make unless its request raises the cap; a plan that removes more is refused whole. */
    maxDeletions: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 100 }),
    /** How often the replica running a cleanup writes its heartbeat and reads a cancel asked on another replica. */
    heartbeatMs: Type.Integer({ minimum: 10, maximum: 600_000, default: 5000 }),
    /** A running run whose heartbeat is older is marked interrupted by any replica's housekeeping (at least 3 × heartbeatMs). */
    staleAfterMs: Type.Integer({ minimum: 30, maximum: 3_600_000, default: 30_000 }),
    /** How long DELETE /cleanups/<id> waits for another replica's run to stop before answering 202 cancelling. */
    cancelWaitMs: Type.Integer({ minimum: 0, maximum: 600_000, default: 10_000 }),
    /** How often a replica that does not run a cleanup reads it from the store (cancel's wait, the event stream). */
    pollMs: Type.Integer({ minimum: 10, maximum: 60_000, default: 1000 })
  }, { additionalProperties: false, default: {} }),
  /** Named cleanup policies: POST /retention/<name>/plan plans one as its caller; a scheduled one also runs by itself. */
  retention: Type.Object({
    /**
     * The service identity scheduled policies run as, `service:<runAs>` in the policy's bindings: its roles decide
     * what a scheduled run may remove, tag by tag, as for any caller.
     */
    runAs: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$', default: 'retention' }),
    policies: Type.Array(Type.Object({
      name: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' }),
      registry: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
      repositories: Type.Array(Type.String({ minLength: 1, maxLength: 255 }), { minItems: 1, maxItems: 100 }),
      rules: CleanupRulesSchema,
      /** Cron (minute hour day-of-month month day-of-week, or @hourly, @daily, @weekly, @monthly): runs it by itself. */
      schedule: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
      /** The IANA time zone the schedule is read in. */
      timezone: Type.String({ minLength: 1, maxLength: 64, default: 'UTC' }),
      /** The first scheduled run of this policy, and the first after any change to it, only plans and reports. */
      dryRunFirst: Type.Boolean({ default: false }),
      /** Overrides retention.runAs for this policy. */
      runAs: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' })),
      /** The cap of a scheduled run (cleanups.maxDeletions when absent): a plan removing more is not run, and reported. */
      maxDeletions: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 }))
    }, { additionalProperties: false }), { maxItems: 1000, default: [] })
  }, { additionalProperties: false, default: {} }),
  /** The web page at /ui/. */
  ui: Type.Object({
    enabled: Type.Boolean({ default: true }),
    /** Sign-in through the identity provider the policy's jwt section trusts; without it the page offers API keys only. */
    oidc: Type.Optional(Type.Object({
      clientId: Type.String({ minLength: 1, maxLength: 256, description: 'The public client (no secret) registered for the page at the identity provider' }),
      scopes: Type.String({ minLength: 1, maxLength: 1024, default: 'openid profile', description: 'Space-separated scopes the page asks for' })
    }, { additionalProperties: false }))
  }, { additionalProperties: false, default: {} })
}, { additionalProperties: false })

export type RegistryConfig = Static<typeof RegistrySchema>
export type Config = Static<typeof ConfigSchema>
export type WebhookConfig = Static<typeof WebhookSchema>
