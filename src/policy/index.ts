export { decide, literalProtectedTags, repositoryDecider, rolesOf, subjectsOf } from './decide.js'
export { grantsAnywhere } from './scope.js'
export { compileGlob, GlobError, type Glob, type GlobKind } from './glob.js'
export { ASYMMETRIC_ALGORITHMS, DEFAULT_LEEWAY_SECONDS, loadPolicy } from './load.js'
export { PolicyError, type PolicyProblem } from './policy-error.js'
export {
  PolicyStore, type DirectoryWatcher, type PolicyLogger, type PolicyReload, type PolicyStoreEvents, type PolicyStoreOptions, type ReloadTrigger
} from './store.js'
export * from './types.js'
export { decideRepositoryRead } from './repository.js'
