import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import Type from 'typebox'
import { DEFAULT_BROWSE_PAGE, getImageTag, listImageTags, listRepositories, MAX_BROWSE_PAGE, type BrowseDeps, type ListTagsInput } from '../images/browse.js'
import { ImageTagPageSchema, RepositoryPageSchema, TagDetailSchema } from '../images/browse-shapes.js'
import { clientRequestId } from './client-request-id.js'
import { splitImagePath } from './images.js'

const registry = Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'A configured registry name; the default registry when absent.' }))
const limit = Type.Integer({ minimum: 1, maximum: MAX_BROWSE_PAGE, default: DEFAULT_BROWSE_PAGE })
const cursor = Type.Optional(Type.String({ minLength: 1, maxLength: 2048, description: 'A previous page\'s nextCursor.' }))

function read (request: FastifyRequest): Pick<ListTagsInput, 'identity' | 'context' | 'signal'> {
  return { identity: request.identity, context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' }, signal: request.signal }
}

/**
 * The read API. `/images/<name>` lists tags and `/images/<name>/<tag>` shows one: a name with `/` goes as one
 * URL-encoded segment (`team%2Fapp`) to list its tags, while a path of several segments ends with the tag, as
 * for DELETE.
 */
export const browseRoutes = (deps: BrowseDeps): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/repositories', {
    schema: {
      querystring: Type.Object({
        registry,
        prefix: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'Only repositories whose name starts with it.' })),
        limit,
        cursor
      }, { additionalProperties: false }),
      response: { 200: RepositoryPageSchema }
    }
  }, async (request) => await listRepositories(deps, { ...read(request), ...request.query }))

  app.get('/images/:name', {
    schema: {
      params: Type.Object({ name: Type.String() }),
      querystring: Type.Object({ registry, limit, cursor }, { additionalProperties: false }),
      response: { 200: ImageTagPageSchema }
    }
  }, async (request) => await listImageTags(deps, { ...read(request), ...request.query, repository: request.params.name }))

  app.get('/images/*', {
    schema: {
      params: Type.Object({ '*': Type.String() }),
      querystring: Type.Object({ registry }, { additionalProperties: false }),
      response: { 200: TagDetailSchema }
    }
  }, async (request) => await getImageTag(deps, { ...read(request), ...request.query, ...splitImagePath(request.params['*']) }))
}
