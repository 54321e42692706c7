// signInAnonymously through the unmodified supabase-js client. Off (the default): GoTrue's
// answer, 422 anonymous_provider_disabled, and no session. On (GATEHOUSE_ANONYMOUS_SIGN_INS):
// an anonymous user whose token says is_anonymous, converted by updateUser({ email }) and the
// confirmation mailed through a real SMTP conversation (smtp_sink.mjs).
//
// Run: cd tests/clients/js && npm ci && node --test anonymous.test.mjs

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'

import { createClient } from '@supabase/supabase-js'
import { decodeJwt } from 'jose'
import WebSocket from 'ws'

import { startGatehouse, stopGatehouse } from '../harness.mjs'
import { startSmtpSink } from './smtp_sink.mjs'

let off
let on
let sink

function clientOf(server) {
  return createClient(server.url, server.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
  })
}

const show = (x) => JSON.stringify(x, null, 1)
const settings = async (server) =>
  (await fetch(`${server.url}/auth/v1/settings`, { headers: { apikey: server.key } })).json()

before(async () => {
  sink = await startSmtpSink()
  off = await startGatehouse({ env: { GATEHOUSE_AUTOCONFIRM: 'true' } })
  on = await startGatehouse({
    tmpPrefix: 'gatehouse-js-anonymous-',
    env: {
      GATEHOUSE_ANONYMOUS_SIGN_INS: 'true',
      GATEHOUSE_AUTOCONFIRM: 'false',
      GATEHOUSE_SMTP_URL: sink.url,
      GATEHOUSE_MAIL_MIN_INTERVAL_SECONDS: '0',
      GATEHOUSE_RATE_LIMIT_MAGIC_LINK: '1000/60s',
      GATEHOUSE_RATE_LIMIT_VERIFY: '1000/60s',
      GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
    },
  })
})

after(async () => {
  await stopGatehouse(off)
  await stopGatehouse(on)
  await sink?.close()
})

test('off: signInAnonymously answers anonymous_provider_disabled and signs nobody in', async () => {
  const client = clientOf(off)
  const { data, error } = await client.auth.signInAnonymously({ options: { data: { theme: 'dark' } } })
  assert.equal(error?.status, 422)
  assert.equal(error.code, 'anonymous_provider_disabled')
  assert.equal(error.message, 'Anonymous sign-ins are disabled')
  assert.equal(data.session, null)
  assert.equal((await client.auth.getSession()).data.session, null)
  assert.equal((await settings(off)).external.anonymous_users, false)
})

describe('on (anonymous_sign_ins)', () => {
  test('signInAnonymously signs in a user without an address whose token says so', async () => {
    assert.equal((await settings(on)).external.anonymous_users, true)
    const client = clientOf(on)
    const { data, error } = await client.auth.signInAnonymously({ options: { data: { theme: 'dark' } } })
    assert.equal(error, null, show(error))
    assert.equal(data.user.is_anonymous, true)
    assert.equal(data.user.user_metadata.theme, 'dark')
    const claims = decodeJwt(data.session.access_token)
    assert.equal(claims.is_anonymous, true)
    assert.equal(claims.role, 'authenticated')
    assert.equal(claims.amr[0].method, 'anonymous')
    const { data: got, error: getError } = await client.auth.getUser()
    assert.equal(getError, null, show(getError))
    assert.equal(got.user.is_anonymous, true)
    assert.equal(got.user.id, data.user.id)
    // A refresh keeps the user anonymous.
    const refreshed = await client.auth.refreshSession()
    assert.equal(refreshed.error, null, show(refreshed.error))
    assert.equal(decodeJwt(refreshed.data.session.access_token).is_anonymous, true)
    // A password alone is refused, as GoTrue refuses it.
    const pw = await client.auth.updateUser({ password: 'an anonymous password 7' })
    assert.equal(pw.error?.status, 422)
    assert.equal(pw.error.code, 'validation_failed')
  })

  test('updateUser({ email }) and the mailed confirmation make the user permanent', async () => {
    const client = clientOf(on)
    const signed = await client.auth.signInAnonymously({ options: { data: { cart: 3 } } })
    assert.equal(signed.error, null, show(signed.error))
    const id = signed.data.user.id
    const email = `anon-${randomUUID()}@example.com`
    const asked = await client.auth.updateUser({ email })
    assert.equal(asked.error, null, show(asked.error))
    assert.equal(asked.data.user.new_email, email)
    assert.equal(asked.data.user.is_anonymous, true, 'anonymous until the address is confirmed')
    // One mail, to the new address (an anonymous user has no current one).
    const [mail] = await sink.waitFor(email)
    const tokenHash = new URL(mail.link).searchParams.get('token')
    const verified = await client.auth.verifyOtp({ token_hash: tokenHash, type: 'email_change' })
    assert.equal(verified.error, null, show(verified.error))
    const { data: got } = await client.auth.getUser()
    assert.equal(got.user.id, id)
    assert.equal(got.user.is_anonymous, false)
    assert.equal(got.user.email, email)
    assert.equal(got.user.user_metadata.cart, 3)
    assert.equal(got.user.identities[0].provider, 'email')
    const refreshed = await client.auth.refreshSession()
    assert.equal(refreshed.error, null, show(refreshed.error))
    assert.equal(decodeJwt(refreshed.data.session.access_token).is_anonymous, false)
    // Now a permanent user: a password can be set and signs in.
    const password = 'a converted password 9'
    const set = await client.auth.updateUser({ password })
    assert.equal(set.error, null, show(set.error))
    const again = await clientOf(on).auth.signInWithPassword({ email, password })
    assert.equal(again.error, null, show(again.error))
    assert.equal(again.data.user.id, id)
    assert.equal(again.data.user.is_anonymous, false)
  })
})
