import { readFileSync } from 'node:fs'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import mercurius, { type IResolvers, type MercuriusContext } from 'mercurius'
import { deleteImage, type DeleteImageDeps } from '../images/delete-image.js'
import type { WhoAmI } from '../identity/who-am-i.js'
import type { Identity } from '../policy/types.js'
import { graphqlErrorFormatter } from './errors.js'

const schema = readFileSync(new URL('../../schema/schema.graphql', import.meta.url), 'utf8')

declare module 'mercurius' {
  interface MercuriusContext {
    identity: Identity
  }
}

interface DeleteImageArgs { name: string, tag: string, registry?: string | null, dryRun?: boolean | null, force?: boolean | null }

export interface GraphQLOptions {
  deleteImage: DeleteImageDeps
  whoAmI: WhoAmI
  graphiql: boolean
}

export async function registerGraphQL (app: FastifyInstance, options: GraphQLOptions): Promise<void> {
  const resolvers: IResolvers = {
    Query: {
      me: (_root: unknown, _args: unknown, context: MercuriusContext) => options.whoAmI(context.identity)
    },
    Mutation: {
      deleteImage: async (_root: unknown, args: DeleteImageArgs, context: MercuriusContext) => await deleteImage(options.deleteImage, {
        identity: context.identity,
        name: args.name,
        tag: args.tag,
        registry: args.registry ?? undefined,
        dryRun: args.dryRun ?? false,
        force: args.force ?? false
      })
    }
  }
  await app.register(mercurius, {
    schema,
    resolvers,
    graphiql: options.graphiql,
    path: '/graphql',
    context: (request: FastifyRequest) => ({ identity: request.identity }),
    errorFormatter: graphqlErrorFormatter as never,
    // Failures before execution (authentication, malformed documents) go to the app's one error handler.
    errorHandler: false
  })
}
