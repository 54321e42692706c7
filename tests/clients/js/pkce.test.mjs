// PKCE through the unmodified @supabase/supabase-js client (flowType: 'pkce') against a
// real `gatehouse serve` sending through a real SMTP conversation (smtp_sink.mjs): signUp's
// confirmation, signInWithOtp and resetPasswordForEmail each land with ?code=, which
// exchangeCodeForSession trades for a session with the verifier the client kept.

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

// Each client keeps its own verifier in its own storage, as a browser tab would.
function pkceClient() {
  const store = new Map()
  return createClient(server.url, server.key, {
    auth: {
      flowType: 'pkce',
      persistSession: true,
      autoRefreshToken: false,
      detectSessionInUrl: false,
      storage: {
        getItem: (k) => (store.has(k) ? store.get(k) : null),
        setItem: (k, v) => void store.set(k, v),
        removeItem: (k) => void store.delete(k),
      },
    },
    ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
  })
}

const uniqueEmail = () => `pkce-${randomUUID()}@example.com`
const show = (x) => JSON.stringify(x, null, 1)

// Follows an emailed link as a browser does; returns the 303 Location as a URL.
async function followLink(link) {
  const res = await fetch(link, { redirect: 'manual' })
  assert.equal(res.status, 303, `the link answers 303: ${res.status}`)
  return new URL(res.headers.get('location'))
}

before(async () => {
  sink = await startSmtpSink()
  server = await startGatehouse({
    tmpPrefix: 'gatehouse-js-pkce-',
    env: {
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

describe('PKCE (supabase-js flowType pkce, real SMTP)', () => {
  test('signUp: the confirmation link lands with ?code=, exchanged once for a session', async () => {
    const email = uniqueEmail()
    const client = pkceClient()
    const { data, error } = await client.auth.signUp({
      email,
      password: PASSWORD,
      options: { emailRedirectTo: 'http://localhost:3000/welcome' },
    })
    assert.equal(error, null, show(error))
    assert.equal(data.session, null)
    const [mail] = await sink.waitFor(email)
    assert.match(mail.link, /token=pkce_/)
    const landing = await followLink(mail.link)
    assert.equal(landing.origin + landing.pathname, 'http://localhost:3000/welcome')
    const code = landing.searchParams.get('code')
    assert.ok(code, `?code= on ${landing}`)
    assert.equal(landing.hash, '', 'no session in the fragment')

    const exchanged = await client.auth.exchangeCodeForSession(code)
    assert.equal(exchanged.error, null, show(exchanged.error))
    assert.equal(exchanged.data.user.email, email)
    assert.ok(exchanged.data.user.email_confirmed_at)
    const { data: u } = await client.auth.getUser()
    assert.equal(u.user.email, email)

    // A second client with the same code but no (or another) verifier is refused.
    const other = pkceClient()
    await other.auth.signInWithOtp({ email }) // gives it a verifier of its own
    const again = await other.auth.exchangeCodeForSession(code)
    assert.equal(again.error?.code, 'flow_state_not_found', show(again.error))
  })

  test('signInWithOtp: link with ?code=; the wrong verifier is refused', async () => {
    const email = uniqueEmail()
    const client = pkceClient()
    assert.equal((await client.auth.signInWithOtp({ email })).error, null)
    const [mail] = await sink.waitFor(email)
    const code = (await followLink(mail.link)).searchParams.get('code')
    assert.ok(code)
    // Another client's verifier does not open it (and uses the code up).
    const thief = pkceClient()
    await thief.auth.signInWithOtp({ email: uniqueEmail() })
    const stolen = await thief.auth.exchangeCodeForSession(code)
    assert.equal(stolen.error?.code, 'bad_code_verifier', show(stolen.error))

    assert.equal((await client.auth.signInWithOtp({ email })).error, null)
    const second = (await sink.waitFor(email, 2))[1]
    const code2 = (await followLink(second.link)).searchParams.get('code')
    const { data, error } = await client.auth.exchangeCodeForSession(code2)
    assert.equal(error, null, show(error))
    assert.equal(data.session.user.email, email)
    assert.ok(data.session.refresh_token)
  })

  test('resetPasswordForEmail: the code opens a recovery session that sets a new password', async () => {
    const email = uniqueEmail()
    const first = pkceClient()
    assert.equal((await first.auth.signUp({ email, password: PASSWORD })).error, null)
    const [confirm] = await sink.waitFor(email)
    assert.equal((await first.auth.exchangeCodeForSession((await followLink(confirm.link)).searchParams.get('code'))).error, null)

    const client = pkceClient()
    const sent = await client.auth.resetPasswordForEmail(email, { redirectTo: 'http://localhost:3000/reset' })
    assert.equal(sent.error, null, show(sent.error))
    const mail = (await sink.waitFor(email, 2))[1]
    const landing = await followLink(mail.link)
    assert.equal(landing.pathname, '/reset')
    const { data, error } = await client.auth.exchangeCodeForSession(landing.searchParams.get('code'))
    assert.equal(error, null, show(error))
    assert.equal(data.redirectType, 'recovery', 'the client remembers it asked for a recovery')
    const changed = await client.auth.updateUser({ password: 'a-brand-new-pw-7' })
    assert.equal(changed.error, null, show(changed.error))
    const signIn = await pkceClient().auth.signInWithPassword({ email, password: 'a-brand-new-pw-7' })
    assert.equal(signIn.error, null, show(signIn.error))
  })

  test('a used PKCE link lands with the error in the query', async () => {
    const email = uniqueEmail()
    const client = pkceClient()
    assert.equal((await client.auth.signInWithOtp({ email })).error, null)
    const [mail] = await sink.waitFor(email)
    await followLink(mail.link)
    const landing = await followLink(mail.link)
    assert.equal(landing.searchParams.get('error_code'), 'otp_expired')
    assert.equal(landing.searchParams.get('code'), null)
  })
})
