// Sign-in with an external OpenID provider, in a real Chromium: the certified npm
// `oidc-provider` runs here on a free port (its own login and consent pages), Gatehouse is
// configured with it as `external_providers.oidcp`, and a small app page loads the unmodified
// supabase-js (its UMD build) and calls signInWithOAuth. The browser goes app → Gatehouse
// /authorize → the provider's login and consent → Gatehouse /callback → back to the app,
// which reads the session: the implicit flow (session in the fragment), flowType 'pkce'
// (exchangeCodeForSession), then linkIdentity, getUserIdentities and unlinkIdentity.
//
// Run: cd tests/clients/browser && npm ci && node --test oidc.test.mjs
// Env: as dashboard.test.mjs (GATEHOUSE_BIN, CHROMIUM, …).

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import http from 'node:http'
import { createRequire } from 'node:module'
import path from 'node:path'

import { alnum, freePort, startGatehouse, stopGatehouse } from '../harness.mjs'

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const PASSWORD = 'correct-horse-42'
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the browser OIDC test is skipped (apt-get install chromium)`)
}
const skip = !haveChromium && process.env.CI !== 'true'
const require = createRequire(import.meta.url)
const SUPABASE_UMD = path.join(path.dirname(require.resolve('@supabase/supabase-js')), 'umd', 'supabase.js')

// The app page: supabase-js on window.sb, with the flow type of `?flow=`.
const APP_PAGE = (ghUrl, key) => `<!doctype html>
<html><head><meta charset="utf-8"><title>app</title><script src="/supabase.js"></script></head>
<body><p id="status">loading</p><script>
  const flow = new URLSearchParams(location.search).get('flow') || 'implicit'
  window.sb = supabase.createClient(${JSON.stringify(ghUrl)}, ${JSON.stringify(key)}, {
    auth: { flowType: flow, detectSessionInUrl: flow === 'implicit', persistSession: true, autoRefreshToken: false },
  })
  window.ready = window.sb.auth.getSession().then(() => { document.getElementById('status').textContent = 'ready' })
</script></body></html>`

describe('sign-in with an OpenID provider (Chromium, oidc-provider)', { skip }, () => {
  let gh, browser, op, opServer, app, appUrl

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    const { default: Provider } = await import('oidc-provider')
    const opPort = await freePort()
    const issuer = `http://127.0.0.1:${opPort}`
    const appPort = await freePort()
    appUrl = `http://127.0.0.1:${appPort}`
    const secret = `op-secret-${alnum(24)}`
    gh = await startGatehouse({
      tmpPrefix: 'gatehouse-oidc-',
      env: {
        GATEHOUSE_AUTOCONFIRM: 'true',
        GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
        GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
        GATEHOUSE_REDIRECT_ALLOWLIST: `["${appUrl}/**"]`,
        GATEHOUSE_EXTERNAL_PROVIDERS: `{oidcp={kind="oidc",issuer="${issuer}",client_id="gatehouse",client_secret="${secret}"}}`,
      },
    })
    // The provider knows Gatehouse's callback, so it starts once Gatehouse has its port.
    op = new Provider(issuer, {
      clients: [
        {
          client_id: 'gatehouse',
          client_secret: secret,
          redirect_uris: [`${gh.url}/auth/v1/callback`],
          grant_types: ['authorization_code'],
          response_types: ['code'],
        },
      ],
      // Any login is an account whose address is the login, verified.
      findAccount: async (_ctx, id) => ({
        accountId: id,
        claims: async () => ({ sub: id, email: id, email_verified: true, name: `Person ${id}` }),
      }),
      claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
      cookies: { keys: [alnum(32)] },
    })
    opServer = op.listen(opPort)
    await new Promise((r) => opServer.once('listening', r))
    const page = APP_PAGE(gh.url, gh.key)
    const umd = readFileSync(SUPABASE_UMD)
    app = http.createServer((req, res) => {
      if (req.url.startsWith('/supabase.js')) {
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(umd)
      } else if (req.url.startsWith('/app.html')) {
        res.writeHead(200, { 'content-type': 'text/html' }).end(page)
      } else {
        res.writeHead(404).end()
      }
    })
    await new Promise((r) => app.listen(appPort, '127.0.0.1', r))
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await new Promise((r) => (app ? app.close(r) : r()))
    await new Promise((r) => (opServer ? opServer.close(r) : r()))
    await stopGatehouse(gh)
  })

  // The provider's own pages: log in as `login` (any password), then consent.
  async function throughProvider(page, login) {
    await page.waitForURL((u) => u.href.startsWith(op.issuer))
    await page.locator('input[name=login]').fill(login)
    await page.locator('input[name=password]').fill('anything')
    await page.getByRole('button', { name: 'Sign-in' }).click()
    await page.getByRole('button', { name: 'Continue' }).click()
  }

  async function openApp(flow) {
    const context = await browser.newContext()
    const page = await context.newPage()
    const errors = []
    page.on('pageerror', (e) => errors.push(String(e)))
    await page.goto(`${appUrl}/app.html?flow=${flow}`)
    await page.evaluate(() => window.ready)
    return { page, errors, context }
  }

  test('signInWithOAuth (implicit): the session lands in the app', async () => {
    const email = `ada-${randomUUID()}@example.com`
    const { page, errors, context } = await openApp('implicit')
    const redirectTo = `${appUrl}/app.html?flow=implicit`
    await page.evaluate((redirectTo) => window.sb.auth.signInWithOAuth({ provider: 'oidcp', options: { redirectTo } }), redirectTo)
    await throughProvider(page, email)
    await page.waitForURL((u) => u.href.startsWith(`${appUrl}/app.html`))
    await page.evaluate(() => window.ready)
    const session = await page.evaluate(async () => (await window.sb.auth.getSession()).data.session)
    assert.ok(session, 'a session was read from the URL')
    assert.equal(session.user.email, email)
    assert.equal(session.provider_token ? 'yes' : 'no', 'yes', 'the provider token is handed on')
    const user = await page.evaluate(async () => (await window.sb.auth.getUser()).data.user)
    assert.deepEqual(user.identities.map((i) => i.provider), ['oidcp'])
    assert.equal(user.identities[0].id, email, "the identity is the provider's sub")
    const amr = JSON.parse(Buffer.from(session.access_token.split('.')[1], 'base64url').toString())
    assert.equal(amr.amr[0].method, 'oauth')
    assert.deepEqual(errors, [])
    await context.close()
  })

  test("flowType 'pkce': the app exchanges the code for the session", async () => {
    const email = `bea-${randomUUID()}@example.com`
    const { page, errors, context } = await openApp('pkce')
    const redirectTo = `${appUrl}/app.html?flow=pkce`
    await page.evaluate((redirectTo) => window.sb.auth.signInWithOAuth({ provider: 'oidcp', options: { redirectTo } }), redirectTo)
    await throughProvider(page, email)
    await page.waitForURL((u) => u.href.startsWith(`${appUrl}/app.html`) && u.searchParams.has('code'))
    assert.ok(!page.url().includes('access_token'), 'no token in the URL of a PKCE flow')
    await page.evaluate(() => window.ready)
    const result = await page.evaluate(async () => {
      const code = new URL(location.href).searchParams.get('code')
      const storageKey = Object.keys(localStorage).find((k) => k.endsWith('-code-verifier'))
      const verifier = JSON.parse(localStorage.getItem(storageKey))
      const { data, error } = await window.sb.auth.exchangeCodeForSession(code)
      return { code, verifier, email: data?.user?.email, error: error?.message }
    })
    assert.equal(result.error, undefined)
    assert.equal(result.email, email)
    // The same code and verifier again, straight to the server: the code was used up.
    const again = await fetch(`${gh.url}/auth/v1/token?grant_type=pkce`, {
      method: 'POST',
      headers: { apikey: gh.key, 'content-type': 'application/json' },
      body: JSON.stringify({ auth_code: result.code, code_verifier: result.verifier }),
    })
    assert.equal(again.status, 404)
    assert.equal((await again.json()).error_code, 'flow_state_not_found')
    assert.deepEqual(errors, [])
    await context.close()
  })

  test('linkIdentity, getUserIdentities and unlinkIdentity', async () => {
    const email = `cy-${randomUUID()}@example.com`
    const { page, errors, context } = await openApp('implicit')
    const signedIn = await page.evaluate(
      async ({ email, password }) => {
        await window.sb.auth.signUp({ email, password })
        const { data, error } = await window.sb.auth.signInWithPassword({ email, password })
        return { id: data?.user?.id, error: error?.message }
      },
      { email, password: PASSWORD },
    )
    assert.equal(signedIn.error, undefined)
    const redirectTo = `${appUrl}/app.html?flow=implicit`
    // The provider account has another address: a manual link needs none in common.
    const login = `cy-at-provider-${randomUUID()}@example.org`
    await page.evaluate((redirectTo) => window.sb.auth.linkIdentity({ provider: 'oidcp', options: { redirectTo } }), redirectTo)
    await throughProvider(page, login)
    await page.waitForURL((u) => u.href.startsWith(`${appUrl}/app.html`))
    await page.evaluate(() => window.ready)
    const linked = await page.evaluate(async () => {
      const { data, error } = await window.sb.auth.getUserIdentities()
      const user = (await window.sb.auth.getUser()).data.user
      return { identities: data?.identities, error: error?.message, id: user?.id }
    })
    assert.equal(linked.error, undefined)
    assert.equal(linked.id, signedIn.id, 'still the same user')
    assert.deepEqual(linked.identities.map((i) => i.provider).sort(), ['email', 'oidcp'])
    const unlinked = await page.evaluate(async () => {
      const { data } = await window.sb.auth.getUserIdentities()
      const oidc = data.identities.find((i) => i.provider === 'oidcp')
      const { error } = await window.sb.auth.unlinkIdentity(oidc)
      const after = await window.sb.auth.getUserIdentities()
      return { error: error?.message, providers: after.data.identities.map((i) => i.provider) }
    })
    assert.equal(unlinked.error, undefined)
    assert.deepEqual(unlinked.providers, ['email'])
    // The last identity stays.
    const last = await page.evaluate(async () => {
      const { data } = await window.sb.auth.getUserIdentities()
      const { error } = await window.sb.auth.unlinkIdentity(data.identities[0])
      return error?.code
    })
    assert.equal(last, 'single_identity_not_deletable')
    assert.deepEqual(errors, [])
    await context.close()
  })
})
