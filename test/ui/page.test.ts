import { mkdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import t from 'tap'
import type { Page } from 'playwright-core'
import { launchBrowser } from '../../testing/browser.js'
import { startOidcProvider } from '../../testing/oidc-provider.js'
import { freePort, HOST } from '../../testing/ports.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest } from '../../testing/seed.js'
import { buildUi } from '../../testing/ui-build.js'
import { headStatus } from '../fixtures/access.js'
import { pushLabelledImage } from '../fixtures/browse.js'
import { sha256Hex, startGateway } from '../fixtures/gateway.js'

// The whole page against real components: the registry, oidc-provider (its own login form), the gateway over
// HTTP, and Debian's chromium. Screenshots of each screen go to test-results/ui/ (git-ignored).
const SHOTS = new URL('../../test-results/ui/', import.meta.url).pathname
mkdirSync(SHOTS, { recursive: true })
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8')

const registry = await startRegistry()
t.teardown(registry.stop)
const target = { url: registry.url }
const NAME = 'team-a/app'
const v1 = await pushImage(target, NAME, ['v1', 'v1-alias'], 'oci')
await pushImage(target, NAME, ['latest'], 'oci-index')
await pushImage(target, NAME, ['pr-1'], 'schema2')
await pushImage(target, NAME, ['pr-2'], 'oci')
await pushImage(target, 'team-b/tool', ['v1'], 'oci')
const old = await pushLabelledImage(target, NAME, 'old', { team: 'a' })

const port = await freePort()
const base = `http://${HOST}:${port}`
const idp = await startOidcProvider({
  users: [
    { username: 'dana', password: 'dana-password', groups: ['developers'] },
    { username: 'olaf', password: 'olaf-password', groups: [] }
  ],
  clientId: 'rdg-ui',
  redirectUris: [`${base}/ui/`],
  audience: 'registry-gateway'
})
t.teardown(idp.close)

const OPS_KEY = 'rdg_ops-key-for-the-page-test-0000000001'
const POLICY = `
jwt:
  issuer: ${idp.issuer}
  audience: registry-gateway
  jwksUri: ${idp.jwksUri}
  leewaySeconds: 0
apiKeys:
  - { name: ops, sha256: ${sha256Hex(OPS_KEY)} }
roles:
  developer:
    - actions: [read, delete, restore, audit]
      repositories: ["team-a/**"]
bindings:
  - { role: developer, subjects: ["group:developers", "apikey:ops"] }
protectedTags:
  - tags: ["latest"]
`
const page = await buildUi()
t.teardown(page.close)
const gateway = await startGateway(t, {
  registries: { default: { url: registry.url, defaultMode: 'auto' } },
  policy: POLICY,
  uiRoot: page.root,
  config: { ui: { oidc: { clientId: 'rdg-ui' } } }
})
await gateway.app.listen({ host: HOST, port })

const browser = await launchBrowser()
t.teardown(browser.close)

/** Runs axe-core in the page (injected through the debugger, since the CSP rightly refuses an injected script tag). */
async function axe (tab: Page, screen: string): Promise<Array<{ id: string, impact: string, nodes: number }>> {
  await tab.evaluate(axeSource)
  const { violations, passes } = await tab.evaluate(async () => {
    type Rule = { id: string, impact: string, nodes: unknown[] }
    const result = await (window as unknown as { axe: { run: (context: Document) => Promise<{ violations: Rule[], passes: Rule[] }> } }).axe.run(document)
    return { violations: result.violations.map(violation => ({ id: violation.id, impact: violation.impact, nodes: violation.nodes.length })), passes: result.passes.length }
  })
  // A scan that checked nothing would pass too.
  if (passes < 10) throw new Error(`axe checked only ${passes} rules on ${screen}`)
  return violations.filter(violation => violation.impact === 'serious' || violation.impact === 'critical')
    .map(violation => ({ ...violation, screen }))
}

async function shot (tab: Page, name: string): Promise<void> {
  await tab.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true })
}

const tab = await browser.context.newPage()
const cspViolations: string[] = []
tab.on('console', message => { if (/Content Security Policy/i.test(message.text())) cspViolations.push(message.text()) })
const accessibility: Array<{ id: string, impact: string, nodes: number }> = []

t.test('sign in through the provider\'s login page, browse, filter', async t => {
  await tab.goto(`${base}/ui/`)
  await tab.getByRole('heading', { name: 'Registry delete gateway' }).waitFor()
  accessibility.push(...await axe(tab, 'sign-in'))
  await shot(tab, '1-sign-in')
  await tab.getByRole('button', { name: /^Sign in with/ }).click()
  await tab.waitForURL(`${idp.issuer}/interaction/**`)
  await tab.getByLabel('Username').fill('dana')
  await tab.getByLabel('Password').fill('dana-password')
  await tab.getByRole('button', { name: 'Sign in' }).click()
  await tab.waitForURL(`${base}/ui/`)
  t.equal(new URL(tab.url()).search, '', 'the code and state left the address bar')
  await tab.getByText('user:dana').waitFor()
  await tab.getByRole('button', { name: NAME }).waitFor()
  t.same(idp.logins, [{ username: 'dana', ok: true }])
  t.equal(await tab.getByRole('button', { name: 'team-b/tool' }).count(), 0, 'repositories the caller may not read are not listed')
  const stored = await tab.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }) + document.cookie)
  t.notMatch(await tab.evaluate(() => document.cookie), /ey/, 'no token in a cookie')
  t.match(stored, /access_token/, 'the token is in this tab\'s sessionStorage')
  accessibility.push(...await axe(tab, 'repositories'))
  await shot(tab, '2-repositories')

  await tab.getByLabel('Filter repositories').fill('zzz')
  await tab.getByText('0 of 1 repositories').waitFor()
  await tab.getByLabel('Filter repositories').fill('app')
  await tab.getByRole('button', { name: NAME }).click()
  await tab.getByRole('heading', { name: NAME }).waitFor()
  await tab.getByText('6 of 6 tags').waitFor()
  const row = (tag: string) => tab.getByRole('row').filter({ has: tab.getByRole('rowheader', { name: tag, exact: true }) })
  t.match(await row('v1').innerText(), /v1-alias/, 'co-tags shown')
  t.match(await row('latest').innerText(), /protected/, 'protected badge')
  t.match(await row('latest').innerText(), /linux\/amd64/, 'platforms of an index')
  t.match(await row('pr-1').innerText(), /sha256:[0-9a-f]{12}\b/, 'short digest')
  const days = Math.floor((Date.now() - Date.parse(old.created)) / 86_400_000)
  await row('old').getByText(`${days} d`).waitFor()
  t.match(await row('old').innerText(), new RegExp(`${days} d\\s+${(old.layersSize / 1000).toFixed(1)} KB`), 'age from the image config, and size')
  await tab.getByRole('button', { name: 'Age' }).click()
  t.equal(await tab.getByRole('rowheader').first().innerText(), 'old', 'sorted by age, the only dated image first')
  await tab.getByLabel('Filter tags').fill('pr-')
  await tab.getByText('2 of 6 tags').waitFor()
  await tab.getByLabel('Filter tags').fill('')
  await tab.getByRole('button', { name: 'Tag' }).click()
  t.equal(await tab.getByRole('rowheader').first().innerText(), 'latest', 'sorted by tag')
  await tab.getByRole('button', { name: 'Tag' }).click()
  t.equal(await tab.getByRole('rowheader').first().innerText(), 'v1-alias', 'sorted by tag, descending')
  await tab.getByRole('button', { name: 'Tag' }).click()
  accessibility.push(...await axe(tab, 'tags'))
  await shot(tab, '3-tags')
})

t.test('preview: a shared tag is untagged with its co-tag kept; a protected tag shows why and offers no Delete', async t => {
  await tab.getByLabel('Select v1', { exact: true }).check()
  await tab.getByLabel('Select latest').check()
  await tab.getByRole('button', { name: 'Preview deletion (2)' }).click()
  await tab.getByText('1 of 2 tags can be deleted').waitFor()
  const plans = await tab.locator('.plans').innerText()
  t.match(plans, /v1 untag: only this tag goes; co-tags kept: v1-alias/)
  t.match(plans, /latest Not allowed\. PROTECTED_TAG.*latest/)
  t.equal(await tab.getByRole('button', { name: /^Delete 1 tag/ }).count(), 1, 'Delete offers only the allowed tag')
  accessibility.push(...await axe(tab, 'preview'))
  await shot(tab, '4-preview')
  await tab.getByRole('button', { name: 'Back to tags' }).click()
  await tab.getByLabel('Select v1', { exact: true }).uncheck()
  await tab.getByLabel('Select latest').uncheck()
  await tab.getByLabel('Select latest').check()
  await tab.getByRole('button', { name: 'Preview deletion (1)' }).click()
  await tab.getByText('0 of 1 tags can be deleted').waitFor()
  t.equal(await tab.getByRole('button', { name: /^Delete/ }).count(), 0, 'only a protected tag: no Delete at all')
  await tab.getByRole('button', { name: 'Back to tags' }).click()
  await tab.getByLabel('Select latest').uncheck()
})

t.test('delete two tags after a confirmation naming them, undo one; the registry shows the result', async t => {
  await tab.getByLabel('Select pr-1').check()
  await tab.getByLabel('Select pr-2').check()
  await tab.getByRole('button', { name: 'Preview deletion (2)' }).click()
  await tab.getByRole('button', { name: 'Delete 2 tags…' }).click()
  const confirm = await tab.locator('#confirm-what').innerText()
  t.match(confirm, /This removes from team-a\/app: pr-1, pr-2\./)
  t.equal(await headStatus(registry.url, NAME, 'pr-1'), 200, 'nothing deleted before the confirmation')
  accessibility.push(...await axe(tab, 'confirm'))
  await shot(tab, '5-confirm')
  await tab.getByRole('button', { name: 'Yes, delete 2 tags' }).click()
  await tab.getByText('2 of 2 deleted').waitFor()
  t.equal(await headStatus(registry.url, NAME, 'pr-1'), 404)
  t.equal(await headStatus(registry.url, NAME, 'pr-2'), 404)
  accessibility.push(...await axe(tab, 'results'))
  await shot(tab, '6-results')
  await tab.getByRole('button', { name: 'Undo pr-1' }).click()
  await tab.getByText('restored: pr-1').waitFor()
  t.equal(await headStatus(registry.url, NAME, 'pr-1'), 200, 'pr-1 is back')
  t.equal(await headStatus(registry.url, NAME, 'pr-2'), 404, 'pr-2 stays deleted')
  t.equal(await headStatus(registry.url, NAME, 'v1'), 200, 'untouched tags stay')
  t.equal(await headStatus(registry.url, NAME, 'latest'), 200)
  await tab.getByRole('button', { name: 'Back to tags' }).click()
  await tab.getByText('5 of 5 tags').waitFor()
})

t.test('my activity lists the caller\'s records, with Undo on what is still restorable', async t => {
  await tab.getByRole('button', { name: 'My activity' }).click()
  await tab.getByRole('heading', { name: 'My activity' }).waitFor()
  await tab.getByRole('table').waitFor()
  const text = await tab.getByRole('table').innerText()
  t.match(text, /team-a\/app:pr-2/)
  t.match(text, /restored/)
  t.match(await tab.getByRole('row').filter({ hasText: 'deleted, undone' }).innerText(), /team-a\/app:pr-1/, 'the deletion undone from the results says so')
  t.equal(await tab.getByRole('button', { name: 'Undo team-a/app:pr-2' }).count(), 1, 'pr-2 can still be undone')
  t.equal(await tab.getByRole('button', { name: 'Undo team-a/app:pr-1' }).count(), 0, 'pr-1 was restored already')
  accessibility.push(...await axe(tab, 'activity'))
  await shot(tab, '7-activity')
  await tab.getByRole('button', { name: 'Undo team-a/app:pr-2' }).click()
  await tab.getByText('restored: pr-2').waitFor()
  t.equal(await headStatus(registry.url, NAME, 'pr-2'), 200, 'undone from the activity screen')
})

t.test('usable at 390 px and in dark mode; keyboard reaches the controls with a visible focus', async t => {
  await tab.getByRole('button', { name: 'Repositories' }).click()
  await tab.getByRole('button', { name: NAME }).click()
  await tab.getByText('6 of 6 tags').waitFor()
  await tab.setViewportSize({ width: 390, height: 844 })
  t.ok(await tab.evaluate(() => document.documentElement.scrollWidth <= 390), 'no page-wide horizontal scrolling at 390 px (the table scrolls in its box)')
  await shot(tab, '8-tags-390px')
  await tab.emulateMedia({ colorScheme: 'dark' })
  t.equal(await tab.evaluate(() => getComputedStyle(document.body).backgroundColor), 'rgb(13, 17, 23)', 'dark colours')
  accessibility.push(...await axe(tab, 'tags (dark, 390 px)'))
  await shot(tab, '9-tags-dark')
  await tab.emulateMedia({ colorScheme: 'light' })
  await tab.setViewportSize({ width: 1280, height: 800 })
  await tab.getByLabel('Filter tags').focus()
  await tab.keyboard.press('Tab')
  const focused = await tab.evaluate(() => {
    const element = document.activeElement as HTMLElement
    return { text: element.textContent, outline: getComputedStyle(element).outlineStyle }
  })
  t.match(focused, { outline: 'solid' }, 'the focused control shows an outline')
  await tab.keyboard.press('Space')
  await tab.keyboard.press('Tab')
  await tab.keyboard.press('Space')
  t.match(await tab.getByRole('status').innerText(), /6 selected/, 'select every tag from the keyboard')
  t.same(accessibility, [], 'no serious or critical axe violation on any screen')
  t.same(cspViolations, [], 'the page breaks none of its own CSP')
})

t.test('an expired session sends the user back to sign in', async t => {
  idp.setAccessTokenTtl(5)
  const fresh = await browser.context.newPage()
  await fresh.goto(`${base}/ui/`)
  await fresh.getByRole('button', { name: /^Sign in with/ }).click()
  // The provider remembers dana's session: no login form this time.
  await fresh.waitForURL(`${base}/ui/`)
  await fresh.getByRole('button', { name: NAME }).waitFor()
  // Until the token's own expiry (the policy allows no leeway), read from what the page keeps.
  const expiresAt = await fresh.evaluate(() => {
    const key = Object.keys(sessionStorage).find(name => name.startsWith('oidc.user')) as string
    return (JSON.parse(sessionStorage.getItem(key) as string) as { expires_at: number }).expires_at
  })
  t.ok(expiresAt * 1000 - Date.now() <= 5000, 'a short-lived token')
  await new Promise(resolve => setTimeout(resolve, Math.max(0, expiresAt * 1000 - Date.now()) + 1100))
  await fresh.getByRole('button', { name: 'My activity' }).click()
  await fresh.getByRole('heading', { name: 'Sign in' }).waitFor()
  t.match(await fresh.getByRole('alert').innerText(), /Signed out: the token has expired/)
  t.equal(await fresh.evaluate(() => Object.keys(sessionStorage).some(key => key.startsWith('oidc.user'))), false, 'the token is gone from the tab')
  await fresh.reload()
  await fresh.getByRole('heading', { name: 'Sign in' }).waitFor()
  await fresh.close()
  idp.setAccessTokenTtl(300)
})

t.test('signing out ends the session at the identity provider too', async t => {
  await tab.getByRole('button', { name: 'Sign out' }).click()
  await tab.waitForURL(`${idp.issuer}/session/end**`)
  await tab.getByRole('button', { name: 'Yes, sign me out' }).click()
  await tab.waitForURL(`${base}/ui/`)
  await tab.getByRole('heading', { name: 'Sign in' }).waitFor()
  t.equal(await tab.evaluate(() => Object.keys(sessionStorage).some(key => key.startsWith('oidc.user'))), false, 'no token left in the tab')
  await tab.getByRole('button', { name: /^Sign in with/ }).click()
  await tab.waitForURL(`${idp.issuer}/interaction/**`)
  t.ok(await tab.getByLabel('Password').isVisible(), 'signing in again asks for the password')
})

t.test('an API key works the same way, and a wrong one sends back to sign in', async t => {
  const keyed = await browser.context.newPage()
  await keyed.goto(`${base}/ui/`)
  await keyed.getByLabel('API key', { exact: true }).fill('rdg_not-a-key-anybody-has-000000000000')
  await keyed.getByRole('button', { name: 'Use this key' }).click()
  await keyed.getByRole('heading', { name: 'Sign in' }).waitFor()
  t.match(await keyed.getByRole('alert').innerText(), /Signed out: /)
  await keyed.getByLabel('API key', { exact: true }).fill(OPS_KEY)
  await keyed.getByRole('button', { name: 'Use this key' }).click()
  await keyed.getByText('apikey:ops').waitFor()
  await keyed.getByRole('button', { name: NAME }).click()
  await keyed.getByText('6 of 6 tags').waitFor()
  t.equal(await keyed.evaluate(() => document.querySelector('.boot')), null, 'the loading placeholder is gone')
  await keyed.getByRole('button', { name: 'Sign out' }).click()
  await keyed.getByRole('heading', { name: 'Sign in' }).waitFor()
  t.same(await keyed.evaluate(() => Object.keys(sessionStorage)), [], 'signing out leaves nothing in the tab')
  await keyed.close()
})

t.test('a plan that went stale between preview and delete is not executed, and the page says so', async t => {
  const keyed = await browser.context.newPage()
  await keyed.goto(`${base}/ui/`)
  await keyed.getByLabel('API key', { exact: true }).fill(OPS_KEY)
  await keyed.getByRole('button', { name: 'Use this key' }).click()
  await keyed.getByRole('button', { name: NAME }).click()
  await keyed.getByLabel('Select v1', { exact: true }).check()
  await keyed.getByRole('button', { name: 'Preview deletion (1)' }).click()
  await keyed.getByText(/v1 untag: only this tag goes; co-tags kept: v1-alias$/).waitFor()
  // Someone tags the same image meanwhile: the plan previewed no longer describes what the deletion would do.
  await tagManifest(target, NAME, 'v1-extra', v1.manifest, v1.mediaType)
  await keyed.getByRole('button', { name: 'Delete 1 tag…' }).click()
  await keyed.getByRole('button', { name: 'Yes, delete 1 tag' }).click()
  await keyed.getByText('0 of 1 deleted').waitFor()
  t.match(await keyed.locator('.results').innerText(), /v1 PLAN_STALE: /)
  t.equal(await headStatus(registry.url, NAME, 'v1'), 200, 'v1 is still there')
  await keyed.close()
})

t.test('a long table asks a screenful first, renders only the rows in view, and says how many there are', async t => {
  const MANY = 'team-a/many'
  const tags = Array.from({ length: 260 }, (_, index) => `t-${String(index).padStart(3, '0')}`)
  const image = await pushImage(target, MANY, [tags[0] as string], 'oci')
  for (const tag of tags.slice(1)) await tagManifest(target, MANY, tag, image.manifest, image.mediaType)
  const keyed = await browser.context.newPage()
  const pages: string[] = []
  keyed.on('request', request => {
    const url = new URL(request.url())
    if (url.pathname === `/images/${encodeURIComponent(MANY)}`) pages.push(url.searchParams.get('limit') as string)
  })
  await keyed.goto(`${base}/ui/`)
  await keyed.getByLabel('API key', { exact: true }).fill(OPS_KEY)
  await keyed.getByRole('button', { name: 'Use this key' }).click()
  await keyed.getByRole('button', { name: MANY }).click()
  await keyed.getByText('260 of 260 tags').waitFor()
  t.same(pages, ['25', '100', '100', '100'], 'a small first page, then full ones')
  const table = keyed.locator('table.tags')
  const row = (tag: string) => keyed.getByRole('row').filter({ has: keyed.getByRole('rowheader', { name: tag, exact: true }) })
  t.equal(await table.getAttribute('aria-rowcount'), '261', 'the table says how many rows it has, its header included')
  const rendered = await keyed.getByRole('rowheader').count()
  t.ok(rendered < 100, `only the rows in view and a few around them are rendered (${rendered})`)
  t.equal(await row('t-000').getAttribute('aria-rowindex'), '2', 'each rendered row says where it sits')
  t.same(await axe(keyed, 'long table'), [], 'no serious or critical axe violation on a windowed table')
  await keyed.locator('.scroll').evaluate(box => { box.scrollTop = box.scrollHeight })
  await row('t-259').waitFor()
  t.equal(await row('t-259').getAttribute('aria-rowindex'), '261', 'scrolled to the end, the last row is there')
  t.equal(await row('t-000').count(), 0, 'rows far out of view are not rendered')
  await keyed.getByLabel('Select every tag shown').check()
  t.match(await keyed.getByRole('status').innerText(), /260 selected/, 'select every tag, rendered or not')
  await keyed.getByLabel('Filter tags').fill('t-25')
  await keyed.getByText('10 of 260 tags').waitFor()
  t.equal(await table.getAttribute('aria-rowcount'), null, 'a short table renders every row')
  t.equal(await keyed.getByRole('rowheader').count(), 10)
  t.same(cspViolations, [], 'the rows\' heights break none of the page\'s CSP')
  await keyed.close()
})
