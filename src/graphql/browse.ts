import type { MercuriusContext } from 'mercurius'
import { clientRequestId } from '../http/client-request-id.js'
import { getImageTag, listImageTags, listRepositories, openRepository, type BrowseDeps } from '../images/browse.js'
import type { RequestContext } from '../images/delete-image.js'

type Optional<T> = T | null | undefined
interface Page { first?: Optional<number>, after?: Optional<string> }
interface ImageArgs { name: string, registry?: Optional<string> }

const given = <T>(value: Optional<T>): T | undefined => value ?? undefined

function read (ctx: MercuriusContext): { identity: MercuriusContext['identity'], context: RequestContext, signal: AbortSignal } {
  const request = ctx.reply.request
  return { identity: ctx.identity, context: { requestId: request.id, ...clientRequestId(request), transport: 'graphql' }, signal: request.signal }
}

/** A REST page as a Relay connection: each edge's cursor continues after it, endCursor after the page. */
function connection<T> (page: { items: T[], cursors: string[], nextCursor?: string }): object {
  return {
    edges: page.items.map((node, index) => ({ cursor: page.cursors[index], node })),
    // A catalog page cut short by its request bound continues from where it stopped, which can be past its last edge.
    pageInfo: { hasNextPage: page.nextCursor !== undefined, endCursor: page.nextCursor ?? page.cursors.at(-1) ?? null }
  }
}

/** The read API's resolvers: the same use cases as the REST routes in src/http/browse.ts. */
export function browseResolvers (deps: BrowseDeps): { Query: Record<string, unknown>, Image: Record<string, unknown> } {
  return {
    Query: {
      repositories: async (_root: unknown, args: Page & { registry?: Optional<string>, prefix?: Optional<string> }, ctx: MercuriusContext) =>
        connection(await listRepositories(deps, {
          ...read(ctx), registry: given(args.registry), prefix: given(args.prefix), limit: given(args.first), cursor: given(args.after)
        })),
      // Authorized here, so a caller who may not read the repository is refused (and audited) even without `tags`.
      image: async (_root: unknown, args: ImageArgs, ctx: MercuriusContext) =>
        await openRepository(deps, { ...read(ctx), repository: args.name, registry: given(args.registry) }),
      tag: async (_root: unknown, args: ImageArgs & { tag: string }, ctx: MercuriusContext) =>
        await getImageTag(deps, { ...read(ctx), repository: args.name, tag: args.tag, registry: given(args.registry) })
    },
    Image: {
      tags: async (image: { registry: string, name: string }, args: Page, ctx: MercuriusContext) =>
        connection(await listImageTags(deps, {
          ...read(ctx), repository: image.name, registry: image.registry, limit: given(args.first), cursor: given(args.after)
        }))
    }
  }
}
