// Spending and limits in the dashboard (issue 21, item 9) in a real Chromium, against a real
// `gatehouse serve` whose config file prices the echo upstream's model.
//
// An owner creates a key with credits (refilled daily), two budgets, an allowed model, a
// token window and a parallel-stream limit on the key form, sees them in the one-time box and
// the list, and the server stored exactly that. The key chats once (echo upstream); the usage
// page then shows the spend per day and per model from the spend ledger, and how much of the
// key's budget is left. The organization's budgets and allow-list are set on the Members
// page, a key's limits are changed in its Limits dialog, and the pages fit a 390 px screen.
//
// Run: cd tests/clients/browser && npm ci && node --test governance.test.mjs
// Env: as dashboard.test.mjs (GATEHOUSE_BIN, GATEHOUSE_CLIENT_TEST_DATABASE_URL,
//      GATEHOUSE_CLIENT_TEST_SHOW_SERVER_LOG=1, CHROMIUM).

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { api, sleep, startGatehouse, stopGatehouse } from '../harness.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const SHOTS = path.join(HERE, 'screenshots')
const PASSWORD = 'correct-horse-42'
const MODEL = 'gh-echo'
// Dear on purpose (1,000 and 2,000 micro-units a token), so one short chat costs cents.
const PRICES = `[models."${MODEL}"]\ninput_per_mtok = 1000000000\noutput_per_mtok = 2000000000\n`

const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the browser spending tests are skipped (apt-get install chromium)`)
}
const skip = !haveChromium && process.env.CI !== 'true'

// Micro-units as the page prints them (the same Intl format as assets/dashboard/app.js).
const money = (page, micro) => page.evaluate((m) => new Intl.NumberFormat(undefined,
  { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6 }).format(m / 1e6), micro)

// Records console errors, thrown errors and CSP violations.
function watch(page) {
  const seen = { console: [], errors: [] }
  page.on('console', (m) => seen.console.push({ type: m.type(), text: m.text() }))
  page.on('pageerror', (e) => seen.errors.push(String(e)))
  return seen
}
const cspWatcher = () => {
  window.__cspViolations = []
  document.addEventListener('securitypolicyviolation', (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`))
}
async function assertClean(page, seen) {
  assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], 'no CSP violations')
  // The first GET /v1/me before sign-in answers 401.
  const errors = seen.console.filter((m) => m.type === 'error' && !/status of 401 /.test(m.text))
  assert.deepEqual(errors, [], 'no console errors')
  assert.deepEqual(seen.errors, [], 'no errors thrown')
}
async function fits(page, what) {
  const wide = await page.evaluate(() => [...document.querySelectorAll('main *')]
    .filter((el) => el.getBoundingClientRect().right > 391)
    .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`))
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), `${what}: no sideways scrolling at 390 px: ${wide.join(', ')}`)
}

describe('spending and limits in the dashboard', { skip }, () => {
  let gh, browser, org, owner, ownerEmail, cfgDir

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    cfgDir = mkdtempSync(path.join(os.tmpdir(), 'gatehouse-governance-cfg-'))
    writeFileSync(path.join(cfgDir, 'gatehouse.toml'), PRICES)
    gh = await startGatehouse({
      tmpPrefix: 'gatehouse-governance-',
      env: {
        GATEHOUSE_CONFIG_FILE: path.join(cfgDir, 'gatehouse.toml'),
        GATEHOUSE_UPSTREAM_MODEL: MODEL,
        GATEHOUSE_AUTOCONFIRM: 'true',
        GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
        GATEHOUSE_WRITE_BEHIND_SECONDS: '1',
      },
    })
    ownerEmail = `owner-${randomUUID()}@example.com`
    await api('POST', `${gh.url}/auth/v1/signup`, { body: { email: ownerEmail, password: PASSWORD }, headers: { apikey: gh.key } })
    const tok = await api('POST', `${gh.url}/auth/v1/token?grant_type=password`, { body: { email: ownerEmail, password: PASSWORD }, headers: { apikey: gh.key } })
    owner = { authorization: `Bearer ${tok.access_token}` }
    org = await api('POST', `${gh.url}/v1/orgs`, { body: { name: 'Metered Inc' }, headers: owner, expect: 201 })
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    await stopGatehouse(gh)
    if (cfgDir) rmSync(cfgDir, { recursive: true, force: true })
  })

  async function open(viewport = { width: 1280, height: 900 }) {
    const context = await browser.newContext({ viewport })
    await context.addInitScript(cspWatcher)
    const page = await context.newPage()
    const seen = watch(page)
    await page.goto(`${gh.url}/dashboard#/keys`)
    await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
    await page.getByLabel('Email').fill(ownerEmail)
    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
    return { context, page, seen, nav: page.getByRole('navigation', { name: 'Dashboard pages' }) }
  }

  test('a key made with credits and budgets on the form is listed with them, spends, and the usage page shows what is left', async () => {
    const { context, page, seen, nav } = await open()
    try {
      await page.getByLabel('Name').fill('Budgeted bot')
      await page.getByLabel('chat:write').check()
      await page.getByText('Spending and limits').click()
      await page.getByLabel('Credits left').fill('100')
      await page.getByLabel('Refill', { exact: true }).selectOption({ label: 'Daily (UTC midnight)' })
      await page.getByLabel('Refill to').fill('100')
      await page.getByRole('button', { name: 'Add budget' }).click()
      await page.getByLabel(/^Budget 1 amount/).fill('25.50')
      await page.getByLabel('Budget 1 period').selectOption('day')
      await page.getByRole('button', { name: 'Add budget' }).click()
      await page.getByLabel(/^Budget 2 amount/).fill('100')
      await page.getByLabel('Budget 2 period').selectOption('total')
      await page.getByLabel('Budget 2 alert only').check()
      await page.getByLabel('Allowed models').fill(MODEL)
      await page.getByLabel('Tokens per day').fill('100000')
      await page.getByLabel('Parallel streams').fill('2')

      // An amount that is not money is refused in place, before anything is sent.
      await page.getByLabel(/^Budget 1 amount/).fill('ten dollars')
      await page.getByRole('button', { name: 'Generate API key' }).click()
      await page.getByRole('alert').filter({ hasText: 'Budget 1: give an amount above zero' }).waitFor()
      assert.equal(await page.locator('.secret').count(), 0)
      await page.getByLabel(/^Budget 1 amount/).fill('25.50')

      await page.getByRole('button', { name: 'Generate API key' }).click()
      const box = page.locator('.secret')
      await box.locator('.secret-value').waitFor()
      const key = (await box.locator('.secret-value').textContent()).trim()
      const dayBudget = `Budget ${await money(page, 25_500_000)} per day`
      for (const text of ['100 credits left, refilled to 100 daily', dayBudget, `Budget ${await money(page, 100_000_000)} in total (alert only)`,
        `Models: ${MODEL}`, '100,000 tokens/day', '2 parallel streams']) {
        await box.getByText(text, { exact: true }).waitFor()
      }

      // The server stored what the form said, in micro-units.
      const stored = (await api('GET', `${gh.url}/v1/orgs/${org.id}/api-keys`, { headers: owner })).find((k) => k.name === 'Budgeted bot')
      assert.deepEqual(stored.credits, { remaining: 100, refill: { interval: 'daily', amount: 100 } })
      assert.deepEqual(stored.budgets.map((b) => ({ amount: b.amount, period: b.period, soft: !!b.soft })),
        [{ amount: 25_500_000, period: 'day', soft: false }, { amount: 100_000_000, period: 'total', soft: true }])
      assert.deepEqual(stored.allowed_models, [MODEL])
      assert.equal(stored.token_limits.tokens_per_day, 100000)
      assert.equal(stored.max_parallel, 2)
      const row = page.locator('tr', { hasText: 'Budgeted bot' })
      await row.getByText('100 credits left, refilled to 100 daily').waitFor()
      await row.getByText(dayBudget, { exact: true }).waitFor()

      // One chat with the key: it spends a credit and money.
      const chat = await api('POST', `${gh.url}/v1/chat`, { body: { message: 'Hello, how much is this?' }, headers: { 'x-api-key': key } })
      assert.ok(chat.response || chat.message || chat.content, JSON.stringify(chat))
      let cost = 0
      const deadline = Date.now() + 15_000
      for (;;) {
        const rows = await api('GET', `${gh.url}/v1/orgs/${org.id}/usage?granularity=day&key_id=${stored.id}`, { headers: owner })
        cost = rows.reduce((a, r) => a + (r.cost || 0), 0)
        if (cost > 0) break
        assert.ok(Date.now() < deadline, `no spend reported: ${JSON.stringify(rows)}`)
        await sleep(300)
      }

      await page.reload()
      await row.getByText('99 credits left, refilled to 100 daily').waitFor()

      await nav.getByRole('link', { name: 'Usage' }).click()
      await page.getByRole('heading', { name: 'Spend per day, by model' }).waitFor()
      const spendChart = page.locator('section', { has: page.getByRole('heading', { name: 'Spend per day, by model' }) }).locator('svg.chart')
      assert.ok((await spendChart.locator('rect').count()) > 0, 'a bar in the spend chart')
      const perModel = page.locator('table.spend-models tr', { hasText: MODEL })
      assert.equal((await perModel.getByRole('cell').last().textContent()), await money(page, cost))
      const left = page.locator('table.budgets-left tr', { hasText: 'Budgeted bot' }).filter({ hasText: 'per day' })
      await left.waitFor()
      assert.equal(await left.locator('td[data-label="Spent"]').textContent(), await money(page, cost))
      assert.equal(await left.locator('td[data-label="Left"] .left').textContent(), await money(page, 25_500_000 - cost))
      assert.equal(Number(await left.locator('meter').getAttribute('value')), cost)
      mkdirSync(SHOTS, { recursive: true })
      await page.screenshot({ path: path.join(SHOTS, 'dashboard-spend.png'), fullPage: true })

      // On a phone: budgets as cards, nothing wider than the screen.
      await page.setViewportSize({ width: 390, height: 844 })
      await fits(page, 'usage')
      await nav.getByRole('link', { name: 'API keys' }).click()
      // The usage page has rows naming the key too: wait for the keys page to replace it.
      await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor()
      await page.getByRole('table', { name: 'API keys, newest first' }).locator('tr', { hasText: 'Budgeted bot' }).waitFor()
      await fits(page, 'keys')
      await assertClean(page, seen)
    } finally {
      await context.close()
    }
  })

  test('a key’s limits change in its Limits dialog; the organization’s budgets and models on the Members page', async () => {
    const made = await api('POST', `${gh.url}/v1/orgs/${org.id}/api-keys`, {
      body: { name: 'Dialog key', scopes: ['chat:write'], credits: { remaining: 40 } }, headers: owner, expect: 201,
    })
    const { context, page, seen, nav } = await open()
    try {
      const row = page.locator('tr', { hasText: 'Dialog key' })
      await row.getByText('40 credits left').waitFor()
      await row.getByRole('button', { name: 'Edit limits of API key Dialog key' }).click()
      const dialog = page.getByRole('dialog', { name: 'Limits of “Dialog key”' })
      assert.equal(await dialog.getByLabel('Credits left').inputValue(), '40')
      await dialog.getByLabel('Credits left').fill('5')
      await dialog.getByRole('button', { name: 'Add budget' }).click()
      await dialog.getByLabel(/^Budget 1 amount/).fill('3')
      await dialog.getByLabel('Budget 1 period').selectOption('week')
      await dialog.getByRole('button', { name: 'Save limits' }).click()
      await dialog.waitFor({ state: 'detached' })
      await row.getByText('5 credits left').waitFor()
      const k = await api('GET', `${gh.url}/v1/orgs/${org.id}/api-keys/${made.id}`, { headers: owner })
      assert.equal(k.credits.remaining, 5)
      assert.deepEqual(k.budgets.map((b) => [b.amount, b.period]), [[3_000_000, 'week']])

      // Clearing the credits makes the key unlimited again (PATCH with null).
      await row.getByRole('button', { name: 'Edit limits of API key Dialog key' }).click()
      await dialog.getByLabel('Credits left').fill('')
      await dialog.getByRole('button', { name: 'Save limits' }).click()
      await dialog.waitFor({ state: 'detached' })
      await row.getByText('5 credits left').waitFor({ state: 'detached' })
      assert.equal((await api('GET', `${gh.url}/v1/orgs/${org.id}/api-keys/${made.id}`, { headers: owner })).credits ?? null, null)

      // The organization: a monthly budget, one per end user, one per connected app, and an
      // allow-list.
      await nav.getByRole('link', { name: 'Members' }).click()
      const form = page.locator('form', { has: page.getByRole('heading', { name: 'Spending and limits' }) })
      await form.getByRole('button', { name: 'Add budget' }).click()
      await form.getByLabel(/^Budget 1 amount/).fill('1000')
      await form.getByLabel('Budget 1 period').selectOption('month')
      await form.getByRole('button', { name: 'Add end-user budget' }).click()
      await form.getByLabel(/^End-user budget 1 amount/).fill('1.25')
      await form.getByLabel('End-user budget 1 period').selectOption('day')
      await form.getByRole('button', { name: 'Add connected-app budget' }).click()
      await form.getByLabel(/^Connected-app budget 1 amount/).fill('7')
      await form.getByLabel('Connected-app budget 1 period').selectOption('week')
      await form.getByLabel('Allowed models').fill('gh-*, anthropic/*')
      await form.getByRole('button', { name: 'Save spending and limits' }).click()
      await page.getByText('Saved the organization’s spending and limits.').waitFor()
      const b = await api('GET', `${gh.url}/v1/orgs/${org.id}/budgets`, { headers: owner })
      assert.deepEqual(b.budgets.map((x) => [x.amount, x.period]), [[1_000_000_000, 'month']])
      assert.deepEqual(b.end_user_budgets.map((x) => [x.amount, x.period]), [[1_250_000, 'day']])
      assert.deepEqual(b.client_budgets.map((x) => [x.amount, x.period]), [[7_000_000, 'week']])
      const limits = await api('GET', `${gh.url}/v1/orgs/${org.id}/chat-limits`, { headers: owner })
      assert.deepEqual(limits.allowed_models, ['gh-*', 'anthropic/*'])

      // The organization's own model prices: the deployment's is listed, one is set over it
      // (sent in micro-units), a bad amount is refused in place, and removing it restores
      // the deployment's.
      const prices = page.locator('form', { has: page.getByRole('heading', { name: 'Model prices' }) })
      const priceRow = prices.locator('tr.price', { hasText: MODEL })
      await priceRow.getByText('the deployment').waitFor()
      await priceRow.getByText(`${await money(page, 1_000_000_000)} / 1M`).waitFor()
      await prices.getByLabel('Model', { exact: true }).fill(MODEL)
      await prices.getByLabel('Prompt, per 1M tokens').fill('0.15')
      await prices.getByLabel('Answer, per 1M tokens').fill('lots')
      await prices.getByRole('button', { name: 'Set price' }).click()
      await prices.getByRole('alert').getByText(/amounts of money per million tokens/).waitFor()
      await prices.getByLabel('Answer, per 1M tokens').fill('0.6')
      await prices.getByRole('button', { name: 'Set price' }).click()
      await page.getByText(`Set the organization’s price of ${MODEL}.`).waitFor()
      await priceRow.getByText('this organization').waitFor()
      await priceRow.getByText(`${await money(page, 600_000)} / 1M`).waitFor()
      const own = await api('GET', `${gh.url}/v1/orgs/${org.id}/models/${MODEL}/price`, { headers: owner })
      assert.deepEqual([own.input_per_mtok, own.output_per_mtok, own.source], [150_000, 600_000, 'org'])
      await priceRow.getByRole('button', { name: `Remove the organization’s price of ${MODEL}` }).click()
      await priceRow.getByText('the deployment').waitFor()
      const back = await api('GET', `${gh.url}/v1/orgs/${org.id}/models/${MODEL}/price`, { headers: owner })
      assert.equal(back.source, 'config')

      // The usage page lists the organization's budget and what each end user may spend.
      await nav.getByRole('link', { name: 'Usage' }).click()
      await page.locator('table.budgets-left tr', { hasText: 'Metered Inc' }).getByText(`${await money(page, 1_000_000_000)} per month`).waitFor()
      await page.getByText(`Each end user may also spend ${await money(page, 1_250_000)} per day.`).waitFor()
      await assertClean(page, seen)
    } finally {
      await context.close()
    }
  })
})
