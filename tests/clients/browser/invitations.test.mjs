// Members join by invitation, in a real Chromium against a real `gatehouse serve` process.
//
// An owner signs in to the dashboard, invites a new address from the Members page and sees
// it pending. The invitation mail lands in the development outbox (no SMTP here); a fresh
// browser context opens its link, sees the accept page, creates an account there and lands
// in the organization. The owner's page then lists the newcomer as a member. Screenshots of
// the invite form and the accept page go to docs/ (docs/dashboard.md shows them).
//
// Run: cd tests/clients/browser && npm ci && node --test invitations.test.mjs
// Env: as dashboard.test.mjs (GATEHOUSE_BIN, GATEHOUSE_CLIENT_TEST_DATABASE_URL,
//      GATEHOUSE_CLIENT_TEST_SHOW_SERVER_LOG=1, CHROMIUM).

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'

import { REPO, api, sleep, startGatehouse, stopGatehouse } from '../harness.mjs'

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const DOCS = path.join(REPO, 'docs')
const PASSWORD = 'correct-horse-42'

const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the browser invitation test is skipped (apt-get install chromium)`)
}
const skip = !haveChromium && process.env.CI !== 'true'

// Waits until the development outbox holds a mail to `to`; returns its text.
async function mailTo(dir, to) {
  const deadline = Date.now() + 15_000
  for (;;) {
    const files = existsSync(dir) ? readdirSync(dir) : []
    for (const f of files) {
      const text = readFileSync(path.join(dir, f), 'utf8')
      if (text.startsWith(`To: ${to}\n`)) return text
    }
    if (Date.now() > deadline) throw new Error(`no mail to ${to} in ${dir}`)
    await sleep(100)
  }
}

describe('invitations in Chromium', { skip }, () => {
  let gh, browser

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    gh = await startGatehouse({
      tmpPrefix: 'gatehouse-invitations-',
      env: {
        GATEHOUSE_AUTOCONFIRM: 'true',
        GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
        GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
      },
    })
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await stopGatehouse(gh)
  })

  test('an owner invites, the invitee opens the mailed link, signs up and lands in the organization', async () => {
    const ownerEmail = `ann.${randomUUID().slice(0, 6)}@example.com`
    const newcomer = `sam.${randomUUID().slice(0, 6)}@example.com`
    await api('POST', `${gh.url}/auth/v1/signup`, { body: { email: ownerEmail, password: PASSWORD }, headers: { apikey: gh.key } })
    const tok = await api('POST', `${gh.url}/auth/v1/token?grant_type=password`, {
      body: { email: ownerEmail, password: PASSWORD },
      headers: { apikey: gh.key },
    })
    const owner = { authorization: `Bearer ${tok.access_token}` }
    await api('POST', `${gh.url}/v1/orgs`, { body: { name: 'Acme Robotics' }, headers: owner, expect: 201 })

    // The owner invites from the Members page.
    const ownerCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    const page = await ownerCtx.newPage()
    await page.goto(`${gh.url}/dashboard#/members`)
    await page.getByLabel('Email').fill(ownerEmail)
    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('heading', { level: 1, name: 'Members' }).waitFor()
    await page.getByLabel('Email').fill(newcomer)
    await page.getByLabel('Role', { exact: true }).selectOption('admin')
    await page.getByRole('button', { name: 'Send invitation' }).click()
    await page.getByRole('button', { name: `Revoke the invitation to ${newcomer}` }).waitFor()
    await page.getByRole('button', { name: `Resend the invitation to ${newcomer}` }).waitFor()
    await page.locator('#toast.show').waitFor({ state: 'detached' })
    await page.screenshot({ path: path.join(DOCS, 'dashboard-invite.png') })

    // The mail names the organization and the inviter and carries the link.
    const mail = await mailTo(path.join(gh.tmp, 'outbox'), newcomer)
    assert.match(mail, new RegExp(`Subject: ${ownerEmail.replace(/[.+]/g, '\\$&')} invited you to Acme Robotics`))
    const link = mail.match(/https?:\/\/\S+\/dashboard\/#invitation=inv_[0-9a-f]{32}&token=[A-Za-z0-9_-]+/)[0]

    // A fresh browser (nobody signed in) opens it, signs up there and joins.
    const guest = await browser.newContext({ viewport: { width: 1100, height: 820 } })
    const gpage = await guest.newPage()
    await gpage.goto(link)
    await gpage.getByRole('heading', { level: 1, name: 'Join Acme Robotics' }).waitFor()
    assert.equal(await gpage.getByLabel('Email').inputValue(), newcomer)
    assert.ok(!(await gpage.evaluate(() => location.href)).includes('token='), 'the token leaves the address bar')
    await gpage.getByLabel('Password').fill(PASSWORD)
    await gpage.screenshot({ path: path.join(DOCS, 'dashboard-accept.png') })
    await gpage.getByRole('button', { name: 'Create account and join' }).click()
    await gpage.getByText('You joined Acme Robotics.').waitFor()
    const picked = await gpage.locator('#org-select option:checked').textContent()
    assert.equal(picked, 'Acme Robotics (admin)')
    await gpage.getByRole('navigation', { name: 'Dashboard pages' }).getByRole('link', { name: 'Members' }).waitFor()

    // The owner sees the newcomer as a member, no longer as pending.
    await page.getByRole('navigation', { name: 'Dashboard pages' }).getByRole('link', { name: 'API keys' }).click()
    await page.getByRole('navigation', { name: 'Dashboard pages' }).getByRole('link', { name: 'Members' }).click()
    await page.getByLabel(`Role of ${newcomer}`).waitFor()
    assert.equal(await page.getByRole('button', { name: `Revoke the invitation to ${newcomer}` }).count(), 0)
    await guest.close()
    await ownerCtx.close()
  })
})
