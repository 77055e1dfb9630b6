import {
  GraphQLError, Kind, NoSchemaIntrospectionCustomRule,
  type ASTVisitor, type OperationDefinitionNode, type SelectionSetNode, type FieldNode, type ValidationContext, type ValidationRule
} from 'graphql'

/**
 * The fields a selection set runs, with fragments (named and inline) expanded: what counting the written `Field`
 * nodes misses, since one spread can stand for many fields. Lazy, because fragments spreading fragments several
 * times stand for exponentially many fields: callers stop as soon as they have seen enough.
 */
export function * expandedFields (context: ValidationContext, selectionSet: SelectionSetNode, expanding = new Set<string>()): Generator<FieldNode> {
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) yield selection
    else if (selection.kind === Kind.INLINE_FRAGMENT) yield * expandedFields(context, selection.selectionSet, expanding)
    else {
      const fragment = context.getFragment(selection.name.value)
      // A cycle or an unknown fragment is reported by graphql's own rules; counting stops there.
      if (fragment == null || expanding.has(fragment.name.value)) continue
      expanding.add(fragment.name.value)
      yield * expandedFields(context, fragment.selectionSet, expanding)
      expanding.delete(fragment.name.value)
    }
  }
}

/** Far above any cap a rule applies: enough to judge, bounded however the fragments multiply. */
const MAX_ROOT_FIELDS = 10_000

/** The fields an operation runs at its root, fragments expanded (at most MAX_ROOT_FIELDS of them). */
export function rootFields (context: ValidationContext, operation: OperationDefinitionNode): FieldNode[] {
  const fields: FieldNode[] = []
  for (const field of expandedFields(context, operation.selectionSet)) {
    fields.push(field)
    if (fields.length === MAX_ROOT_FIELDS) break
  }
  return fields
}

/**
 * Caps how many fields one operation selects once fragments are expanded (aliases included), so one request
 * cannot ask for a response of unbounded size: depth alone does not stop thousands of aliases, and a fragment
 * spread many times counts every time. Counting stops at the cap, so nested spreads cannot make it expensive.
 */
export function maxFieldsRule (maxFields: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => ({
    OperationDefinition (node) {
      let fields = 0
      const count = (selectionSet: SelectionSetNode): boolean => {
        for (const field of expandedFields(context, selectionSet)) {
          fields++
          if (fields > maxFields) {
            context.reportError(new GraphQLError(
              `the document selects more than ${maxFields} fields once fragments are expanded; split it into smaller queries.`,
              { nodes: [field] }
            ))
            return false
          }
          if (field.selectionSet !== undefined && !count(field.selectionSet)) return false
        }
        return true
      }
      count(node.selectionSet)
    }
  })
}

/** Each `auditEvents` field reads up to a scan limit of rows: aliases would multiply that within one request. */
export function maxAuditEventsRule (maxAuditEvents: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => ({
    OperationDefinition (node) {
      if (node.operation !== 'query') return
      const fields = rootFields(context, node).filter(field => field.name.value === 'auditEvents')
      if (fields.length > maxAuditEvents) {
        context.reportError(new GraphQLError(
          `the document asks for auditEvents ${fields.length} times; at most ${maxAuditEvents} per request (graphql.maxAuditEventsPerDocument): follow pageInfo.endCursor instead.`,
          { nodes: fields.slice(maxAuditEvents) }))
      }
    }
  })
}

/**
 * Every mutation field is a deletion or a restore: aliases would otherwise run hundreds of them as one request,
 * past the caller's rate limit.
 */
export function maxMutationsRule (maxMutations: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => ({
    OperationDefinition (node) {
      if (node.operation !== 'mutation') return
      const fields = rootFields(context, node).filter(field => field.name.value !== '__typename')
      if (fields.length > maxMutations) {
        context.reportError(new GraphQLError(
          `the document runs ${fields.length} mutations; at most ${maxMutations} per request (graphql.maxMutationsPerDocument): send one request each.`,
          { nodes: fields.slice(maxMutations) }))
      }
    }
  })
}

/** Whether a field reads the registry: `repositories`, `tag` and `image` at the root, and every `tags` of an `image` after its first. */
const READS_AT_ROOT = new Set(['repositories', 'tag', 'image'])

/**
 * Each registry read fetches up to a page of manifests (or several catalog pages): aliases would multiply that
 * within one request, past the caller's rate limit. An `image` counts even without `tags`: it is authorized, and a
 * refused one writes an audit record, so aliased images would multiply those instead.
 */
export function maxRegistryReadsRule (maxReads: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => ({
    OperationDefinition (node) {
      if (node.operation !== 'query') return
      const reads: FieldNode[] = []
      for (const field of rootFields(context, node)) {
        if (READS_AT_ROOT.has(field.name.value)) reads.push(field)
        if (field.name.value !== 'image' || field.selectionSet === undefined) continue
        // Lazy: fragments spread inside `image` stop being expanded once the document is over the limit.
        let tagsSeen = 0
        for (const inner of expandedFields(context, field.selectionSet)) {
          if (inner.name.value === 'tags' && ++tagsSeen > 1) reads.push(inner)
          if (reads.length > maxReads) break
        }
      }
      if (reads.length > maxReads) {
        context.reportError(new GraphQLError(
          `the document reads the registry at least ${reads.length} times (repositories, tag, image); at most ${maxReads} per request (graphql.maxRegistryReadsPerDocument): send one request each.`,
          { nodes: reads.slice(maxReads) }))
      }
    }
  })
}

export interface DocumentLimits {
  maxFields: number
  maxMutationsPerDocument: number
  maxAuditEventsPerDocument: number
  maxRegistryReadsPerDocument: number
  introspection: boolean
}

export function validationRules (options: DocumentLimits): ValidationRule[] {
  return [
    maxFieldsRule(options.maxFields),
    maxMutationsRule(options.maxMutationsPerDocument),
    maxAuditEventsRule(options.maxAuditEventsPerDocument),
    maxRegistryReadsRule(options.maxRegistryReadsPerDocument),
    ...(options.introspection ? [] : [NoSchemaIntrospectionCustomRule])
  ]
}
