// Sessions per device in the dashboard (assets/dashboard, "Sessions" in the top bar), in a
// real Chromium against a real `gatehouse serve`: a person signed in from two other devices
// (through /auth/v1, as apps do) sees both with their user agents, signs one out (its refresh
// token is refused at once), then signs out everywhere else (the other's too), while the
// dashboard itself stays signed in.
//
// Run: cd tests/clients/browser && npm ci && node --test sessions.test.mjs
// Env: as dashboard.test.mjs (GATEHOUSE_BIN, CHROMIUM, …).

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'

import { api, startGatehouse, stopGatehouse } from '../harness.mjs'

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const PASSWORD = 'correct-horse-42'
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the browser sessions test is skipped (apt-get install chromium)`)
}
const skip = !haveChromium && process.env.CI !== 'true'

describe('sessions in the dashboard (Chromium)', { skip }, () => {
  let gh, browser

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    gh = await startGatehouse({
      tmpPrefix: 'gatehouse-sessions-',
      env: { GATEHOUSE_AUTOCONFIRM: 'true', GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s', GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s' },
    })
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await stopGatehouse(gh)
  })

  // A sign-in through /auth/v1 from a device named by its user agent.
  const signInAs = (email, ua) =>
    api('POST', `${gh.url}/auth/v1/token?grant_type=password`, {
      body: { email, password: PASSWORD },
      headers: { apikey: gh.key, 'user-agent': ua },
    })
  const refresh = (token) =>
    fetch(`${gh.url}/auth/v1/token?grant_type=refresh_token`, {
      method: 'POST',
      headers: { apikey: gh.key, 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: token }),
    })

  test('a person signs one device out, then everywhere else', async () => {
    const email = `sessions-${randomUUID()}@example.com`
    await api('POST', `${gh.url}/auth/v1/signup`, { body: { email, password: PASSWORD }, headers: { apikey: gh.key } })
    const phone = await signInAs(email, 'PhoneApp/1.0')
    const tablet = await signInAs(email, 'TabletApp/3.0')

    const page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage()
    const errors = []
    page.on('pageerror', (e) => errors.push(String(e)))
    await page.goto(`${gh.url}/dashboard`)
    await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
    await page.getByLabel('Email').fill(email)
    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('heading', { level: 1, name: 'Welcome' }).waitFor()

    await page.getByRole('button', { name: 'Sessions' }).click()
    const dialog = page.getByRole('dialog', { name: 'Where you are signed in' })
    await dialog.waitFor()
    await dialog.getByRole('cell', { name: /^PhoneApp\/1\.0/ }).waitFor()
    await dialog.getByRole('cell', { name: /^TabletApp\/3\.0/ }).waitFor()
    assert.equal(await dialog.locator('tbody tr').count(), 3, 'the sign-up, the phone and the tablet')

    await dialog.getByRole('button', { name: 'Sign out PhoneApp/1.0' }).click()
    await dialog.getByRole('cell', { name: /^PhoneApp\/1\.0/ }).waitFor({ state: 'detached' })
    assert.equal((await refresh(phone.refresh_token)).status, 400, "the phone's refresh token is refused at once")
    assert.equal((await refresh(tablet.refresh_token)).status, 200, 'the tablet is still signed in')

    await dialog.getByRole('button', { name: 'Sign out everywhere else' }).click()
    await page.getByRole('dialog', { name: 'Sign out everywhere else?' }).getByRole('button', { name: 'Sign out everywhere else' }).click()
    await dialog.getByText('No app or browser is signed in with your account.').waitFor()
    const me = await fetch(`${gh.url}/v1/me`, { headers: { authorization: `Bearer ${tablet.access_token}` } })
    assert.equal(me.status, 401, "the tablet's access token is refused at its next use")

    // The dashboard itself stays signed in.
    await dialog.getByRole('button', { name: 'Close' }).click()
    await page.reload()
    await page.getByRole('heading', { level: 1, name: 'Welcome' }).waitFor()
    assert.deepEqual(errors, [])
  })
})
