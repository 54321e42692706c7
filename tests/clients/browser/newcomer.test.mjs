// A newcomer's first hour in the dashboard, in a real Chromium against a real `gatehouse
// serve` that sends mail (to a local SMTP sink), so sign-up asks for confirmation as it does
// in production:
// - sign-up from the dashboard, confirmed with the mailed code;
// - a wrong password shows its error in place, and the next attempt clears it;
// - forgot password: the recovery mail's code and a new password, then sign-in with it;
// - sign-in by an emailed code, and by the mail's link;
// - the key form's presets, scope descriptions, no-scope confirmation, and the one-time
//   box listing only what the new key can call; search and the "show revoked" toggle;
// - widget origins normalised before saving, and an empty list explained;
// - the members table at 390 px: cards, no sideways scrolling, the sole owner offered no
//   action that can only fail (screenshot: docs/dashboard-members-mobile.png).
// Every test makes its own people and organization: none depends on another.
//
// Run: cd tests/clients/browser && npm ci && node --test newcomer.test.mjs
// Env: as dashboard.test.mjs.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import path from 'node:path'

import { REPO, api, sleep, startGatehouse, stopGatehouse } from '../harness.mjs'
import { codeOf, linkOf, startSmtpSink } from './smtp-sink.mjs'

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const DOCS = path.join(REPO, 'docs')
const PASSWORD = 'correct-horse-42'

const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the browser newcomer tests are skipped (apt-get install chromium)`)
}
const skip = !haveChromium && process.env.CI !== 'true'

describe('a newcomer in the dashboard', { skip }, () => {
  let gh, browser, sink

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    sink = await startSmtpSink()
    gh = await startGatehouse({
      tmpPrefix: 'gatehouse-newcomer-',
      env: {
        GATEHOUSE_SMTP_URL: sink.url,
        GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
        GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
        GATEHOUSE_RATE_LIMIT_MAGIC_LINK: '1000/60s',
        GATEHOUSE_RATE_LIMIT_VERIFY: '1000/60s',
        GATEHOUSE_MAIL_MIN_INTERVAL_SECONDS: '0',
      },
    })
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await stopGatehouse(gh)
    await sink?.close()
  })

  const fresh = () => `new.${randomUUID().slice(0, 8)}@example.com`
  async function open(viewport = { width: 1200, height: 860 }) {
    const context = await browser.newContext({ viewport })
    const page = await context.newPage()
    const errors = []
    page.on('pageerror', (e) => errors.push(String(e)))
    await page.goto(`${gh.url}/dashboard`)
    await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
    return { context, page, errors }
  }
  // A confirmed person with an organization, made through the API (its mail confirmed with
  // the code), for the tests that start signed in.
  async function person(orgName = 'Acme Robotics') {
    const email = fresh()
    await api('POST', `${gh.url}/auth/v1/signup`, { body: { email, password: PASSWORD }, headers: { apikey: gh.key } })
    const code = codeOf(await sink.waitFor(email, /code/))
    const s = await api('POST', `${gh.url}/auth/v1/verify`, { body: { type: 'signup', email, token: code }, headers: { apikey: gh.key } })
    const auth = { authorization: `Bearer ${s.access_token}` }
    const org = await api('POST', `${gh.url}/v1/orgs`, { body: { name: orgName }, headers: auth, expect: 201 })
    return { email, auth, org }
  }
  async function signIn(page, email, password = PASSWORD) {
    await page.getByLabel('Email', { exact: true }).fill(email)
    await page.getByLabel('Password', { exact: true }).fill(password)
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()
  }

  test('a newcomer signs up from the dashboard and confirms the address with the mailed code', async () => {
    const { context, page, errors } = await open()
    try {
      const email = fresh()
      await page.getByRole('button', { name: 'Create an account' }).click()
      await page.getByRole('heading', { name: 'Create your Gatehouse account' }).waitFor()
      await page.getByLabel('Email', { exact: true }).fill(email)
      // A weak password is refused in place, with the server's reason.
      await page.getByLabel('Password', { exact: true }).fill('short')
      await page.getByRole('button', { name: 'Create account' }).click()
      await page.getByRole('alert').filter({ hasText: /Password/ }).waitFor()
      await page.getByLabel('Password', { exact: true }).fill(PASSWORD)
      await page.getByRole('button', { name: 'Create account' }).click()
      await page.getByText(`Confirm your address: we sent a mail to ${email}.`).waitFor()
      const mail = await sink.waitFor(email, /Confirm your email address/)
      // A wrong code says so; the right one signs in.
      await page.getByLabel('Code from the mail').fill('000000')
      await page.getByRole('button', { name: 'Confirm and sign in' }).click()
      await page.getByRole('alert').filter({ hasText: /expired|invalid/i }).waitFor()
      await page.getByLabel('Code from the mail').fill(codeOf(mail))
      await page.getByRole('button', { name: 'Confirm and sign in' }).click()
      await page.getByRole('heading', { level: 1, name: 'Welcome' }).waitFor()
      assert.equal(await page.locator('#account .email').textContent(), email)
      // The cookie session, not a token in the page, carries on: a reload stays signed in.
      await page.reload()
      await page.getByRole('heading', { level: 1, name: 'Welcome' }).waitFor()
      const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }))
      assert.ok(!stored.includes('eyJ'), 'no access token in web storage')
      assert.deepEqual(errors, [])
    } finally {
      await context.close()
    }
  })

  test('a wrong password shows its error in place, and the next attempt clears it', async () => {
    const { email } = await person()
    const { context, page } = await open()
    try {
      await signIn(page, email, 'not-the-password')
      const alert = page.getByRole('alert')
      await alert.filter({ hasText: 'Invalid email or password.' }).waitFor()
      assert.equal(await alert.count(), 1)
      // An empty field is explained too, and replaces the previous error.
      await page.getByLabel('Password', { exact: true }).fill('')
      await page.getByRole('button', { name: 'Sign in', exact: true }).click()
      await alert.filter({ hasText: /^Password: / }).waitFor()
      assert.equal(await page.getByText('Invalid email or password.').count(), 0)
      await signIn(page, email)
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      assert.equal(await page.getByRole('alert').filter({ hasText: /./ }).count(), 0)
    } finally {
      await context.close()
    }
  })

  test('forgot password: the recovery code and a new password sign the person in', async () => {
    const { email } = await person()
    const { context, page } = await open()
    try {
      await page.getByLabel('Email', { exact: true }).fill(email)
      await page.getByRole('button', { name: 'Forgot password?' }).click()
      await page.getByRole('heading', { name: 'Reset your password' }).waitFor()
      assert.equal(await page.getByLabel('Email', { exact: true }).inputValue(), email)
      await page.getByRole('button', { name: 'Email me a reset code' }).click()
      await page.getByText(`If ${email} has an account`).waitFor()
      const mail = await sink.waitFor(email, /Reset your password/)
      await page.getByLabel('Code from the mail').fill(codeOf(mail))
      await page.getByLabel('New password', { exact: true }).fill('a-brand-new-secret-77')
      await page.getByRole('button', { name: 'Set password and sign in' }).click()
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      await page.getByText('Your new password is set.').waitFor()
      // The old password is gone, the new one works.
      await page.getByRole('button', { name: 'Sign out' }).click()
      await signIn(page, email)
      await page.getByText('Invalid email or password.').waitFor()
      await signIn(page, email, 'a-brand-new-secret-77')
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
    } finally {
      await context.close()
    }
  })

  test('the recovery link opens the set-new-password page', async () => {
    const { email } = await person()
    const { context, page } = await open()
    try {
      await api('POST', `${gh.url}/auth/v1/recover?redirect_to=${encodeURIComponent(`${gh.url}/dashboard/`)}`, { body: { email }, headers: { apikey: gh.key } })
      const mail = await sink.waitFor(email, /Reset your password/)
      await page.goto(linkOf(mail))
      await page.getByRole('heading', { name: 'Choose a new password' }).waitFor()
      assert.ok(!page.url().includes('access_token'), 'the token leaves the address bar')
      await page.getByLabel('New password', { exact: true }).fill('linked-new-secret-88')
      await page.getByRole('button', { name: 'Set password and sign in' }).click()
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
    } finally {
      await context.close()
    }
  })

  test('sign-in by an emailed code, and by the same mail\u2019s link', async () => {
    const { email } = await person()
    const { context, page } = await open()
    try {
      await page.getByRole('button', { name: 'Email me a sign-in code' }).click()
      await page.getByRole('heading', { name: 'Sign in with an emailed code' }).waitFor()
      await page.getByLabel('Email', { exact: true }).fill(email)
      await page.getByRole('button', { name: 'Email me a code' }).click()
      await page.getByText(`If ${email} has an account`).waitFor()
      const mail = await sink.waitFor(email, /Follow this link to sign in/)
      await page.getByLabel('Code from the mail').fill(codeOf(mail))
      await page.getByRole('button', { name: 'Sign in', exact: true }).click()
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      assert.equal(await page.locator('#account .email').textContent(), email)
    } finally {
      await context.close()
    }
    // The link, in a browser with no session, signs in too.
    const other = await browser.newContext()
    try {
      const p2 = await other.newPage()
      const signInMails = () => sink.mails.filter((m) => m.to.includes(email) && /Follow this link to sign in/.test(m.text))
      const before = signInMails().length
      await api('POST', `${gh.url}/auth/v1/otp?redirect_to=${encodeURIComponent(`${gh.url}/dashboard/`)}`, { body: { email }, headers: { apikey: gh.key } })
      const deadline = Date.now() + 15_000
      while (signInMails().length === before) {
        assert.ok(Date.now() < deadline, 'no second sign-in mail')
        await sleep(100)
      }
      await p2.goto(linkOf(signInMails()[before].text))
      await p2.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      assert.ok(!p2.url().includes('access_token'), 'the token leaves the address bar')
    } finally {
      await other.close()
    }
  })

  test('key presets fill the scopes; the one-time box lists only what the key can call', async () => {
    const { email, auth, org } = await person()
    await api('POST', `${gh.url}/v1/orgs/${org.id}/api-keys`, { body: { name: 'Old batch job' }, headers: auth, expect: 201 })
    const { context, page } = await open()
    try {
      await signIn(page, email)
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      const checked = () => page.locator('.scopes input:checked').evaluateAll((els) => els.map((e) => e.value).sort())
      // Every scope has its one-line description.
      assert.match(await page.locator('#scope-keys-verify-text').textContent(), /POST \/v1\/keys\/verify/)
      await page.getByRole('button', { name: 'Chat client' }).click()
      assert.deepEqual(await checked(), ['chat:write', 'threads:read'])
      await page.getByRole('button', { name: 'Read-only analytics' }).click()
      assert.deepEqual(await checked(), ['analytics:read', 'export:read'])
      await page.getByRole('button', { name: 'Everything a key may have' }).click()
      const everything = await checked()
      assert.ok(everything.length >= 10 && !everything.includes('keys:write') && !everything.includes('members:write'), JSON.stringify(everything))
      await page.getByRole('button', { name: 'Key verifier' }).click()
      assert.deepEqual(await checked(), ['keys:verify'])
      await page.getByLabel('Name').fill('Verifier')
      await page.getByRole('button', { name: 'Generate API key' }).click()
      const box = page.locator('.secret')
      await box.waitFor()
      const routes = await box.locator('.key-routes li').allTextContents()
      assert.equal(routes.length, 2, JSON.stringify(routes))
      assert.match(routes[0], /GET http:\/\/127\.0\.0\.1:\d+\/v1\/me/)
      assert.match(routes[1], /POST .*\/v1\/keys\/verify/)
      assert.equal(await box.getByText('/v1/chat').count(), 0)
      // The verifier really can verify, and really cannot chat.
      const key = (await box.locator('.secret-value').textContent()).trim()
      const verdict = await api('POST', `${gh.url}/v1/keys/verify`, { body: { key }, headers: { 'x-api-key': key } })
      assert.equal(verdict.valid, true)

      // No scopes: asked first; Cancel creates nothing.
      await page.getByLabel('Name').fill('Bare')
      await page.getByRole('button', { name: 'Generate API key' }).click()
      const dialog = page.getByRole('dialog', { name: 'Create a key with no scopes?' })
      await dialog.getByRole('button', { name: 'Cancel' }).click()
      await dialog.waitFor({ state: 'detached' })
      assert.equal((await api('GET', `${gh.url}/v1/orgs/${org.id}/api-keys`, { headers: auth })).length, 2)
      await page.getByRole('button', { name: 'Generate API key' }).click()
      await dialog.getByRole('button', { name: 'Create without scopes' }).click()
      await page.locator('tr', { hasText: 'Bare' }).waitFor()
      const bareRoutes = await box.locator('.key-routes li').allTextContents()
      assert.equal(bareRoutes.length, 1, JSON.stringify(bareRoutes))

      // Search by name or start; revoked keys hidden until asked for.
      const search = page.getByLabel('Search keys')
      await search.fill('verif')
      await page.locator('tbody tr').filter({ hasText: 'Verifier' }).waitFor()
      assert.equal(await page.locator('tbody tr').count(), 1)
      await search.fill(key.slice(0, 12))
      assert.equal(await page.locator('tbody tr').count(), 1)
      await search.fill('')
      await page.locator('tr', { hasText: 'Old batch job' }).getByRole('button', { name: 'Delete API key Old batch job' }).click()
      await page.getByRole('dialog', { name: 'Delete API key' }).getByText('“Old batch job”').waitFor()
      await page.getByRole('dialog', { name: 'Delete API key' }).getByRole('button', { name: 'Delete' }).click()
      await page.locator('tr', { hasText: 'Old batch job' }).waitFor({ state: 'detached' })
      await page.getByLabel('Show revoked keys (1)').check()
      await page.locator('tr', { hasText: 'Old batch job' }).getByText('revoked').waitFor()
    } finally {
      await context.close()
    }
  })

  test('widget origins are normalised before saving, and an empty list is explained', async () => {
    const { email, auth, org } = await person()
    const { context, page } = await open()
    try {
      await signIn(page, email)
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      await page.getByRole('navigation', { name: 'Dashboard pages' }).getByRole('link', { name: 'Widgets' }).click()
      await page.getByRole('button', { name: 'New widget' }).click()
      await page.getByLabel('Name').fill('Shop help')
      // Empty: asked first.
      await page.getByRole('button', { name: 'Create widget' }).click()
      const dialog = page.getByRole('dialog', { name: 'Save with no allowed origins?' })
      await dialog.getByRole('button', { name: 'Cancel' }).click()
      assert.equal((await api('GET', `${gh.url}/v1/orgs/${org.id}/widgets`, { headers: auth })).length, 0)
      // Not an origin: explained, nothing saved.
      await page.getByLabel('Allowed origins').fill('shop.example')
      await page.getByRole('button', { name: 'Create widget' }).click()
      await page.getByRole('alert').filter({ hasText: 'write the scheme too, e.g. https://shop.example' }).waitFor()
      // A trailing slash, a path, upper case and a default port become origins.
      await page.getByLabel('Allowed origins').fill('https://shop.example/\nHTTPS://Blog.Example:443/posts/1?x=2\nhttp://localhost:3000')
      await page.getByRole('button', { name: 'Create widget' }).click()
      await page.getByRole('heading', { name: 'Widget: Shop help' }).waitFor()
      const [w] = await api('GET', `${gh.url}/v1/orgs/${org.id}/widgets`, { headers: auth })
      assert.deepEqual(w.allowed_origins, ['https://shop.example', 'https://blog.example', 'http://localhost:3000'])
      assert.equal(await page.getByLabel('Allowed origins').inputValue(), 'https://shop.example\nhttps://blog.example\nhttp://localhost:3000')
      await page.getByLabel('Allowed origins').fill('https://shop.example/cart')
      await page.getByRole('button', { name: 'Save changes' }).click()
      await page.getByText('Saved.').waitFor()
      // The explanation stays in the saved widget's form.
      await page.getByText('https://shop.example/cart became https://shop.example: an origin is the scheme, host and port only').waitFor()
      // A token is required by default: a complete tag comes with a minted token.
      await page.getByRole('button', { name: 'Mint a token and show the tag' }).click()
      assert.match(await page.locator('.token-embed').textContent(), /^<script src="http:\/\/127\.0\.0\.1:\d+\/widget\.js" data-key="[A-Za-z0-9_-]+"/)
      assert.equal(await page.getByText('WIDGET_TOKEN').count(), 0)
    } finally {
      await context.close()
    }
  })

  test('members at 390 px: cards without sideways scrolling; the sole owner is offered nothing that fails', async () => {
    const owner = await person('Mobile Co')
    // Two members who joined by invitation.
    const member = async (role) => {
      const m = await person('Elsewhere')
      const inv = await api('POST', `${gh.url}/v1/orgs/${owner.org.id}/invitations`, { body: { email: m.email, role }, headers: owner.auth, expect: 201 })
      await api('POST', `${gh.url}/v1/invitations/${inv.id}/accept`, { headers: m.auth })
      return m
    }
    const admin = await member('admin')
    await member('member')
    const { context, page } = await open({ width: 390, height: 844 })
    try {
      await signIn(page, owner.email)
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      await page.getByRole('navigation', { name: 'Dashboard pages' }).getByRole('link', { name: 'Members' }).click()
      await page.getByLabel(`Role of ${admin.email}`).waitFor()
      // The sole owner (oneself): no role selector, no Remove; the others have both.
      assert.equal(await page.getByLabel(`Role of ${owner.email}`).count(), 0)
      assert.equal(await page.getByRole('button', { name: `Remove ${owner.email}` }).count(), 0)
      await page.getByText('the only owner').waitFor()
      const remove = page.getByRole('button', { name: `Remove ${admin.email}` })
      const select = page.getByLabel(`Role of ${admin.email}`)
      for (const el of [remove, select]) {
        const box = await el.boundingBox()
        assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `inside the screen: ${JSON.stringify(box)}`)
      }
      const wide = await page.evaluate(() => [...document.querySelectorAll('main *')]
        .filter((el) => el.getBoundingClientRect().right > 391)
        .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`))
      assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), `no sideways scrolling at 390 px: ${wide.join(', ')}`)
      await page.screenshot({ path: path.join(DOCS, 'dashboard-members-mobile.png'), fullPage: true })
      // The controls work at this width.
      await select.selectOption('member')
      await page.getByText(`${admin.email} is now member.`).waitFor()
      await remove.click()
      await page.getByRole('dialog', { name: 'Remove member' }).getByRole('button', { name: 'Remove' }).click()
      await page.getByLabel(`Role of ${admin.email}`).waitFor({ state: 'detached' })

      // The keys' actions and the audit rows fit the screen too.
      await api('POST', `${gh.url}/v1/orgs/${owner.org.id}/api-keys`, { body: { name: 'Phone key', scopes: ['chat:write'] }, headers: owner.auth, expect: 201 })
      const nav = page.getByRole('navigation', { name: 'Dashboard pages' })
      const fits = async (what) => {
        const wide = await page.evaluate(() => [...document.querySelectorAll('main *')]
          .filter((el) => el.getBoundingClientRect().right > 391)
          .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`))
        assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), `${what}: no sideways scrolling at 390 px: ${wide.join(', ')}`)
      }
      await nav.getByRole('link', { name: 'API keys' }).click()
      for (const name of ['Roll API key Phone key', 'Delete API key Phone key']) {
        const box = await page.getByRole('button', { name }).boundingBox()
        assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `${name} inside the screen: ${JSON.stringify(box)}`)
      }
      await fits('keys')
      await nav.getByRole('link', { name: 'Audit log' }).click()
      const row = page.locator('tbody tr', { hasText: 'member.removed' }).first()
      await row.waitFor()
      const box = await row.boundingBox()
      assert.ok(box.x + box.width <= 390, `audit row inside the screen: ${JSON.stringify(box)}`)
      // Actors and targets by email, ids on hover.
      await row.getByText(owner.email).waitFor()
      await fits('audit')
    } finally {
      await context.close()
    }
  })
})
