// The captcha hook through the unmodified @supabase/supabase-js client (`options.captchaToken`),
// against a node:http stand-in for the provider's verify endpoint (Turnstile's form and answer).

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import http from 'node:http'

import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

import { startGatehouse, stopGatehouse } from '../harness.mjs'

const PASSWORD = 'correct-horse-42'
const CAPTCHA_SECRET = 'captcha-secret-for-js'

let server
let verifier
const seen = []

const client = () =>
  createClient(server.url, server.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
  })
const uniqueEmail = () => `captcha-${randomUUID()}@example.com`
const show = (x) => JSON.stringify(x, null, 1)

before(async () => {
  verifier = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      const form = Object.fromEntries(new URLSearchParams(body))
      seen.push({ path: req.url, type: req.headers['content-type'], form })
      const ok = form.secret === CAPTCHA_SECRET && form.response === 'good-token'
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(ok ? { success: true } : { success: false, 'error-codes': ['invalid-input-response'] }))
    })
  })
  await new Promise((r) => verifier.listen(0, '127.0.0.1', r))
  server = await startGatehouse({
    tmpPrefix: 'gatehouse-js-captcha-',
    env: {
      GATEHOUSE_AUTOCONFIRM: 'true',
      GATEHOUSE_CAPTCHA_PROVIDER: 'turnstile',
      GATEHOUSE_CAPTCHA_SECRET: CAPTCHA_SECRET,
      GATEHOUSE_CAPTCHA_VERIFY_URL: `http://127.0.0.1:${verifier.address().port}/siteverify`,
      GATEHOUSE_MAIL_MIN_INTERVAL_SECONDS: '0',
      GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
      GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
      GATEHOUSE_RATE_LIMIT_MAGIC_LINK: '1000/60s',
    },
  })
})

after(async () => {
  await stopGatehouse(server)
  await new Promise((r) => verifier.close(r))
})

describe('captcha (supabase-js options.captchaToken)', () => {
  test('signUp and signInWithPassword need a token the provider accepts', async () => {
    const email = uniqueEmail()
    const missing = await client().auth.signUp({ email, password: PASSWORD })
    assert.equal(missing.error?.code, 'captcha_failed', show(missing.error))
    assert.equal(missing.error?.status, 400)
    const wrong = await client().auth.signUp({ email, password: PASSWORD, options: { captchaToken: 'bad-token' } })
    assert.equal(wrong.error?.code, 'captcha_failed')
    assert.match(wrong.error.message, /invalid-input-response/)
    const ok = await client().auth.signUp({ email, password: PASSWORD, options: { captchaToken: 'good-token' } })
    assert.equal(ok.error, null, show(ok.error))
    assert.ok(ok.data.session)
    const last = seen.at(-1)
    assert.equal(last.path, '/siteverify')
    assert.equal(last.type, 'application/x-www-form-urlencoded')
    assert.deepEqual(last.form, { secret: CAPTCHA_SECRET, response: 'good-token', remoteip: '127.0.0.1' })

    const noToken = await client().auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(noToken.error?.code, 'captcha_failed')
    const signedIn = await client().auth.signInWithPassword({ email, password: PASSWORD, options: { captchaToken: 'good-token' } })
    assert.equal(signedIn.error, null, show(signedIn.error))
    // A refresh needs no captcha.
    const refreshed = await client().auth.refreshSession({ refresh_token: signedIn.data.session.refresh_token })
    assert.equal(refreshed.error, null, show(refreshed.error))
  })

  test('signInWithOtp and resetPasswordForEmail need one too', async () => {
    const email = uniqueEmail()
    const otp = await client().auth.signInWithOtp({ email })
    assert.equal(otp.error?.code, 'captcha_failed')
    const otpOk = await client().auth.signInWithOtp({ email, options: { captchaToken: 'good-token' } })
    assert.equal(otpOk.error, null, show(otpOk.error))
    const reset = await client().auth.resetPasswordForEmail(email)
    assert.equal(reset.error?.code, 'captcha_failed')
    const resetOk = await client().auth.resetPasswordForEmail(email, { captchaToken: 'good-token' })
    assert.equal(resetOk.error, null, show(resetOk.error))
  })
})
