// resend() and reauthenticate() through the unmodified @supabase/supabase-js client against a
// real `gatehouse serve` (secure_password_change on) sending through a real SMTP
// conversation (smtp_sink.mjs).

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

const uniqueEmail = () => `resend-${randomUUID()}@example.com`
const show = (x) => JSON.stringify(x, null, 1)

async function followLink(link) {
  const res = await fetch(link, { redirect: 'manual' })
  assert.equal(res.status, 303)
  return res.headers.get('location')
}

before(async () => {
  sink = await startSmtpSink()
  server = await startGatehouse({
    tmpPrefix: 'gatehouse-js-resend-',
    env: {
      GATEHOUSE_AUTOCONFIRM: 'false',
      GATEHOUSE_SMTP_URL: sink.url,
      GATEHOUSE_MAIL_MIN_INTERVAL_SECONDS: '0',
      GATEHOUSE_SECURE_PASSWORD_CHANGE: 'true',
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

describe('resend and reauthenticate (supabase-js, real SMTP)', () => {
  test('resend({type: signup}) mails a new confirmation whose link signs in', async () => {
    const email = uniqueEmail()
    const client = newClient()
    assert.equal((await client.auth.signUp({ email, password: PASSWORD })).error, null)
    await sink.waitFor(email)
    const { data, error } = await client.auth.resend({ type: 'signup', email })
    assert.equal(error, null, show(error))
    assert.deepEqual(data, { user: null, session: null })
    const [, resent] = await sink.waitFor(email, 2)
    assert.equal(resent.subject, 'Confirm your email address')
    const location = await followLink(resent.link)
    assert.match(location, /#access_token=/)
    // An unknown address answers the same.
    const unknown = await newClient().auth.resend({ type: 'signup', email: uniqueEmail() })
    assert.equal(unknown.error, null, show(unknown.error))
  })

  test('reauthenticate() mails a nonce; updateUser({password, nonce}) checks it', async () => {
    const email = uniqueEmail()
    const client = newClient()
    assert.equal((await client.auth.signUp({ email, password: PASSWORD })).error, null)
    const [confirm] = await sink.waitFor(email)
    const f = Object.fromEntries(new URLSearchParams((await followLink(confirm.link)).split('#')[1]))
    assert.equal((await client.auth.setSession({ access_token: f.access_token, refresh_token: f.refresh_token })).error, null)

    const sent = await client.auth.reauthenticate()
    assert.equal(sent.error, null, show(sent.error))
    const [, mail] = await sink.waitFor(email, 2)
    assert.equal(mail.subject, 'Confirm it is you')
    assert.match(mail.code, /^\d{6}$/)

    const wrong = await client.auth.updateUser({ password: 'new-password-77', nonce: mail.code === '000000' ? '111111' : '000000' })
    assert.equal(wrong.error?.code, 'reauthentication_not_valid', show(wrong.error))
    const right = await client.auth.updateUser({ password: 'new-password-77', nonce: mail.code })
    assert.equal(right.error, null, show(right.error))
    const signIn = await newClient().auth.signInWithPassword({ email, password: 'new-password-77' })
    assert.equal(signIn.error, null, show(signIn.error))
  })
})
