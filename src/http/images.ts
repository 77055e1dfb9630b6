import { clientRequestId } from './client-request-id.js'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { GatewayError } from '../errors.js'
import { deleteImage, type ImageServices } from '../images/delete-image.js'
import { PLAN_ID } from '../images/plan.js'
import { DeleteImageResultSchema } from '../images/shapes.js'

export const DeleteImageQuery = Type.Object({
  dryRun: Type.Boolean({ default: false, description: 'Run every check, delete nothing.' }),
  mode: Type.Optional(Type.Enum(['auto', 'untag', 'digest'], {
    description: 'untag: remove only this tag; digest: delete the manifest with every tag on it; auto: delete the digest when nothing else needs it, else untag. The registry\'s defaultMode when absent.'
  })),
  force: Type.Boolean({ default: false, description: 'mode=digest only: delete even when other tags share the digest (they are removed too).' }),
  planId: Type.Optional(Type.String({
    pattern: PLAN_ID.source,
    description: 'Execute only if the plan made now is this one (a dry-run\'s planId); else 409 PLAN_STALE.'
  })),
  registry: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'A configured registry name; the default registry when absent.' }))
}, { additionalProperties: false })

/**
 * `DELETE /images/<name>/<tag>`: the repository name may arrive URL-encoded (`team%2Fapp`) or as plain path
 * segments (`team/app`); either way the last segment is the tag.
 */
export function splitImagePath (path: string): { repository: string, tag: string } {
  const slash = path.lastIndexOf('/')
  if (slash === -1) {
    throw new GatewayError('INVALID_REFERENCE', 'the path must be /images/<name>/<tag>, e.g. /images/team/app/v1.', {
      extras: { field: 'tag', rule: 'must be given as the last path segment' }
    })
  }
  return { repository: path.slice(0, slash), tag: path.slice(slash + 1) }
}

export const imageRoutes = (deps: ImageServices): FastifyPluginAsyncTypebox => async (app) => {
  app.delete('/images/*', {
    schema: {
      params: Type.Object({ '*': Type.String() }),
      querystring: DeleteImageQuery,
      response: { 200: DeleteImageResultSchema }
    }
  }, async (request) => {
    const { repository, tag } = splitImagePath(request.params['*'])
    return await deleteImage(deps, {
      identity: request.identity,
      context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
      repository,
      tag,
      registry: request.query.registry,
      dryRun: request.query.dryRun,
      force: request.query.force,
      ...(request.query.mode === undefined ? {} : { mode: request.query.mode }),
      ...(request.query.planId === undefined ? {} : { planId: request.query.planId }),
      signal: request.signal
    })
  })
}
