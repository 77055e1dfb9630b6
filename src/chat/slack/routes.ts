/**
 * Slack's slash command and button routes. Encapsulated: this plugin alone parses form bodies, as raw bytes,
 * because the signature covers the bytes; nothing is read from a request before its signature is checked.
 * Authentication is the signature (the identity plugin skips `signed` routes); the subject is
 * `slack:<team_id>/<user_id>`, bound to roles in the policy like any other. Names typed in the text are never
 * trusted. The work runs after the 3-second answer and reports through response_url.
 */
import type { FastifyBaseLogger, FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { Config } from '../../config/schema.js'
import { invalidField, isGatewayError } from '../../errors.js'
import { deleteImage, executePlan, type ImageServices } from '../../images/delete-image.js'
import { restoreDeletion } from '../../images/restore-deletion.js'
import { chatIdentity } from '../../policy/decide.js'
import type { Identity, PolicySource } from '../../policy/types.js'
import { parseCommand } from '../command.js'
import { ChatPlans, type TakeResult } from '../plans.js'
import {
  announcement, approvalRequest, deletedMessage, deniedMessage, ephemeral, failureText, HELP, planMessage, replacement, restoredMessage, statusMessage
} from './messages.js'
import { allowedResponseUrl, responseUrlPoster, type Poster } from './response-url.js'
import { acceptOnce, ReplayGuard, verifySlackSignature } from './signature.js'

export type SlackSettings = NonNullable<Config['chat']['slack']>

export interface SlackDeps {
  images: ImageServices
  settings: SlackSettings
  /** The policy in force, whose chatUsers give Slack users their groups. */
  policy: PolicySource
  /** Replaces the response_url poster (tests). */
  post?: Poster
  now?: () => number
}

const SLACK_ID = /^[A-Z0-9]{1,32}$/
const INTERACTIONS = '/chat/slack/interactions'
const ACTIONS: readonly string[] = ['delete', 'cancel', 'undo', 'request_approval', 'approve']

declare module 'fastify' {
  interface FastifyRequest {
    /** The verified form fields of a Slack request. */
    slackForm: URLSearchParams
  }
}

function slackIdentity (team: unknown, user: unknown): Identity {
  if (typeof team !== 'string' || !SLACK_ID.test(team)) throw invalidField('team_id', 'slack-id', 'team_id must be a Slack team id.')
  if (typeof user !== 'string' || !SLACK_ID.test(user)) throw invalidField('user_id', 'slack-id', 'user_id must be a Slack user id.')
  return { subject: `slack:${team}/${user}`, groups: [], kind: 'slack' }
}

interface Interaction {
  identity: Identity
  action: string
  value: unknown
  responseUrl: unknown
}

function readInteraction (form: URLSearchParams): Interaction {
  let payload: {
    type?: unknown
    user?: { id?: unknown, team_id?: unknown }
    team?: { id?: unknown }
    actions?: Array<{ action_id?: unknown, value?: unknown }>
    response_url?: unknown
  }
  try {
    payload = JSON.parse(form.get('payload') ?? '') as typeof payload
  } catch {
    throw invalidField('payload', 'json', 'payload must be the JSON Slack sends with an interaction.')
  }
  if (payload === null || typeof payload !== 'object' || payload.type !== 'block_actions' || !Array.isArray(payload.actions) || payload.actions.length !== 1) {
    throw invalidField('payload', 'block-actions', 'only block_actions with one action are handled.')
  }
  const action = payload.actions[0] as { action_id?: unknown, value?: unknown }
  if (typeof action.action_id !== 'string' || !ACTIONS.includes(action.action_id)) {
    throw invalidField('payload.actions[0].action_id', 'known-action', `the action must be one of ${ACTIONS.join(', ')}.`)
  }
  return {
    identity: slackIdentity(payload.team?.id ?? payload.user?.team_id, payload.user?.id),
    action: action.action_id,
    value: action.value,
    responseUrl: payload.response_url
  }
}

const REFUSED: Record<'unknown' | 'not-yours', string> = {
  unknown: 'This button no longer works: it was used, cancelled or it expired. Run the command again for a fresh plan.',
  'not-yours': 'Only the person who asked for this plan can use its buttons.'
}

export const slackRoutes = (deps: SlackDeps): FastifyPluginAsync => async (app) => {
  const { settings, images } = deps
  const now = deps.now ?? Date.now
  const replays = new ReplayGuard(settings.replayCacheSize)
  const plans = new ChatPlans({ ttlMs: settings.planTtlMs, capacity: settings.maxPlans, shared: images.audit.store.shared, namespace: 'slack' })
  const log: FastifyBaseLogger = app.log
  const post = deps.post ?? responseUrlPoster({
    timeoutMs: settings.postTimeoutMs,
    onFailure: error => { log.warn({ err: error }, 'a post to a Slack response_url failed') }
  })
  const inFlight = new Set<Promise<void>>()
  // Work after the answer is tracked, so closing the app waits for it instead of cutting a deletion short.
  const later = (work: () => Promise<void>): void => {
    const running = work()
      // c8 ignore next: every step catches its own failure and the poster never rejects; this keeps a future bug from crashing the process
      .catch(error => { log.error({ err: error }, 'Slack follow-up failed') })
      .finally(() => { inFlight.delete(running) })
    inFlight.add(running)
  }
  app.addHook('onClose', async () => { await Promise.all([...inFlight]) })

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })
  app.decorateRequest('slackForm', null as unknown as URLSearchParams)
  // preValidation: after the body is read, before the rate limit (preHandler) keys on the identity set here.
  app.addHook('preValidation', async (request: FastifyRequest) => {
    // Fastify leaves the body undefined when none was sent: that is an empty body, and its signature is checked too.
    const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
    verifySlackSignature(settings.signingSecret, {
      timestamp: request.headers['x-slack-request-timestamp'],
      signature: request.headers['x-slack-signature'],
      rawBody
    }, now())
    await acceptOnce(replays, images.audit.store.shared, request.headers['x-slack-signature'] as string, now())
    request.slackForm = new URLSearchParams(rawBody.toString('utf8'))
    const form = request.slackForm
    // Which fields name the user depends on the route, never on what the body happens to contain.
    const { subject } = request.routeOptions.url === INTERACTIONS ? readInteraction(form).identity : slackIdentity(form.get('team_id'), form.get('user_id'))
    request.identity = chatIdentity(deps.policy.current(), subject, 'slack')
  })

  const contextOf = (request: FastifyRequest): { requestId: string, transport: 'slack' } => ({ requestId: request.id, transport: 'slack' })
  const responseUrlOf = (value: unknown): string => {
    const url = allowedResponseUrl(value, settings.responseOrigins)
    if (url === undefined) throw invalidField('response_url', 'allowed-origin', `response_url must be on one of ${settings.responseOrigins.join(', ')}.`)
    return url.href
  }

  app.post('/chat/slack/commands', { config: { signed: true } }, async (request) => {
    const form = request.slackForm
    const command = parseCommand(form.get('text') ?? '')
    if (command.kind === 'help') return ephemeral(HELP)
    if (command.kind === 'unclear') return ephemeral(`I did not understand that. ${HELP}`)
    if (command.kind === 'bad-image') return ephemeral(failureText(command.error))
    const { ref, mode } = command
    const status = command.kind === 'status'
    const responseUrl = responseUrlOf(form.get('response_url'))
    const identity = request.identity
    const context = contextOf(request)
    later(async () => {
      try {
        const asked = { identity, context, repository: ref.repository, tag: ref.tag, dryRun: true }
        const plan = await deleteImage(images, mode === undefined ? asked : { ...asked, mode })
        if (status) return await post(responseUrl, statusMessage(plan))
        // A plan refused only for want of approval gets a Request approval button; the use case re-checks on run.
        const approval = !plan.allowed && (plan.reason as string).startsWith('APPROVAL_REQUIRED:')
        if (!plan.allowed && !approval) return await post(responseUrl, deniedMessage(plan))
        const { planId, registry, name: repository, tag, mode: planned, digest } = plan
        const pending = { kind: 'delete' as const, planId, registry, repository, tag, mode: planned, digest, approval }
        const id = await plans.put({ ...pending, requester: identity.subject }, now())
        await post(responseUrl, planMessage(plan, id, approval))
      } catch (error) {
        await post(responseUrl, ephemeral(`Cannot plan that: ${failureText(error)}`))
      }
    })
    return ephemeral(status ? 'checking…' : 'planning…')
  })

  /** Runs an approved plan as the requester's, with the clicker as approver; the use case judges the approver. */
  const approve = async (interaction: Interaction, responseUrl: string, context: { requestId: string, transport: 'slack' }): Promise<void> => {
    const approver = interaction.identity
    const taken = await plans.take(interaction.value, 'approval', approver.subject, now())
    if (!('found' in taken)) return await post(responseUrl, ephemeral(REFUSED[taken.refused]))
    const plan = taken.found
    const requester: Identity = { subject: plan.requester, groups: plan.groups, kind: 'slack' }
    try {
      const result = await executePlan(images, {
        identity: requester,
        context,
        approvedBy: approver,
        plan: { id: plan.planId, registry: plan.registry, repository: plan.repository, tag: plan.tag, mode: plan.mode, force: false }
      })
      const undo = { kind: 'undo' as const, deletionId: result.auditId, registry: result.registry, repository: result.name, tag: result.tag }
      await post(responseUrl, deletedMessage(result, await plans.put({ ...undo, requester: plan.requester }, now())))
      const note = `approved deleting \`${result.name}:${result.tag}\` for ${plan.requester}.`
      if (settings.announce) await post(responseUrl, announcement(approver.subject, note))
    } catch (error) {
      // Refused for who clicked (not allowed to approve, or the requester themselves): the request stays for others.
      if (isGatewayError(error) && error.extras.action === 'approve') {
        await plans.putBack(interaction.value as string, plan, taken.expires)
        return await post(responseUrl, ephemeral(`You cannot approve this: ${failureText(error)}`))
      }
      await post(responseUrl, replacement(`Not deleted: ${failureText(error)}`))
    }
  }

  app.post(INTERACTIONS, { config: { signed: true } }, async (request, reply) => {
    const interaction = readInteraction(request.slackForm)
    const responseUrl = responseUrlOf(interaction.responseUrl)
    const { identity } = interaction
    const context = contextOf(request)
    const refused = async (taken: TakeResult<unknown>): Promise<boolean> => {
      if ('found' in taken) return false
      await post(responseUrl, ephemeral(REFUSED[taken.refused]))
      return true
    }
    later(async () => {
      if (interaction.action === 'undo') {
        const taken = await plans.take(interaction.value, 'undo', identity.subject, now())
        if (await refused(taken) || !('found' in taken)) return
        const undo = taken.found
        const image = `${undo.repository}:${undo.tag}`
        try {
          const result = await restoreDeletion(images, { identity, context, deletionId: undo.deletionId })
          await post(responseUrl, restoredMessage(result, image))
          if (settings.announce) await post(responseUrl, announcement(identity.subject, `restored \`${image}\`.`))
        } catch (error) {
          await post(responseUrl, replacement(`Not restored: ${failureText(error)}`))
        }
        return
      }
      if (interaction.action === 'approve') return await approve(interaction, responseUrl, context)
      const taken = await plans.take(interaction.value, 'delete', identity.subject, now())
      if (await refused(taken) || !('found' in taken)) return
      const plan = taken.found
      if (interaction.action === 'request_approval') {
        const id = await plans.put({ ...plan, kind: 'approval', groups: identity.groups }, now())
        await post(responseUrl, replacement(`Approval requested for \`${plan.repository}:${plan.tag}\`: the request is in the channel.`))
        return await post(responseUrl, approvalRequest(identity.subject, `${plan.repository}:${plan.tag}`, plan.digest, id))
      }
      if (interaction.action === 'cancel') return await post(responseUrl, replacement(`Cancelled: \`${plan.repository}:${plan.tag}\` was not deleted.`))
      try {
        const result = await executePlan(images, {
          identity, context, plan: { id: plan.planId, registry: plan.registry, repository: plan.repository, tag: plan.tag, mode: plan.mode, force: false }
        })
        const undo = { kind: 'undo' as const, deletionId: result.auditId, registry: result.registry, repository: result.name, tag: result.tag }
        const undoId = await plans.put({ ...undo, requester: identity.subject }, now())
        await post(responseUrl, deletedMessage(result, undoId))
        const done = `${result.action === 'untagged' ? 'untagged' : 'deleted'} \`${result.name}:${result.tag}\`.`
        if (settings.announce) await post(responseUrl, announcement(identity.subject, done))
      } catch (error) {
        await post(responseUrl, replacement(`Not deleted: ${failureText(error)}`))
      }
    })
    return await reply.code(200).send()
  })
}
