/**
 * Mattermost's custom slash command and its interactive message buttons. Encapsulated: this plugin alone parses
 * form bodies. The command is authenticated by its token (form and header); a button post is unsigned, so it is
 * believed only when its context carries the gateway's HMAC of the plan id, and the plan itself stays
 * server-side (single use, requester only, re-checked by the use case). The subject is
 * `mattermost:<team_id>/<user_id>`, bound in the policy like any other; names typed in the text are never trusted.
 * Mattermost waits for the answer, so the plan and the result come back in it rather than through response_url.
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { Config } from '../../config/schema.js'
import { GatewayError, invalidField } from '../../errors.js'
import { deleteImage, executePlan, type ImageServices } from '../../images/delete-image.js'
import { restoreDeletion } from '../../images/restore-deletion.js'
import type { Identity } from '../../policy/types.js'
import { parseCommand } from '../command.js'
import { deletedText, restoredText } from '../plan-text.js'
import { ChatPlans } from '../plans.js'
import { deniedMessage, ephemeral, failureText, HELP, notice, planMessage, statusMessage, update, type Button } from './messages.js'
import { buttonMac, verifyButtonMac, verifyCommandToken } from './secrets.js'

export type MattermostSettings = NonNullable<Config['chat']['mattermost']>

export interface MattermostDeps {
  images: ImageServices
  settings: MattermostSettings
  now?: () => number
}

const MATTERMOST_ID = /^[a-z0-9]{26}$/
const COMMANDS = '/chat/mattermost/commands'
const ACTIONS = '/chat/mattermost/actions'
type ButtonAction = Button['id']
const BUTTON_ACTIONS: readonly string[] = ['delete', 'cancel', 'undo']

/** What a verified button click says: the signed context, and the clicker's identity. */
interface Click { action: ButtonAction, id: string, team: string }

declare module 'fastify' {
  interface FastifyRequest {
    mattermostClick: Click
  }
}

function mattermostIdentity (team: unknown, user: unknown): Identity {
  if (typeof team !== 'string' || !MATTERMOST_ID.test(team)) throw invalidField('team_id', 'mattermost-id', 'team_id must be a Mattermost team id.')
  if (typeof user !== 'string' || !MATTERMOST_ID.test(user)) throw invalidField('user_id', 'mattermost-id', 'user_id must be a Mattermost user id.')
  return { subject: `mattermost:${team}/${user}`, groups: [], kind: 'mattermost' }
}

const forged = (): GatewayError => new GatewayError('UNAUTHENTICATED', 'the button context is not one the gateway made.')

const REFUSED: Record<'unknown' | 'not-yours', string> = {
  unknown: 'This button no longer works: it was used, cancelled or it expired. Run the command again for a fresh plan.',
  'not-yours': 'Only the person who asked for this plan can use its buttons.'
}

export const mattermostRoutes = (deps: MattermostDeps): FastifyPluginAsync => async (app) => {
  const { settings, images } = deps
  const now = deps.now ?? Date.now
  const plans = new ChatPlans({ ttlMs: settings.planTtlMs, capacity: settings.maxPlans, shared: images.audit.store.shared, namespace: 'mattermost' })
  const actionUrl = `${settings.publicUrl.replace(/\/+$/, '')}${ACTIONS}`
  const button = (action: ButtonAction, name: string, id: string, team: string, style?: 'danger'): Button => ({
    id: action,
    name,
    url: actionUrl,
    context: { action, id, team, mac: buttonMac(settings.actionSecret, { action, id, team }) },
    ...(style === undefined ? {} : { style })
  })

  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => {
    done(null, new URLSearchParams(body as string))
  })
  app.decorateRequest('mattermostClick', null as unknown as Click)
  // preValidation: after the body is read, before the rate limit (preHandler) keys on the identity set here.
  app.addHook('preValidation', async (request: FastifyRequest) => {
    if (request.routeOptions.url === COMMANDS) {
      const form = request.body instanceof URLSearchParams ? request.body : new URLSearchParams()
      verifyCommandToken(settings.token, form.get('token'), request.headers.authorization)
      request.identity = mattermostIdentity(form.get('team_id'), form.get('user_id'))
      return
    }
    const body = request.body as { user_id?: unknown, context?: Record<string, unknown> } | undefined
    const context = typeof body === 'object' && body !== null && typeof body.context === 'object' && body.context !== null ? body.context : {}
    const { action, id, team, mac } = context
    const strings = typeof action === 'string' && typeof id === 'string' && typeof team === 'string'
    if (!strings || !verifyButtonMac(settings.actionSecret, { action, id, team }, mac)) throw forged()
    // Only the gateway makes MACs, for these actions alone; checked anyway, so a leaked secret cannot name others.
    if (!BUTTON_ACTIONS.includes(action)) throw forged()
    request.mattermostClick = { action: action as ButtonAction, id, team }
    // The user id is Mattermost's word (the post is unsigned); the team is the one the plan was made for.
    request.identity = mattermostIdentity(team, (body as { user_id?: unknown }).user_id)
  })

  const contextOf = (request: FastifyRequest): { requestId: string, transport: 'mattermost' } => ({ requestId: request.id, transport: 'mattermost' })

  app.post(COMMANDS, { config: { signed: true } }, async (request) => {
    const form = request.body as URLSearchParams
    const command = parseCommand(form.get('text') ?? '')
    if (command.kind === 'help') return ephemeral(HELP)
    if (command.kind === 'unclear') return ephemeral(`I did not understand that.\n${HELP}`)
    if (command.kind === 'bad-image') return ephemeral(failureText(command.error))
    const { identity } = request
    const asked = { identity, context: contextOf(request), repository: command.ref.repository, tag: command.ref.tag, dryRun: true }
    let plan
    try {
      plan = await deleteImage(images, command.mode === undefined ? asked : { ...asked, mode: command.mode })
    } catch (error) {
      return ephemeral(`Cannot plan that: ${failureText(error)}`)
    }
    if (command.kind === 'status') return statusMessage(plan)
    if (!plan.allowed) return deniedMessage(plan)
    const { planId, registry, name: repository, tag, mode, digest } = plan
    const id = await plans.put({ kind: 'delete', planId, registry, repository, tag, mode, digest, approval: false, requester: identity.subject }, now())
    const team = form.get('team_id') as string
    return planMessage(plan, [button('delete', 'Delete', id, team, 'danger'), button('cancel', 'Cancel', id, team)])
  })

  app.post(ACTIONS, { config: { signed: true } }, async (request) => {
    const { identity } = request
    const click = request.mattermostClick
    const context = contextOf(request)
    const refused = (taken: { refused: keyof typeof REFUSED }): object => notice(REFUSED[taken.refused])
    if (click.action === 'undo') {
      const taken = await plans.take(click.id, 'undo', identity.subject, now())
      if (!('found' in taken)) return refused(taken)
      const undo = taken.found
      const image = `${undo.repository}:${undo.tag}`
      try {
        return update(restoredText(await restoreDeletion(images, { identity, context, deletionId: undo.deletionId }), image))
      } catch (error) {
        return update(`Not restored: ${failureText(error)}`)
      }
    }
    const taken = await plans.take(click.id, 'delete', identity.subject, now())
    if (!('found' in taken)) return refused(taken)
    const plan = taken.found
    if (click.action === 'cancel') return update(`Cancelled: \`${plan.repository}:${plan.tag}\` was not deleted.`)
    try {
      const result = await executePlan(images, {
        identity, context, plan: { id: plan.planId, registry: plan.registry, repository: plan.repository, tag: plan.tag, mode: plan.mode, force: false }
      })
      const undo = { kind: 'undo' as const, deletionId: result.auditId, registry: result.registry, repository: result.name, tag: result.tag }
      const undoId = await plans.put({ ...undo, requester: identity.subject }, now())
      return update(deletedText(result), [button('undo', 'Undo', undoId, click.team)])
    } catch (error) {
      return update(`Not deleted: ${failureText(error)}`)
    }
  })
}
