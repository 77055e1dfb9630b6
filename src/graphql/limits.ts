import { GraphQLError, NoSchemaIntrospectionCustomRule, type ValidationContext, type ASTVisitor, type ValidationRule } from 'graphql'

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

export function validationRules (options: { maxFields: number, introspection: boolean }): ValidationRule[] {
  return [maxFieldsRule(options.maxFields), ...(options.introspection ? [] : [NoSchemaIntrospectionCustomRule])]
}
