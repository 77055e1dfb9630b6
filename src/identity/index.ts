/**
 * Who is calling: authentication of API keys (stored as hashes, compared in constant time) and JWT access tokens
 * from a trusted OIDC issuer, done once per request at the root (src/http/identity.ts) for every route.
 */
export { API_KEY_PREFIX, findApiKey, generateApiKey, sha256Hex } from './api-key.js'
export { createAuthenticator, type Authenticator, type AuthenticatorOptions } from './authenticator.js'
export { readCredentials, type CallerCredentials, type Presented } from './credentials.js'
export { JwtVerifier, type JwksOptions, type KeySourceLogger } from './jwt.js'
export { REALM, unauthenticated } from './unauthenticated.js'
export { whoAmI, MeSchema, type Me, type WhoAmI } from './who-am-i.js'
