// The embeddable chat widget (assets/widget.js, served as GET /widget.js) in a real
// Chromium, against a real `gatehouse serve` process.
//
// Two host pages embed the widget: page A on an allowed origin (the launcher appears, a
// message is streamed back by the built-in echo model, Escape closes the panel, a reload
// redraws the conversation) and page B on an origin the widget does not allow (nothing is
// drawn, no session is opened, the host page keeps working).
//
// Run: cd tests/clients/browser && npm ci && npm test
// Env: GATEHOUSE_BIN (default <repo>/target/debug/gatehouse),
//      GATEHOUSE_CLIENT_TEST_DATABASE_URL (use PostgreSQL instead of a temp SQLite file),
//      GATEHOUSE_CLIENT_TEST_SHOW_SERVER_LOG=1 (print the server's output at the end),
//      CHROMIUM (default /usr/bin/chromium). Without Chromium the suite is skipped with a
//      notice, except with CI=true, where that is a failure.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac, randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, statSync } from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { api, sleep, startGatehouse, stopGatehouse } from '../harness.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const SHOTS = path.join(HERE, 'screenshots')
const PASSWORD = 'correct-horse-42'
const TITLE = 'Ask Gatehouse'
const GREETING = 'Hi! How can I help?'
const SESSION_CALLS = 8 // signed calls one widget session may make per minute in this suite

const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the browser widget tests are skipped (apt-get install chromium)`)
}
// In CI a missing browser is a failure, not a skip: the suite runs and `before` throws.
const skip = !haveChromium && process.env.CI !== 'true'

// This suite's server settings, on top of what the harness sets.
const GATEHOUSE_ENV = {
  GATEHOUSE_AUTOCONFIRM: 'true',
  GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
  GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
  GATEHOUSE_RATE_LIMIT_WIDGET_IP: '1000/60s',
  // Small enough for the rate-limit case to reach it in a few messages; each session counts alone.
  GATEHOUSE_RATE_LIMIT_WIDGET_SESSION: `${SESSION_CALLS}/60s`,
  // The shortest lifetime gatehouse accepts: renewal is due at 48 s (reached with a fake clock).
  GATEHOUSE_WIDGET_SESSION_SECONDS: '60',
}

// A host page: some content of its own, a button of its own, and the embed snippet.
const hostPage = (snippet) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Host page</title>
<style>body{font:16px/1.5 Georgia,serif;margin:40px;background:#fafafa}button{font-size:16px}</style></head>
<body>
<h1>Acme Gardening</h1>
<p id="host-text">Welcome to our shop. We sell spades, rakes and very patient seeds.</p>
<button id="host-button" type="button" onclick="this.textContent='Host button clicked'">Host button</button>
${snippet}
</body></html>`

// Serves pages[path] (filled in later: the pages name widgets made after the ports are known).
function startHostServer(pages) {
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      const page = pages[new URL(req.url, 'http://host').pathname]
      if (page) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
        res.end(page)
      } else {
        res.writeHead(404).end()
      }
    })
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => resolve({ srv, url: `http://127.0.0.1:${srv.address().port}` }))
  })
}

const launcherOf = (page) => page.locator('#gatehouse-launcher') // CSS locators pierce the open shadow root

// Records what a page asks gatehouse for and what it prints.
function watch(page) {
  const seen = { requests: [], warnings: [], errors: [] }
  page.on('request', (r) => seen.requests.push({ method: r.method(), url: r.url(), headers: r.headers(), body: r.postData() }))
  page.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') seen.warnings.push(m.text()) })
  page.on('pageerror', (e) => seen.errors.push(String(e)))
  return seen
}
const sessionRequests = (seen) => seen.requests.filter((r) => new URL(r.url).pathname.endsWith('/session') && r.method === 'POST')

const shadowActive = (page) => page.evaluate(() => document.activeElement.shadowRoot?.activeElement?.id)
// Waits until the widget is idle: no answer pending, the send button enabled.
const idle = (page) =>
  page.waitForFunction(() => {
    const r = document.querySelector('[data-gatehouse-widget]').shadowRoot
    return !r.querySelector('.pending') && !r.querySelector('.send').disabled
  })

// Types a message into the open panel, sends it with Enter, and waits for the widget to be idle.
async function ask(page, text) {
  await page.getByRole('textbox', { name: 'Message' }).fill(text)
  await page.getByRole('textbox', { name: 'Message' }).press('Enter')
  await idle(page)
}

describe('chat widget in Chromium', { skip }, () => {
  let gh, hostA, hostB, browser, widget, open_ // open_: the widget that needs no token
  const question = `What grows in the shade? ${randomUUID().slice(0, 8)}`

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    gh = await startGatehouse({ tmpPrefix: 'gatehouse-browser-', env: GATEHOUSE_ENV })

    // A person, an organization, and a widget that allows host page A's origin only.
    const email = `widget-${randomUUID()}@example.com`
    await api('POST', `${gh.url}/auth/v1/signup`, { body: { email, password: PASSWORD }, headers: { apikey: gh.key } })
    const tok = await api('POST', `${gh.url}/auth/v1/token?grant_type=password`, {
      body: { email, password: PASSWORD },
      headers: { apikey: gh.key },
    })
    const auth = { authorization: `Bearer ${tok.access_token}` }
    const org = await api('POST', `${gh.url}/v1/orgs`, { body: { name: 'Acme Gardening' }, headers: auth, expect: 201 })

    // Host pages first: the widget's allowed origin names page A's port.
    const pages = {}
    hostA = await startHostServer(pages)
    hostB = await startHostServer(pages)
    widget = await api('POST', `${gh.url}/v1/orgs/${org.id}/widgets`, {
      body: {
        name: 'Shop assistant',
        allowed_origins: [hostA.url],
        settings: { title: TITLE, greeting: GREETING, position: 'bottom-right', accent_color: '#0f766e' },
      },
      headers: auth,
      expect: 201,
    })
    const { token } = await api('POST', `${gh.url}/v1/orgs/${org.id}/widgets/${widget.id}/tokens`, {
      body: {},
      headers: auth,
      expect: 201,
    })
    pages['/'] = hostPage(`<script src="${gh.url}/widget.js" data-key="${token}" defer></script>`)

    // A second widget that needs no token, embedded by id for an identified visitor of the
    // host site (user_hash = hex HMAC-SHA256(widget secret, user_id), made by the site's backend).
    open_ = await api('POST', `${gh.url}/v1/orgs/${org.id}/widgets`, {
      body: {
        name: 'Open help',
        allowed_origins: [hostA.url],
        require_token: false,
        settings: { title: 'Open help', greeting: 'Hello, Ada.', position: 'bottom-right', accent_color: '#fde047' },
      },
      headers: auth,
      expect: 201,
    })
    const userHash = createHmac('sha256', open_.secret).update('user-42').digest('hex')
    pages['/by-id'] = hostPage(
      `<script src="${gh.url}/widget.js" data-widget-id="${open_.id}" data-position="bottom-left" ` +
        `data-user-id="user-42" data-user-hash="${userHash}" defer></script>`,
    )

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close().catch(() => {})
    for (const h of [hostA, hostB]) {
      if (!h) continue
      h.srv.closeAllConnections()
      await new Promise((r) => h.srv.close(r))
    }
    await stopGatehouse(gh)
  })

  test('the server answers an allowed origin with CORS headers and refuses another one', async () => {
    const ok = await fetch(`${gh.url}/v1/widgets/${widget.id}/config`, { headers: { origin: hostA.url } })
    assert.equal(ok.status, 200, await ok.clone().text())
    assert.equal(ok.headers.get('access-control-allow-origin'), hostA.url)
    const cfg = (await ok.json()).data
    assert.equal(cfg.settings.title, TITLE)
    const no = await fetch(`${gh.url}/v1/widgets/${widget.id}/config`, { headers: { origin: hostB.url } })
    assert.equal(no.status, 403, await no.clone().text())
    assert.equal(no.headers.get('access-control-allow-origin'), null)
  })

  test('on an allowed origin: open, ask, see the streamed answer, Escape closes, reload redraws', async () => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } })
    const page = await context.newPage()
    const seen = watch(page)
    try {
      await page.goto(hostA.url)
      const launcher = launcherOf(page)
      await launcher.waitFor({ state: 'visible', timeout: 15_000 })
      assert.equal(await launcher.getAttribute('aria-expanded'), 'false')
      assert.match(await launcher.getAttribute('aria-label'), /chat/i)
      assert.equal(sessionRequests(seen).length, 0, 'the session is opened lazily, not on page load')
      // The widget lives in a shadow root: its styles and the page's do not touch each other.
      assert.equal(await page.evaluate(() => !!document.querySelector('[data-gatehouse-widget]')?.shadowRoot), true)
      assert.equal(await page.evaluate(() => document.querySelectorAll('.launcher, .panel').length), 0)

      await launcher.click()
      const dialog = page.getByRole('dialog', { name: TITLE })
      await dialog.waitFor({ state: 'visible' })
      assert.equal(await launcher.getAttribute('aria-expanded'), 'true')
      const log = page.getByRole('log')
      await log.getByText(GREETING).waitFor()
      const input = page.getByRole('textbox', { name: 'Message' })
      assert.equal(await shadowActive(page), 'gatehouse-input')

      // Shift+Enter is a newline, not a send.
      await input.fill('first line')
      await input.press('Shift+Enter')
      await input.pressSequentially('second line')
      assert.equal(await input.inputValue(), 'first line\nsecond line')
      assert.equal(seen.requests.filter((r) => r.url.endsWith('/chat')).length, 0)

      await input.fill(question)
      await input.press('Enter')
      await log.locator('.msg.user', { hasText: question }).waitFor()
      const answer = log.locator('.msg.assistant', { hasText: question })
      await answer.waitFor({ timeout: 20_000 })
      await idle(page)
      assert.equal(await input.inputValue(), '')

      // What went over the wire: one session, a signed streaming chat call.
      assert.equal(sessionRequests(seen).length, 1)
      const chat = seen.requests.find((r) => r.url.endsWith('/chat') && r.method === 'POST')
      assert.ok(chat, 'no chat request')
      assert.equal(JSON.parse(chat.body).stream, true)
      assert.equal(JSON.parse(chat.body).message, question)
      assert.match(chat.headers['x-gatehouse-signature'], /^v1=[0-9a-f]{64}$/)
      assert.match(chat.headers['x-gatehouse-nonce'], /^[A-Za-z0-9_-]{22,}$/)
      assert.match(chat.headers['x-gatehouse-timestamp'], /^\d{10}$/)
      const visitor = await page.evaluate((k) => localStorage.getItem(k), `gatehouse:visitor:${widget.id}`)
      assert.match(visitor ?? '', /^vis_[0-9a-f]{32}$/)

      mkdirSync(SHOTS, { recursive: true })
      const shot = path.join(SHOTS, 'widget-open.png')
      await page.screenshot({ path: shot })
      assert.ok(statSync(shot).size > 1000)

      // The host page still works with the panel open.
      await page.locator('#host-button').click()
      assert.equal(await page.locator('#host-button').textContent(), 'Host button clicked')

      // Escape closes the panel and gives focus back to the launcher.
      await input.focus()
      await page.keyboard.press('Escape')
      await dialog.waitFor({ state: 'hidden' })
      assert.equal(await launcher.getAttribute('aria-expanded'), 'false')
      assert.equal(await shadowActive(page), 'gatehouse-launcher')

      // After a reload the same visitor sees the conversation again (GET /history).
      await page.reload()
      await launcher.waitFor({ state: 'visible', timeout: 15_000 })
      await page.keyboard.press('Tab') // keyboard only: the launcher is reachable and opens with Enter
      for (let i = 0; i < 5; i++) {
        if ((await shadowActive(page)) === 'gatehouse-launcher') break
        await page.keyboard.press('Tab')
      }
      await page.keyboard.press('Enter')
      await dialog.waitFor({ state: 'visible' })
      await log.locator('.msg.user', { hasText: question }).waitFor({ timeout: 15_000 })
      await log.locator('.msg.assistant', { hasText: question }).waitFor()
      const second = sessionRequests(seen).at(-1)
      assert.equal(JSON.parse(second.body).visitor_id, visitor, 'the stored visitor id is sent back')

      // Phone width: the panel takes the whole width.
      await page.setViewportSize({ width: 390, height: 740 })
      const box = await dialog.boundingBox()
      assert.equal(Math.round(box.width), 390)
      await page.screenshot({ path: path.join(SHOTS, 'widget-phone.png') })

      assert.deepEqual(seen.errors, [], 'no errors thrown into the host page')
    } finally {
      await context.close()
    }
  })

  test('the session is renewed before it ends, and opened again once it has expired', async () => {
    const context = await browser.newContext()
    const page = await context.newPage()
    const seen = watch(page)
    // "METHOD /suffix status" of each widget API answer (preflights left out), in order.
    const calls = []
    page.on('response', (r) => {
      const [, suffix] = new URL(r.url()).pathname.split(`/v1/widgets/${widget.id}`)
      if (suffix !== undefined && r.request().method() !== 'OPTIONS') calls.push(`${r.request().method()} ${suffix} ${r.status()}`)
    })
    const waitForCall = async (line, from = 0) => {
      const deadline = Date.now() + 15_000
      while (!calls.slice(from).includes(line)) {
        assert.ok(Date.now() < deadline, `no "${line}" among ${JSON.stringify(calls)}`)
        await sleep(100)
      }
    }
    try {
      await page.clock.install() // a fake clock for the page, running at real speed until told otherwise
      await page.goto(hostA.url)
      await launcherOf(page).click()
      await waitForCall('GET /history 200')

      // Renewal is due at 80% of the 60 s lifetime: jump the page's clock past it.
      const renewal = page.waitForResponse((r) => r.url().endsWith('/session/renew') && r.request().method() === 'POST')
      await page.clock.fastForward('00:50')
      const renewed = await renewal
      assert.equal(renewed.status(), 201, await renewed.text())
      const { session_token } = (await renewed.json()).data
      await ask(page, 'after the renewal')
      await page.getByRole('log').locator('.msg.assistant', { hasText: 'after the renewal' }).waitFor()
      const chat = seen.requests.filter((r) => r.url.endsWith('/chat')).at(-1)
      assert.equal(chat.headers.authorization, `Bearer ${session_token}`, 'the chat call uses the renewed session')

      // Stop the page's clock (so no renewal fires), and let the renewed session run out. The
      // server's side of expiry is tested with an injected clock (tests/api/widgets.rs,
      // widget_sessions_expire_after_15_minutes); here the server's answer to a chat on an
      // expired session is played back once, instead of waiting out a real minute.
      await page.clock.pauseAt((await page.evaluate(() => Date.now())) + 1000)
      let expired = false
      await page.route(`${gh.url}/v1/widgets/${widget.id}/chat`, (route) => {
        if (expired || route.request().method() !== 'POST') return route.fallback()
        expired = true
        return route.fulfill({
          status: 401,
          headers: { 'access-control-allow-origin': hostA.url, vary: 'Origin' },
          contentType: 'application/json',
          body: JSON.stringify({
            success: false,
            error: { code: 'unauthorized', message: 'Authentication required.', details: { reason: 'session_expired' } },
            meta: { request_id: 'req_played_back', ts: new Date().toISOString() },
          }),
        })
      })
      const before = calls.length
      await ask(page, 'after the expiry')
      await page.getByRole('log').locator('.msg.assistant', { hasText: 'after the expiry' }).waitFor()
      assert.deepEqual(calls.slice(before), ['POST /chat 401', 'POST /session 201', 'POST /chat 200'])
      assert.equal(await page.locator('.note').isVisible(), false, 'no error is shown for a recovered expiry')
      assert.deepEqual(seen.errors, [], 'no errors thrown into the host page')
    } finally {
      await context.close()
    }
  })

  test('a rate-limited visitor gets a calm note with the wait, and keeps the unsent text', async () => {
    const context = await browser.newContext()
    const page = await context.newPage()
    const seen = watch(page)
    try {
      await page.goto(hostA.url)
      await launcherOf(page).click()
      await page.getByRole('log').getByText(GREETING).waitFor()
      const note = page.getByRole('status')
      let i = 0
      for (; i < SESSION_CALLS + 2 && !(await note.isVisible()); i++) await ask(page, `message ${i}`)
      await note.waitFor({ timeout: 5000 })
      assert.match(
        await note.textContent(),
        /^The assistant is unavailable right now\. Please try again in \d+ seconds?\.$/,
      )
      assert.equal(await page.getByRole('textbox', { name: 'Message' }).inputValue(), `message ${i - 1}`)
      assert.equal(await page.getByRole('log').locator('.msg.user', { hasText: `message ${i - 1}` }).count(), 0)
      mkdirSync(SHOTS, { recursive: true })
      await page.screenshot({ path: path.join(SHOTS, 'widget-rate-limited.png') })
      assert.deepEqual(seen.errors, [], 'no errors thrown into the host page')
    } finally {
      await context.close()
    }
  })

  test('data-widget-id without a token, data-position, and an identified visitor', async () => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 700 } })
    const page = await context.newPage()
    const seen = watch(page)
    try {
      await page.goto(`${hostA.url}/by-id`)
      const launcher = launcherOf(page)
      await launcher.waitFor({ state: 'visible', timeout: 15_000 })
      const box = await launcher.boundingBox()
      assert.ok(box.x < 100, `data-position=bottom-left puts the launcher on the left (x=${box.x})`)
      await launcher.click()
      await page.getByRole('dialog', { name: 'Open help' }).getByText('Hello, Ada.').waitFor()
      await ask(page, 'Who am I?')
      await page.getByRole('log').locator('.msg.assistant', { hasText: 'Who am I?' }).waitFor()
      const [session] = sessionRequests(seen)
      const body = JSON.parse(session.body)
      assert.equal(body.token, undefined)
      assert.equal(body.user_id, 'user-42')
      assert.match(body.user_hash, /^[0-9a-f]{64}$/)
      assert.equal(await page.getByRole('status').isVisible(), false)
      mkdirSync(SHOTS, { recursive: true })
      await page.screenshot({ path: path.join(SHOTS, 'widget-by-id-left.png') })
      assert.deepEqual(seen.errors, [], 'no errors thrown into the host page')
    } finally {
      await context.close()
    }
  })

  test('on an origin the widget does not allow: nothing is drawn and no session is opened', async () => {
    const context = await browser.newContext()
    const page = await context.newPage()
    const seen = watch(page)
    try {
      await page.goto(hostB.url)
      // The config fetch fails (403 without CORS headers); the widget only warns.
      const deadline = Date.now() + 15_000
      while (!seen.warnings.some((w) => w.includes('[gatehouse widget]'))) {
        assert.ok(Date.now() < deadline, `no widget warning; console: ${JSON.stringify(seen.warnings)}`)
        await sleep(100)
      }
      // The console says why, with the refused origin and a link to the setting.
      const refusal = () => seen.warnings.find((w) => w.includes('not loaded: this page\'s origin'))
      while (!refusal()) {
        assert.ok(Date.now() < deadline, `no refusal explained; console: ${JSON.stringify(seen.warnings)}`)
        await sleep(100)
      }
      assert.ok(refusal().includes(new URL(hostB.url).origin), refusal())
      assert.ok(refusal().includes(`/dashboard/#/widgets/${widget.id}`), refusal())
      // The explained refusal is the widget's last step (it gives up after it), so what it
      // did not do can be checked now, without waiting for time to pass.
      assert.ok(seen.requests.some((r) => r.url.endsWith(`/v1/widgets/${widget.id}/config`)), 'config was not requested')
      assert.equal(await launcherOf(page).count(), 0)
      assert.equal(await page.locator('[data-gatehouse-widget]').count(), 0)
      assert.equal(sessionRequests(seen).length, 0)
      await page.locator('#host-button').click()
      assert.equal(await page.locator('#host-button').textContent(), 'Host button clicked')
      assert.deepEqual(seen.errors, [], 'no errors thrown into the host page')
    } finally {
      await context.close()
    }
  })
})
