// The dashboard (assets/dashboard, served at GET /dashboard) in a real Chromium, against a
// real `gatehouse serve` process.
//
// An owner signs in with the cookie session, creates an API key on the keys page, copies
// it from the clipboard, uses it from node (GET /v1/me with X-API-Key: 200), deletes it
// through the confirmation dialog and sees the same request fail with 401. A member sees
// the keys page without any key control, and the server refuses the member's create (403)
// anyway. The other pages are driven too: members and custom roles, a widget with its live
// preview, webhooks with a test event, the delivery log and a replay (against a local
// receiver), the usage charts and the audit log. The page carries its CSP and no CSP
// violation is reported.
//
// Run: cd tests/clients/browser && npm ci && node --test dashboard.test.mjs
// Env: as widget.test.mjs: GATEHOUSE_BIN, GATEHOUSE_CLIENT_TEST_DATABASE_URL,
//      GATEHOUSE_CLIENT_TEST_SHOW_SERVER_LOG=1, CHROMIUM. Without Chromium the suite is
//      skipped with a notice, except with CI=true, where that is a failure.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, statSync } from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { api, sleep, startGatehouse, stopGatehouse } from '../harness.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const SHOTS = path.join(HERE, 'screenshots')
const PASSWORD = 'correct-horse-42'
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the browser dashboard tests are skipped (apt-get install chromium)`)
}
// In CI a missing browser is a failure, not a skip: the suite runs and `before` throws.
const skip = !haveChromium && process.env.CI !== 'true'

// This suite's server settings, on top of what the harness sets (GATEHOUSE_PUBLIC_URL, set
// by the harness, is the page's origin: the CSRF check compares every cookie request's
// Origin with it).
const GATEHOUSE_ENV = {
  GATEHOUSE_AUTOCONFIRM: 'true',
  GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
  GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
  // The webhook receiver of this suite listens on 127.0.0.1.
  GATEHOUSE_WEBHOOKS_ALLOW_PRIVATE: 'true',
  GATEHOUSE_WEBHOOKS_POLL_INTERVAL_MS: '200',
  // The usage page reads counters written behind: write them every second.
  GATEHOUSE_WRITE_BEHIND_SECONDS: '1',
}

// A webhook endpoint that accepts everything and remembers what it got.
function startReceiver() {
  return new Promise((resolve, reject) => {
    const got = []
    const srv = http.createServer((req, res) => {
      const chunks = []
      req.on('data', (c) => chunks.push(c))
      req.on('end', () => {
        got.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
        res.writeHead(200, { 'content-type': 'text/plain' }).end('thanks')
      })
    })
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => resolve({ srv, got, url: `http://127.0.0.1:${srv.address().port}/hooks` }))
  })
}

// Records console messages, thrown errors and CSP violations (from a listener installed
// before the page's own script runs).
function watch(page) {
  const seen = { console: [], errors: [] }
  page.on('console', (m) => seen.console.push({ type: m.type(), text: m.text() }))
  page.on('pageerror', (e) => seen.errors.push(String(e)))
  return seen
}
const cspWatcher = () => {
  window.__cspViolations = []
  document.addEventListener('securitypolicyviolation', (e) =>
    window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`))
}
async function assertClean(page, seen, expectedStatuses = [401]) {
  assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], 'no CSP violations')
  const csp = seen.console.filter((m) => /Content Security Policy|Refused to/i.test(m.text))
  assert.deepEqual(csp, [], 'no CSP messages in the console')
  // Chromium reports refused requests as console errors: the 401 of the first GET /v1/me
  // before sign-in is expected (and the member's deliberate 403).
  const expected = new RegExp(`^Failed to load resource: the server responded with a status of (${expectedStatuses.join('|')}) `)
  const errors = seen.console.filter((m) => m.type === 'error' && !expected.test(m.text))
  assert.deepEqual(errors, [], 'no console errors')
  assert.deepEqual(seen.errors, [], 'no errors thrown')
}

// The dashboard's sign-in form.
async function signIn(page, url, email) {
  const res = await page.goto(`${url}/dashboard#/keys`)
  assert.equal(res.status(), 200)
  await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
  await page.getByLabel('Email').fill(email)
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
  return res
}

describe('dashboard in Chromium', { skip }, () => {
  let gh, browser, org, owner, ownerEmail, memberEmail, thirdEmail, third

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    gh = await startGatehouse({ tmpPrefix: 'gatehouse-dashboard-', env: GATEHOUSE_ENV })

    // The owner and a member, made through the API before the browser starts.
    const signUp = async (email) => {
      await api('POST', `${gh.url}/auth/v1/signup`, { body: { email, password: PASSWORD }, headers: { apikey: gh.key } })
      const tok = await api('POST', `${gh.url}/auth/v1/token?grant_type=password`, {
        body: { email, password: PASSWORD },
        headers: { apikey: gh.key },
      })
      return { authorization: `Bearer ${tok.access_token}` }
    }
    ownerEmail = `owner-${randomUUID()}@example.com`
    memberEmail = `member-${randomUUID()}@example.com`
    thirdEmail = `third-${randomUUID()}@example.com`
    owner = await signUp(ownerEmail)
    const member = await signUp(memberEmail)
    third = await signUp(thirdEmail)
    org = await api('POST', `${gh.url}/v1/orgs`, { body: { name: 'Acme Robotics' }, headers: owner, expect: 201 })
    // Members join by invitation: the owner invites, the member accepts.
    const inv = await api('POST', `${gh.url}/v1/orgs/${org.id}/invitations`, {
      body: { email: memberEmail, role: 'member' },
      headers: owner,
      expect: 201,
    })
    await api('POST', `${gh.url}/v1/invitations/${inv.id}/accept`, { headers: member })
    // A key every test may expect in the list (the tests do not depend on each other).
    await api('POST', `${gh.url}/v1/orgs/${org.id}/api-keys`, { body: { name: 'Shared key', scopes: ['chat:write'] }, headers: owner, expect: 201 })

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await stopGatehouse(gh)
  })

  test('the page and its files carry the CSP and the other security headers', async () => {
    for (const p of ['/dashboard', '/dashboard/', '/dashboard/app.js', '/dashboard/app.css']) {
      const res = await fetch(`${gh.url}${p}`)
      assert.equal(res.status, 200, p)
      assert.equal(res.headers.get('content-security-policy'), CSP, p)
      assert.equal(res.headers.get('x-frame-options'), 'DENY', p)
      assert.equal(res.headers.get('referrer-policy'), 'no-referrer', p)
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', p)
      await res.arrayBuffer()
    }
    const html = await fetch(`${gh.url}/dashboard`)
    assert.equal(html.headers.get('cache-control'), 'no-store')
    await html.arrayBuffer()
  })

  test('an owner creates a key, copies it, uses it, deletes it, and the key stops working', async () => {
    const context = await browser.newContext({
      viewport: { width: 1280, height: 860 },
      permissions: ['clipboard-read', 'clipboard-write'],
    })
    await context.addInitScript(cspWatcher)
    const page = await context.newPage()
    const seen = watch(page)
    try {
      const res = await signIn(page, gh.url, ownerEmail)
      assert.equal(res.headers()['content-security-policy'], CSP)
      assert.equal(res.headers()['x-frame-options'], 'DENY')

      // The organization switcher and the pages an owner may use.
      assert.match(await page.getByLabel('Organization').locator('option:checked').textContent(), /Acme Robotics \(owner\)/)
      const nav = page.getByRole('navigation', { name: 'Dashboard pages' })
      for (const name of ['API keys', 'Members', 'Widgets', 'Usage', 'Audit log']) {
        await nav.getByRole('link', { name }).waitFor()
      }
      await page.locator('tr', { hasText: 'Shared key' }).waitFor()

      // Scopes: what the owner holds, minus the two no key may carry.
      const scopes = await page.locator('fieldset', { hasText: 'Scopes' }).locator('input[type=checkbox]').evaluateAll((els) => els.map((e) => e.value))
      assert.ok(scopes.includes('chat:write') && scopes.includes('keys:read'), JSON.stringify(scopes))
      assert.ok(!scopes.includes('keys:write') && !scopes.includes('members:write'), JSON.stringify(scopes))

      mkdirSync(SHOTS, { recursive: true })
      const beforeShot = path.join(SHOTS, 'dashboard-keys-before.png')
      await page.screenshot({ path: beforeShot, fullPage: true })
      assert.ok(statSync(beforeShot).size > 1000)

      // The name is required, at most 50 characters, and its count is shown.
      const name = page.getByLabel('Name')
      assert.equal(await name.getAttribute('maxlength'), '50')
      await page.getByRole('button', { name: 'Generate API key' }).click()
      await page.getByRole('alert').filter({ hasText: 'Give the key a name.' }).waitFor()
      await name.fill('CI server')
      assert.equal(await page.locator('#key-name-count').textContent(), '9/50')
      await page.getByLabel('chat:write').check()
      await page.getByLabel('Expires after').selectOption({ label: '90 days' })

      // Generate: the button shows a spinner while the server works (slowed down here).
      await page.route('**/api-keys', async (route) => {
        if (route.request().method() === 'POST') await sleep(600)
        await route.continue()
      })
      const generate = page.getByRole('button', { name: 'Generate API key' })
      await generate.click()
      await generate.locator('.spinner').waitFor({ state: 'visible' })
      assert.equal(await generate.isDisabled(), true)
      const value = page.locator('.secret .secret-value')
      await value.waitFor({ timeout: 10_000 })
      await page.unroute('**/api-keys')
      const shown = (await value.textContent()).trim()
      assert.match(shown, /^gk_live_[A-Za-z0-9]{49}$/)
      await page.getByText('This key cannot be shown again after you leave this page.').waitFor()

      // Copy: the clipboard holds the key and the button says "Copied!" for 2 seconds.
      const copy = page.locator('.secret').getByRole('button', { name: /Copy/ })
      await copy.click()
      await page.locator('.secret').getByText('Copied!').waitFor()
      const key = await page.evaluate(() => navigator.clipboard.readText())
      assert.equal(key, shown)
      await page.locator('.secret .copy .label', { hasText: /^Copy$/ }).waitFor({ timeout: 4000 })

      // The list shows it by its start only.
      const row = page.locator('tr', { hasText: 'CI server' })
      await row.getByText(`${key.slice(0, 12)}••••`).waitFor()
      await row.getByText('active').waitFor()

      const afterShot = path.join(SHOTS, 'dashboard-keys-after.png')
      await page.screenshot({ path: afterShot, fullPage: true })
      assert.ok(statSync(afterShot).size > 1000)

      // The key works from node.
      const me = await api('GET', `${gh.url}/v1/me`, { headers: { 'x-api-key': key } })
      assert.equal(me.kind, 'api_key')
      assert.equal(me.org_id, org.id)
      assert.deepEqual(me.scopes, ['chat:write'])

      // No secret in the page's storage.
      const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }))
      assert.ok(!stored.includes(key.slice(8)), 'the key is not in web storage')

      // Delete asks first, in a real <dialog>; Cancel keeps the key.
      await row.getByRole('button', { name: 'Delete API key CI server' }).click()
      const dialog = page.getByRole('dialog', { name: 'Delete API key' })
      await dialog.waitFor()
      assert.equal(await dialog.evaluate((d) => d.tagName), 'DIALOG')
      // The dialog names the key, by name and start.
      await dialog.getByText(`Delete the key “CI server” (${key.slice(0, 12)}••••)?`).waitFor()
      await dialog.getByRole('button', { name: 'Cancel' }).click()
      await dialog.waitFor({ state: 'detached' })
      await api('GET', `${gh.url}/v1/me`, { headers: { 'x-api-key': key } })

      await row.getByRole('button', { name: 'Delete API key CI server' }).click()
      await dialog.getByRole('button', { name: 'Delete' }).click()
      // Revoked keys are hidden until asked for.
      await row.waitFor({ state: 'detached' })
      await page.getByLabel(/Show revoked keys \(1\)/).check()
      await row.getByText('revoked').waitFor()
      assert.equal(await row.getByRole('button', { name: /Delete|Roll/ }).count(), 0)

      // The same request now fails.
      const gone = await fetch(`${gh.url}/v1/me`, { headers: { 'x-api-key': key } })
      assert.equal(gone.status, 401)
      assert.equal((await gone.json()).error.details.reason, 'revoked')

      // Leaving the page drops the one-time box.
      await nav.getByRole('link', { name: 'Members' }).click()
      await page.getByRole('heading', { level: 1, name: 'Members' }).waitFor()
      assert.equal(await page.locator('.secret').count(), 0)
      await nav.getByRole('link', { name: 'API keys' }).click()
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      assert.equal(await page.locator('.secret').count(), 0)

      // Roll shows the new key the same way; the old one keeps working for the grace period.
      await name.fill('Rolled server')
      await page.getByRole('button', { name: 'Chat client' }).click()
      await generate.click()
      await value.waitFor()
      const first = (await value.textContent()).trim()
      await page.locator('tr', { hasText: 'Rolled server' }).getByRole('button', { name: 'Roll API key Rolled server' }).click()
      await page.getByRole('dialog', { name: 'Roll API key' }).getByRole('button', { name: 'Roll key' }).click()
      await page.getByRole('heading', { name: 'Your rolled API key' }).waitFor()
      const rolled = (await value.textContent()).trim()
      assert.notEqual(rolled, first)
      await api('GET', `${gh.url}/v1/me`, { headers: { 'x-api-key': rolled } })
      await api('GET', `${gh.url}/v1/me`, { headers: { 'x-api-key': first } })
      await page.locator('tr', { hasText: 'Rolled server' }).locator('.badge.rolled').waitFor()

      await assertClean(page, seen)

      // A 401 (the session is gone) sends the page back to sign-in.
      await context.clearCookies()
      await nav.getByRole('link', { name: 'Audit log' }).click()
      await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
      await page.getByText('Your session has ended. Please sign in again.').waitFor()
    } finally {
      await context.close()
    }
  })

  test('members and roles, a widget with its live preview, usage charts and the audit log', async () => {
    // Traffic for the charts: a key limited to 3 requests a minute, used 6 times (3 refused).
    const limited = await api('POST', `${gh.url}/v1/orgs/${org.id}/api-keys`, {
      body: { name: 'Chart key', rate_limits: [{ limit: 3, window_seconds: 60 }] },
      headers: owner,
      expect: 201,
    })
    const statuses = []
    for (let i = 0; i < 6; i++) {
      const r = await fetch(`${gh.url}/v1/me`, { headers: { 'x-api-key': limited.key } })
      await r.arrayBuffer()
      statuses.push(r.status)
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429, 429])
    // Key entries of this test's own for the audit log, whatever the other tests did.
    const audited = await api('POST', `${gh.url}/v1/orgs/${org.id}/api-keys`, {
      body: { name: 'Audited key' },
      headers: owner,
      expect: 201,
    })
    const rolled = await api('POST', `${gh.url}/v1/orgs/${org.id}/api-keys/${audited.id}/roll`, {
      body: { grace_seconds: 0 },
      headers: owner,
      expect: 201,
    })
    await api('DELETE', `${gh.url}/v1/orgs/${org.id}/api-keys/${rolled.id}`, { headers: owner })

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    await context.addInitScript(cspWatcher)
    const page = await context.newPage()
    const seen = watch(page)
    const nav = page.getByRole('navigation', { name: 'Dashboard pages' })
    try {
      await signIn(page, gh.url, ownerEmail)

      // Members: invite by email (pending until accepted), change the role, remove through
      // the dialog; a custom role.
      await nav.getByRole('link', { name: 'Members' }).click()
      await page.getByLabel('Email').fill(thirdEmail)
      await page.getByLabel('Role', { exact: true }).selectOption('member')
      await page.getByRole('button', { name: 'Send invitation' }).click()
      await page.getByRole('button', { name: `Revoke the invitation to ${thirdEmail}` }).waitFor()
      const [pending] = (await api('GET', `${gh.url}/v1/invitations`, { headers: third }))
      await api('POST', `${gh.url}/v1/invitations/${pending.id}/accept`, { headers: third })
      await nav.getByRole('link', { name: 'API keys' }).click()
      await nav.getByRole('link', { name: 'Members' }).click()
      const roleOf = page.getByLabel(`Role of ${thirdEmail}`)
      await roleOf.waitFor()
      assert.ok((await roleOf.locator('option').allTextContents()).includes('owner'), 'an owner may grant owner')
      await roleOf.selectOption('admin')
      await page.getByText(`${thirdEmail} is now admin.`).waitFor()
      await page.getByLabel('Name', { exact: true }).fill('coach')
      await page.getByLabel('threads:read').last().check()
      await page.getByRole('button', { name: 'Create role' }).click()
      await page.getByRole('rowheader', { name: /^coach/ }).waitFor()
      await page.getByRole('button', { name: `Remove ${thirdEmail}` }).click()
      await page.getByRole('dialog', { name: 'Remove member' }).getByRole('button', { name: 'Remove' }).click()
      await page.getByLabel(`Role of ${thirdEmail}`).waitFor({ state: 'detached' })
      await page.getByRole('button', { name: 'Delete role coach' }).click()
      await page.getByRole('dialog', { name: 'Delete role' }).getByRole('button', { name: 'Delete' }).click()
      await page.getByRole('rowheader', { name: /^coach/ }).waitFor({ state: 'detached' })
      await page.getByRole('button', { name: 'Delete organization' }).waitFor()

      // Widgets: the preview follows the form as it is typed.
      await nav.getByRole('link', { name: 'Widgets' }).click()
      await page.getByRole('button', { name: 'New widget' }).click()
      await page.getByLabel('Name').fill('Help desk')
      await page.getByLabel('Allowed origins').fill('https://shop.example.com\nhttp://localhost:3000')
      await page.getByLabel('Title').fill('Ask Acme')
      await page.getByLabel('Greeting').fill('Hello! What are you building?')
      await page.getByLabel('Position').selectOption('bottom-left')
      await page.getByLabel('Accent colour').fill('#0f766e')
      const preview = page.locator('.preview')
      assert.equal(await preview.locator('.pv-title').textContent(), 'Ask Acme')
      assert.equal(await preview.locator('.pv-msg').textContent(), 'Hello! What are you building?')
      assert.equal(await preview.evaluate((el) => el.classList.contains('left')), true)
      assert.equal(await preview.locator('.pv-launcher').evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(15, 118, 110)')
      await page.getByRole('button', { name: 'Create widget' }).click()
      const secret = page.locator('.secret .secret-value')
      await secret.waitFor()
      const first = (await secret.textContent()).trim()
      assert.match(first, /^wsec_/)
      await page.getByRole('heading', { name: 'Widget: Help desk' }).waitFor()
      // The widget requires a token: no placeholder tag, a plain sentence and a mint button.
      assert.equal(await page.locator('pre.code').count(), 0)
      assert.match(await page.locator('.token-needed').textContent(), /requires a widget token/)
      await page.getByRole('button', { name: 'Mint a token and show the tag' }).click()
      assert.match(await page.locator('.token-embed').textContent(), /data-key="[A-Za-z0-9_-]+"/)
      await page.getByRole('button', { name: 'Rotate secret' }).click()
      await page.getByRole('dialog', { name: 'Rotate widget secret' }).getByRole('button', { name: 'Rotate secret' }).click()
      await page.getByRole('heading', { name: 'New widget secret' }).waitFor()
      assert.notEqual((await secret.textContent()).trim(), first)
      assert.equal(await page.locator('.secret').count(), 1)
      // Saved settings come back from the server.
      await page.getByLabel('Title').fill('Ask Acme Robotics')
      await page.getByRole('button', { name: 'Save changes' }).click()
      await page.getByText('Saved.').waitFor()
      // Found by name: other tests may add widgets to this organization.
      const saved = (await api('GET', `${gh.url}/v1/orgs/${org.id}/widgets`, { headers: owner }))
        .find((w) => w.name === 'Help desk')
      assert.equal(saved.settings.title, 'Ask Acme Robotics')
      assert.equal(saved.settings.accent_color, '#0f766e')
      assert.deepEqual(saved.allowed_origins, ['https://shop.example.com', 'http://localhost:3000'])
      mkdirSync(SHOTS, { recursive: true })
      await page.screenshot({ path: path.join(SHOTS, 'dashboard-widgets.png'), fullPage: true })

      // Usage: counts are written behind (every 5 s); wait until the 429s are in.
      const deadline = Date.now() + 15_000
      for (;;) {
        const rows = await api('GET', `${gh.url}/v1/orgs/${org.id}/usage?granularity=day&key_id=${limited.id}`, { headers: owner })
        if (rows.some((r) => r.rate_limited === 3)) break
        assert.ok(Date.now() < deadline, `usage not written: ${JSON.stringify(rows)}`)
        await sleep(500)
      }
      await nav.getByRole('link', { name: 'Usage' }).click()
      await page.locator('svg.chart').nth(1).waitFor()
      assert.equal(await page.locator('svg.chart').count(), 2)
      assert.ok((await page.locator('svg.chart').first().locator('rect').count()) > 0, 'bars in the requests chart')
      assert.ok((await page.locator('svg.chart').nth(1).locator('rect').count()) > 0, 'bars in the 429 chart')
      const totals = page.locator('tr', { hasText: 'Chart key' })
      assert.deepEqual((await totals.locator('td').allTextContents()).slice(0, 3), ['3', '0', '3'])
      await page.screenshot({ path: path.join(SHOTS, 'dashboard-usage.png'), fullPage: true })

      // The audit log lists what happened, newest first.
      await nav.getByRole('link', { name: 'Audit log' }).click()
      await page.getByRole('cell', { name: 'widget.secret_rotated' }).first().waitFor()
      for (const action of ['api_key.created', 'api_key.revoked', 'api_key.rolled', 'member.added', 'role.created', 'widget.created']) {
        assert.ok((await page.getByRole('cell', { name: action, exact: true }).count()) > 0, action)
      }
      assert.equal(await page.getByRole('button', { name: 'Load older entries' }).isVisible(), false)
      // The filters ask the server: only the chosen action's entries remain, and the count says so.
      await page.locator('#audit-action').selectOption('api_key.rolled')
      await page.locator('p.hint[role=status]', { hasText: 'matching' }).waitFor()
      const actions = await page.locator('table.audit tbody td[data-label="Action"]').allTextContents()
      assert.ok(actions.length > 0 && actions.every((a) => a === 'api_key.rolled'), actions.join(', '))
      await page.locator('#audit-actor').selectOption('system')
      await page.getByRole('cell', { name: 'No entry matches these filters.' }).waitFor()

      await assertClean(page, seen)
    } finally {
      await context.close()
    }
  })

  test('webhooks: an endpoint, its secret once, a test event, the delivery log and a replay', async () => {
    const receiver = await startReceiver()
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    await context.addInitScript(cspWatcher)
    const page = await context.newPage()
    const seen = watch(page)
    try {
      await signIn(page, gh.url, ownerEmail)
      await page.getByRole('navigation', { name: 'Dashboard pages' }).getByRole('link', { name: 'Webhooks' }).click()
      await page.getByRole('button', { name: 'New endpoint' }).click()
      await page.getByLabel('Endpoint URL').fill(receiver.url)
      await page.getByLabel('Description').fill('Billing service')
      await page.getByLabel('Every event').uncheck()
      await page.getByLabel('webhook.test').check()
      await page.getByLabel('api_key.created').check()
      await page.getByRole('button', { name: 'Create endpoint' }).click()
      const secret = page.locator('.secret .secret-value')
      await secret.waitFor()
      assert.match((await secret.textContent()).trim(), /^whsec_/)
      const [endpoint] = await api('GET', `${gh.url}/v1/orgs/${org.id}/webhooks`, { headers: owner })
      assert.deepEqual(endpoint.event_types.sort(), ['api_key.created', 'webhook.test'])

      // A test event reaches the receiver and appears in the delivery log.
      await page.getByRole('button', { name: 'Send test event' }).click()
      const deadline = Date.now() + 15_000
      while (!receiver.got.some((r) => r.body.type === 'webhook.test')) {
        assert.ok(Date.now() < deadline, 'the test event never arrived')
        await sleep(100)
      }
      const first = receiver.got.find((r) => r.body.type === 'webhook.test')
      assert.match(first.headers['webhook-signature'], /^v1,/)
      const row = page.locator('table.deliveries tbody tr').first()
      for (let i = 0; !(await row.isVisible()) && i < 20; i++) {
        await page.getByRole('button', { name: 'Refresh' }).click()
        await sleep(300)
      }
      await row.getByText('succeeded', { exact: true }).waitFor()
      await row.getByRole('cell', { name: '200', exact: true }).waitFor()

      // Replay: delivered again with the same webhook-id.
      await row.getByRole('button', { name: /^Replay webhook\.test delivery/ }).click()
      while (receiver.got.filter((r) => r.body.type === 'webhook.test').length < 2) {
        assert.ok(Date.now() < deadline + 15_000, 'the replay never arrived')
        await sleep(100)
      }
      const [a, b] = receiver.got.filter((r) => r.body.type === 'webhook.test')
      assert.equal(a.headers['webhook-id'], b.headers['webhook-id'])
      await page.locator('table.deliveries tbody tr').nth(1).waitFor({ timeout: 10_000 })

      mkdirSync(SHOTS, { recursive: true })
      await page.screenshot({ path: path.join(SHOTS, 'dashboard-webhooks.png'), fullPage: true })
      await assertClean(page, seen)
    } finally {
      await context.close()
      receiver.srv.closeAllConnections()
      await new Promise((r) => receiver.srv.close(r))
    }
  })

  test('a member sees no key controls, and the server refuses a member\u2019s create anyway', async () => {
    // A key of this test's own to be listed, whatever the other tests did or did not create.
    await api('POST', `${gh.url}/v1/orgs/${org.id}/api-keys`, {
      body: { name: 'Listed for the member' },
      headers: owner,
      expect: 201,
    })
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } })
    await context.addInitScript(cspWatcher)
    const page = await context.newPage()
    const seen = watch(page)
    try {
      await signIn(page, gh.url, memberEmail)
      assert.match(await page.getByLabel('Organization').locator('option:checked').textContent(), /\(member\)/)
      // The list is there (members hold keys:read), the controls are not.
      await page.getByRole('heading', { name: 'Existing keys' }).waitFor()
      await page.locator('tr', { hasText: 'Listed for the member' }).waitFor()
      assert.equal(await page.getByLabel('Name').count(), 0)
      assert.equal(await page.getByRole('button', { name: 'Generate API key' }).count(), 0)
      assert.equal(await page.getByRole('button', { name: /Delete|Roll/ }).count(), 0)

      // The same create, sent by the member's own browser with its cookie and Origin: 403.
      const refused = await page.evaluate(async (orgId) => {
        const res = await fetch(`/v1/orgs/${orgId}/api-keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          referrerPolicy: 'same-origin',
          body: JSON.stringify({ name: 'sneaky' }),
        })
        return { status: res.status, body: await res.json() }
      }, org.id)
      assert.equal(refused.status, 403)
      assert.equal(refused.body.error.code, 'forbidden')
      assert.equal(refused.body.error.details.required, 'keys:write')

      // Readable on a phone: one column, nothing wider than the screen.
      await page.setViewportSize({ width: 390, height: 800 })
      const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
        .filter((el) => el.getBoundingClientRect().right > 391 && !el.closest('.table-wrap'))
        .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`))
      assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), `no sideways scrolling at 390 px: ${wide.join(', ')}`)
      mkdirSync(SHOTS, { recursive: true })
      await page.screenshot({ path: path.join(SHOTS, 'dashboard-keys-phone.png'), fullPage: true })
      await page.setViewportSize({ width: 1100, height: 760 })

      // Members: no add form, no role changes, no remove buttons.
      await page.getByRole('navigation', { name: 'Dashboard pages' }).getByRole('link', { name: 'Members' }).click()
      await page.getByRole('cell', { name: memberEmail }).or(page.getByRole('rowheader', { name: new RegExp(memberEmail) })).first().waitFor()
      assert.equal(await page.getByRole('button', { name: /Send invitation|Remove|Revoke|Create role/ }).count(), 0)
      assert.equal(await page.locator('main select').count(), 0)
      await assertClean(page, seen, [401, 403])

      // Sign out ends the cookie session.
      await page.getByRole('button', { name: 'Sign out' }).click()
      await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
      const cookies = await context.cookies()
      assert.equal(cookies.filter((c) => c.name === 'gatehouse_session').length, 0)
    } finally {
      await context.close()
    }
  })
})
