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
import { GatewayError, invalidField, isGatewayError } from '../../errors.js'
import { deleteImage, executePlan, type ImageServices } from '../../images/delete-image.js'
import { restoreDeletion } from '../../images/restore-deletion.js'
import { chatIdentity } from '../../policy/decide.js'
import type { Identity, PolicySource } from '../../policy/types.js'
import { parseCommand } from '../command.js'
import { deletedText, restoredText } from '../plan-text.js'
import { ChatPlans } from '../plans.js'
import {
  approvalRequestText, approvedMessage, deniedMessage, ephemeral, escapeMarkdown, failureText, HELP, notice, planMessage, statusMessage, update, type Button
} from './messages.js'
import { buttonMac, verifyButtonMac, verifyCommandToken } from './secrets.js'

export type MattermostSettings = NonNullable<Config['chat']['mattermost']>

export interface MattermostDeps {
  images: ImageServices
  settings: MattermostSettings
  /** The policy in force, whose chatUsers give Mattermost users their groups. */
  policy: PolicySource
  now?: () => number
}

const MATTERMOST_ID = /^[a-z0-9]{26}$/
const COMMANDS = '/chat/mattermost/commands'
const ACTIONS = '/chat/mattermost/actions'
type ButtonAction = Button['id']
const BUTTON_ACTIONS: readonly string[] = ['delete', 'cancel', 'undo', 'request_approval']
/** `approve <id>`: a word of Mattermost's alone, since an approver cannot see the requester's ephemeral buttons. */
const APPROVE = /^\s*approve(?:\s+(\S+))?\s*$/

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

const APPROVAL_REFUSED: Record<'unknown' | 'not-yours', string> = {
  unknown: 'There is no such approval request: it was approved already, or it expired. The requester can ask again.',
  // Approval requests are taken without a requester check, so this is for completeness of the type alone.
  'not-yours': 'This approval request is not yours to take.'
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
      request.identity = chatIdentity(deps.policy.current(), mattermostIdentity(form.get('team_id'), form.get('user_id')).subject, 'mattermost')
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
    request.identity = chatIdentity(deps.policy.current(), mattermostIdentity(team, (body as { user_id?: unknown }).user_id).subject, 'mattermost')
  })

  const contextOf = (request: FastifyRequest): { requestId: string, transport: 'mattermost' } => ({ requestId: request.id, transport: 'mattermost' })

  /**
   * Runs a requested plan as the requester's, with the approver named; the use case judges the approver (not the
   * requester, holding `approve`). A refusal for who asked leaves the request for someone else.
   */
  const approve = async (approver: Identity, id: string, context: { requestId: string, transport: 'mattermost' }): Promise<object> => {
    const taken = await plans.take(id, 'approval', approver.subject, now())
    if (!('found' in taken)) return ephemeral(APPROVAL_REFUSED[taken.refused])
    const plan = taken.found
    const requester: Identity = { subject: plan.requester, groups: plan.groups, kind: 'mattermost' }
    try {
      const result = await executePlan(images, {
        identity: requester,
        context,
        approvedBy: approver,
        plan: { id: plan.planId, registry: plan.registry, repository: plan.repository, tag: plan.tag, mode: plan.mode, force: false }
      })
      const undo = { kind: 'undo' as const, deletionId: result.auditId, registry: result.registry, repository: result.name, tag: result.tag }
      const undoId = await plans.put({ ...undo, requester: plan.requester }, now())
      // The Undo button is the requester's: its context names their team, so their click matches the plan's owner.
      const team = /^mattermost:([a-z0-9]{26})\//.exec(plan.requester)?.[1] as string
      const text = `${deletedText(result)}\nApproved by ${escapeMarkdown(approver.subject)} for ${escapeMarkdown(plan.requester)}.`
      return approvedMessage(text, [button('undo', 'Undo', undoId, team)])
    } catch (error) {
      if (isGatewayError(error) && error.extras.action === 'approve') {
        await plans.putBack(id, plan, taken.expires)
        return ephemeral(`You cannot approve this: ${failureText(error)}`)
      }
      return ephemeral(`Not deleted: ${failureText(error)}`)
    }
  }

  app.post(COMMANDS, { config: { signed: true } }, async (request) => {
    const form = request.body as URLSearchParams
    const approveWord = APPROVE.exec(form.get('text') ?? '')
    if (approveWord !== null) {
      const id = approveWord[1]
      return id === undefined ? ephemeral(`Which request? Give its id.\n${HELP}`) : await approve(request.identity, id, contextOf(request))
    }
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
    // A plan refused only for want of approval gets Request approval; the use case re-checks everything on run.
    const approval = !plan.allowed && (plan.reason as string).startsWith('APPROVAL_REQUIRED:')
    if (!plan.allowed && !approval) return deniedMessage(plan)
    const { planId, registry, name: repository, tag, mode, digest } = plan
    const id = await plans.put({ kind: 'delete', planId, registry, repository, tag, mode, digest, approval, requester: identity.subject }, now())
    const team = form.get('team_id') as string
    const first = approval ? button('request_approval', 'Request approval', id, team) : button('delete', 'Delete', id, team, 'danger')
    return planMessage(plan, [first, button('cancel', 'Cancel', id, team)], approval)
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
    if (click.action === 'request_approval') {
      const approvalId = await plans.put({ ...plan, kind: 'approval', groups: identity.groups }, now())
      return update(approvalRequestText(identity.subject, plan, approvalId))
    }
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
