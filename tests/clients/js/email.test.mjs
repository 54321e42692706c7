// Email flows through the unmodified @supabase/supabase-js client against a real
// `gatehouse serve` that sends through a real SMTP conversation (smtp_sink.mjs):
// sign-up confirmation, signInWithOtp (link and code), resetPasswordForEmail.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'

import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

import { startGatehouse, stopGatehouse } from '../harness.mjs'
import { startSmtpSink } from './smtp_sink.mjs'

const PASSWORD = 'correct-horse-42'

let server
let sink

function newClient() {
  return createClient(server.url, server.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
  })
}

const uniqueEmail = () => `mail-${randomUUID()}@example.com`
const show = (x) => JSON.stringify(x, null, 1)

// Follows an emailed link over HTTP the way a browser does; returns the 303 Location.
async function followLink(link) {
  const res = await fetch(link, { redirect: 'manual' })
  assert.equal(res.status, 303, `the link answers 303: ${res.status}`)
  return res.headers.get('location')
}

const fragment = (location) => Object.fromEntries(new URLSearchParams(location.split('#')[1] || ''))

before(async () => {
  sink = await startSmtpSink()
  server = await startGatehouse({
    tmpPrefix: 'gatehouse-js-email-',
    env: {
      // Confirmation on, mails through the sink.
      GATEHOUSE_AUTOCONFIRM: 'false',
      GATEHOUSE_SMTP_URL: sink.url,
      GATEHOUSE_REDIRECT_ALLOWLIST: 'http://localhost:3000/**',
      GATEHOUSE_MAIL_MIN_INTERVAL_SECONDS: '0',
      GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
      GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
      GATEHOUSE_RATE_LIMIT_MAGIC_LINK: '1000/60s',
      GATEHOUSE_RATE_LIMIT_VERIFY: '1000/60s',
    },
  })
})

after(async () => {
  await stopGatehouse(server)
  await sink?.close()
})

describe('email flows (supabase-js, real SMTP)', () => {
  test('signUp sends a confirmation mail; its link confirms and signs in', async () => {
    const email = uniqueEmail()
    const client = newClient()
    const { data, error } = await client.auth.signUp({
      email,
      password: PASSWORD,
      options: { emailRedirectTo: 'http://localhost:3000/welcome' },
    })
    assert.equal(error, null, show(error))
    assert.equal(data.session, null, 'no session before confirmation')
    assert.equal(data.user.email, email)
    const early = await newClient().auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(early.error?.code, 'email_not_confirmed')
    const [mail] = await sink.waitFor(email)
    assert.equal(mail.subject, 'Confirm your email address')
    const location = await followLink(mail.link)
    assert.ok(location.startsWith('http://localhost:3000/welcome#'), location)
    const f = fragment(location)
    assert.equal(f.type, 'signup')
    assert.equal(f.token_type, 'bearer')
    const linked = newClient()
    const set = await linked.auth.setSession({ access_token: f.access_token, refresh_token: f.refresh_token })
    assert.equal(set.error, null, show(set.error))
    assert.equal(set.data.user.email, email)
    assert.ok(set.data.user.email_confirmed_at)
    const { error: signInError } = await newClient().auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(signInError, null, 'confirmed users sign in')
  })

  test('signInWithOtp mails a link and a code; each gives a session', async () => {
    const email = uniqueEmail()
    const client = newClient()
    const sent = await client.auth.signInWithOtp({ email })
    assert.equal(sent.error, null, show(sent.error))
    const [first] = await sink.waitFor(email, 1)
    assert.match(first.code, /^\d{6}$/)
    const { data, error } = await client.auth.verifyOtp({ email, token: first.code, type: 'email' })
    assert.equal(error, null, show(error))
    assert.ok(data.session?.access_token)
    assert.equal(data.user.email, email)
    const again = await newClient().auth.verifyOtp({ email, token: first.code, type: 'email' })
    assert.equal(again.error?.code, 'otp_expired', 'a code works once')

    assert.equal((await newClient().auth.signInWithOtp({ email })).error, null)
    const second = (await sink.waitFor(email, 2))[1]
    const f = fragment(await followLink(second.link))
    assert.ok(f.access_token, show(f))
    assert.equal(f.type, 'magiclink')
    const viaLink = newClient()
    const set = await viaLink.auth.setSession({ access_token: f.access_token, refresh_token: f.refresh_token })
    assert.equal(set.error, null, show(set.error))
    const { data: u } = await viaLink.auth.getUser()
    assert.equal(u.user.email, email)
  })

  test('signInWithOtp with shouldCreateUser false answers alike for an unknown address', async () => {
    const { data, error } = await newClient().auth.signInWithOtp({
      email: uniqueEmail(),
      options: { shouldCreateUser: false },
    })
    assert.equal(error, null, show(error))
    assert.equal(data.session, null)
  })

  test('resetPasswordForEmail, verifyOtp recovery, updateUser, sign in with the new password', async () => {
    const email = uniqueEmail()
    assert.equal((await newClient().auth.signInWithOtp({ email })).error, null)
    const [otp] = await sink.waitFor(email, 1)
    assert.equal((await newClient().auth.verifyOtp({ email, token: otp.code, type: 'email' })).error, null)

    const client = newClient()
    const reset = await client.auth.resetPasswordForEmail(email, { redirectTo: 'http://localhost:3000/reset' })
    assert.equal(reset.error, null, show(reset.error))
    const mail = (await sink.waitFor(email, 2))[1]
    assert.equal(mail.subject, 'Reset your password')
    const { data, error } = await client.auth.verifyOtp({ email, token: mail.code, type: 'recovery' })
    assert.equal(error, null, show(error))
    assert.ok(data.session)
    const upd = await client.auth.updateUser({ password: 'a-brand-new-password-7' })
    assert.equal(upd.error, null, show(upd.error))
    const { error: old } = await newClient().auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(old?.code, 'invalid_credentials')
    const { data: s, error: e } = await newClient().auth.signInWithPassword({ email, password: 'a-brand-new-password-7' })
    assert.equal(e, null, show(e))
    assert.ok(s.session.access_token)
  })

  // Pre-hijacking: someone signs up the owner's address with a password of theirs. Whichever
  // signs up first, once the owner follows the link of their own sign-up only the owner's
  // password signs in, and the other sign-up's link is dead.
  for (const squatterFirst of [true, false]) {
    test(`a squatter who signs up ${squatterFirst ? 'before' : 'after'} the owner never signs in`, async () => {
      const email = uniqueEmail()
      const squatter = 'squatters-own-password-77'
      const owner = 'the-owners-own-password-42'
      const order = squatterFirst ? [squatter, owner] : [owner, squatter]
      for (const [i, password] of order.entries()) {
        const { error } = await newClient().auth.signUp({ email, password })
        assert.equal(error, null, show(error))
        await sink.waitFor(email, i + 1)
      }
      const mails = await sink.waitFor(email, 2)
      const ownMail = mails[order.indexOf(owner)]
      const theirMail = mails[order.indexOf(squatter)]
      assert.match(ownMail.text, /Someone signed up with .* at \d{4}-\d\d-\d\dT/)
      const f = fragment(await followLink(ownMail.link))
      assert.equal(f.type, 'signup', show(f))
      const theirs = await newClient().auth.signInWithPassword({ email, password: squatter })
      assert.equal(theirs.error?.code, 'invalid_credentials', show(theirs.error))
      const mine = await newClient().auth.signInWithPassword({ email, password: owner })
      assert.equal(mine.error, null, show(mine.error))
      const late = fragment(await followLink(theirMail.link))
      assert.equal(late.error_code, 'otp_expired', show(late))
      const again = await newClient().auth.signInWithPassword({ email, password: squatter })
      assert.equal(again.error?.code, 'invalid_credentials')
    })
  }
})
