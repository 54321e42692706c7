// Two-factor authentication in the dashboard, in a real Chromium against a real
// `gatehouse serve`: a person adds an authenticator app (QR code and setup key shown, a code
// computed here with the independent `otpauth` library turns it on), requires MFA of the
// organization's members, is asked for a code at the next sign-in, and removes the app.
// An aal1 token of the same person is refused by the organization meanwhile.
//
// Run: cd tests/clients/browser && npm ci && node --test mfa.test.mjs
// Env: as dashboard.test.mjs (GATEHOUSE_BIN, CHROMIUM, …).

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'

import * as OTPAuth from 'otpauth'

import { api, sleep, startGatehouse, stopGatehouse } from '../harness.mjs'

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const PASSWORD = 'correct-horse-42'
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the browser MFA tests are skipped (apt-get install chromium)`)
}
const skip = !haveChromium && process.env.CI !== 'true'

// A code of a step no code was used in yet: each code is accepted once, so a second code
// waits for the next 30-second step.
let lastStep = 0
async function freshCode(totp) {
  for (;;) {
    const step = Math.floor(Date.now() / 30_000)
    if (step > lastStep) {
      lastStep = step
      return totp.generate()
    }
    await sleep(500)
  }
}

describe('two-factor authentication in the dashboard', { skip }, () => {
  let gh, browser, email, org

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    gh = await startGatehouse({
      tmpPrefix: 'gatehouse-mfa-',
      env: {
        GATEHOUSE_AUTOCONFIRM: 'true',
        GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
        GATEHOUSE_MFA_ENCRYPTION_KEY: 'a browser-test key of at least 32 characters',
      },
    })
    email = `mfa-${randomUUID()}@example.com`
    await api('POST', `${gh.url}/auth/v1/signup`, { body: { email, password: PASSWORD }, headers: { apikey: gh.key } })
    const tok = await api('POST', `${gh.url}/auth/v1/token?grant_type=password`, {
      body: { email, password: PASSWORD },
      headers: { apikey: gh.key },
    })
    org = await api('POST', `${gh.url}/v1/orgs`, {
      body: { name: 'Secure Co' },
      headers: { authorization: `Bearer ${tok.access_token}` },
      expect: 201,
    })
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await stopGatehouse(gh)
  })

  const signInForm = async (page) => {
    await page.goto(`${gh.url}/dashboard#/members`)
    await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
    await page.getByLabel('Email', { exact: true }).fill(email)
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()
  }
  const openSecurity = async (page) => {
    await page.getByRole('button', { name: 'Security' }).click()
    const dlg = page.getByRole('dialog', { name: 'Two-factor authentication' })
    await dlg.getByLabel('Your password').fill(PASSWORD)
    await dlg.getByRole('button', { name: 'Continue' }).click()
    return dlg
  }

  test('enrol, require MFA, sign in with a code, remove', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    const page = await context.newPage()
    const errors = []
    page.on('pageerror', (e) => errors.push(String(e)))
    try {
      await signInForm(page)
      await page.getByRole('heading', { level: 1, name: 'Members' }).waitFor()

      // Add an authenticator app.
      let dlg = await openSecurity(page)
      await dlg.getByText('Two-factor authentication is off').waitFor()
      await dlg.getByRole('button', { name: 'Add an authenticator app' }).click()
      const qr = dlg.getByRole('img', { name: 'QR code to scan with your authenticator app' })
      await qr.waitFor()
      assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), 'the QR code renders')
      const secret = (await dlg.locator('.secret-value').textContent()).trim()
      assert.match(secret, /^[A-Z2-7]{32}$/)
      const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), algorithm: 'SHA1', digits: 6, period: 30 })
      await dlg.getByLabel('Code from your authenticator app').fill(await freshCode(totp))
      await dlg.getByRole('button', { name: 'Turn on' }).click()
      await dlg.getByText('Two-factor authentication is on.').waitFor()
      await dlg.getByRole('button', { name: 'Close' }).click()

      // The dashboard session is aal2 now: it may require MFA of the members.
      const box = page.getByLabel('Require two-factor authentication')
      await page.waitForFunction(() => !document.querySelector('#require-mfa')?.disabled)
      await box.check()
      await page.getByText('Members now need two-factor authentication.').waitFor()
      // An aal1 token of the same person is refused by the organization; the page still works.
      const aal1 = await api('POST', `${gh.url}/auth/v1/token?grant_type=password`, {
        body: { email, password: PASSWORD },
        headers: { apikey: gh.key },
      })
      const res = await fetch(`${gh.url}/v1/orgs/${org.id}/members`, { headers: { authorization: `Bearer ${aal1.access_token}` } })
      assert.equal(res.status, 403)
      assert.equal((await res.json()).error.code, 'mfa_required')
      await page.reload()
      await page.getByRole('heading', { level: 1, name: 'Members' }).waitFor()
      // The box is drawn disabled and takes the organization's setting when it has loaded.
      await page.waitForFunction(() => !document.querySelector('#require-mfa')?.disabled)
      assert.ok(await page.getByLabel('Require two-factor authentication').isChecked())

      // Signing in again asks for a code. (Sign-out ends with the sign-in form; navigating
      // before it would race with the page resetting its address.)
      await page.getByRole('button', { name: 'Sign out' }).click()
      await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
      await signInForm(page)
      await page.getByRole('heading', { name: 'Two-factor authentication' }).waitFor()
      await page.getByLabel('Code from your authenticator app').fill(await freshCode(totp))
      await page.getByRole('button', { name: 'Verify' }).click()
      await page.getByRole('heading', { level: 1, name: 'Members' }).waitFor()
      await page.locator('th', { hasText: email }).first().waitFor()

      // Remove the app: a code first (the dialog's token is aal1), then it is gone.
      await page.getByLabel('Require two-factor authentication').uncheck()
      await page.getByText('Two-factor authentication is optional again.').waitFor()
      dlg = await openSecurity(page)
      await dlg.getByRole('button', { name: /^Remove/ }).click()
      await dlg.getByLabel('Code from your authenticator app').fill(await freshCode(totp))
      await dlg.getByRole('button', { name: 'Continue' }).click()
      await dlg.getByText('Two-factor authentication is off').waitFor()
      const user = await api('GET', `${gh.url}/auth/v1/user`, {
        headers: { apikey: gh.key, authorization: `Bearer ${aal1.access_token}` },
      }).catch((e) => e)
      // That aal1 token's session ended when the factor was first verified (as GoTrue does).
      assert.ok(user instanceof Error, 'the aal1 session ended')
      assert.deepEqual(errors, [])
    } finally {
      await context.close()
    }
  })
})
