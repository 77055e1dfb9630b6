import {
  GraphQLError, Kind, NoSchemaIntrospectionCustomRule,
  type ASTVisitor, type OperationDefinitionNode, type SelectionSetNode, type FieldNode, type ValidationContext, type ValidationRule
} from 'graphql'

/**
 * Caps how many fields one document may select (aliases included), so one request cannot ask for a response
 * of unbounded size; depth alone does not stop a wide query made of thousands of aliases.
 */
export function maxFieldsRule (maxFields: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => {
    let fields = 0
    return {
      Field (node) {
        fields++
        if (fields === maxFields + 1) {
          context.reportError(new GraphQLError(`the document selects more than ${maxFields} fields; split it into smaller queries.`, { nodes: [node] }))
        }
      }
    }
  }
}

/**
 * The fields an operation runs at its root, with fragments (named and inline) expanded: what counting the
 * written `Field` nodes misses, since one spread can stand for many fields.
 */
export function rootFields (context: ValidationContext, operation: OperationDefinitionNode): FieldNode[] {
  const fields: FieldNode[] = []
  const expanding = new Set<string>()
  const walk = (selectionSet: SelectionSetNode): void => {
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) fields.push(selection)
      else if (selection.kind === Kind.INLINE_FRAGMENT) walk(selection.selectionSet)
      else {
        const fragment = context.getFragment(selection.name.value)
        // A cycle or an unknown fragment is reported by graphql's own rules; counting stops there.
        if (fragment == null || expanding.has(fragment.name.value)) continue
        expanding.add(fragment.name.value)
        walk(fragment.selectionSet)
        expanding.delete(fragment.name.value)
      }
    }
  }
  walk(operation.selectionSet)
  return fields
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

export function validationRules (options: { maxFields: number, maxMutationsPerDocument: number, introspection: boolean }): ValidationRule[] {
  return [
    maxFieldsRule(options.maxFields),
    maxMutationsRule(options.maxMutationsPerDocument),
    ...(options.introspection ? [] : [NoSchemaIntrospectionCustomRule])
  ]
}
