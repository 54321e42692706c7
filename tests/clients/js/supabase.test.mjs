// Real-client compatibility tests: the unmodified @supabase/supabase-js client
// against a real `gatehouse serve` process over HTTP.
//
// Run: cd tests/clients/js && npm ci && npm test
// Env: GATEHOUSE_BIN (default <repo>/target/debug/gatehouse),
//      GATEHOUSE_CLIENT_TEST_DATABASE_URL (use PostgreSQL instead of a temp SQLite file),
//      GATEHOUSE_CLIENT_TEST_TRACE=1 (print every HTTP exchange the clients make).

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'

import { createClient, isAuthApiError, isAuthWeakPasswordError } from '@supabase/supabase-js'
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import WebSocket from 'ws'

import { startGatehouse, stopGatehouse } from '../harness.mjs'

const TRACE = !!process.env.GATEHOUSE_CLIENT_TEST_TRACE
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const PASSWORD = 'correct-horse-42'

let server // { proc, url, key, output(), tmp }

const authKind = (h) => (!h ? 'none' : h.split('.').length === 3 ? 'jwt' : 'key')

// A fetch that optionally prints every exchange, so a failing case can be
// reported with its request and response.
function tracingFetch(label) {
  return async (input, init = {}) => {
    const res = await fetch(input, init)
    if (TRACE) {
      const body = await res.clone().text()
      const hdrs = new Headers(init.headers || {})
      process.stderr.write(
        `[${label}] ${init.method || 'GET'} ${typeof input === 'string' ? input : input.url}\n` +
          `  req headers: apikey=${hdrs.get('apikey') ? 'set' : 'none'} ` +
          `authorization=${authKind(hdrs.get('authorization'))} ` +
          `x-supabase-api-version=${hdrs.get('x-supabase-api-version')}\n` +
          (init.body ? `  req body: ${init.body}\n` : '') +
          `  -> ${res.status} x-supabase-api-version=${res.headers.get('x-supabase-api-version')}\n` +
          `  res body: ${body}\n`,
      )
    }
    return res
  }
}

function newClient(label = 'client') {
  return createClient(server.url, server.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { fetch: tracingFetch(label) },
    // Node 20 has no global WebSocket; supabase-js's realtime client refuses to
    // construct without one (it is never connected in these tests).
    ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
  })
}

const uniqueEmail = () => `user-${randomUUID()}@example.com`
const show = (x) => JSON.stringify(x, null, 1)

async function signUpUser(opts = {}) {
  const email = uniqueEmail()
  const client = newClient('signup')
  const { data, error } = await client.auth.signUp({ email, password: PASSWORD, ...opts })
  assert.equal(error, null, `signUp failed: ${show(error)}`)
  assert.ok(data.session, `signUp returned no session: ${show(data)}`)
  return { email, client, session: data.session, user: data.user }
}

async function signIn(email, password = PASSWORD, label = 'signin') {
  const client = newClient(label)
  const { data, error } = await client.auth.signInWithPassword({ email, password })
  assert.equal(error, null, `signInWithPassword failed: ${show(error)}`)
  assert.ok(data.session?.refresh_token, `no session: ${show(data)}`)
  return { client, session: data.session }
}

// Refresh with a brand-new client each time, so no client-side cache
// (supabase-js keeps a short failure cooldown per refresh token) is involved.
async function refreshWithFreshClient(refresh_token) {
  return newClient('refresh').auth.refreshSession({ refresh_token })
}

function assertApiError(error, { code, status }, what) {
  assert.ok(error, `${what}: expected an error, got none`)
  assert.equal(error.code, code, `${what}: wrong error code: ${show(error)}`)
  if (status !== undefined) assert.equal(error.status, status, `${what}: wrong status: ${show(error)}`)
}

before(async () => {
  server = await startGatehouse({
    tmpPrefix: 'gatehouse-js-',
    env: {
      GATEHOUSE_AUTOCONFIRM: 'true',
      GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
      GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
      GATEHOUSE_RATE_LIMIT_TOKEN_REFRESH: '1000/60s',
    },
  })
})

after(async () => {
  await stopGatehouse(server)
})

describe('sign up', () => {
  test('signUp returns a session and the user (autoconfirm on)', async () => {
    const email = uniqueEmail()
    const client = newClient('signup')
    const { data, error } = await client.auth.signUp({
      email,
      password: PASSWORD,
      options: { data: { display_name: 'Ada' } },
    })
    assert.equal(error, null, show(error))
    const { session, user } = data
    assert.ok(session, `no session: ${show(data)}`)
    assert.equal(typeof session.access_token, 'string')
    assert.equal(session.access_token.split('.').length, 3, 'access_token is not a JWT')
    assert.equal(typeof session.refresh_token, 'string')
    assert.ok(session.refresh_token.length > 0)
    assert.equal(session.token_type, 'bearer')
    assert.equal(typeof session.expires_in, 'number')
    assert.ok(session.expires_in > 0)
    assert.equal(typeof session.expires_at, 'number')
    const now = Math.floor(Date.now() / 1000)
    assert.ok(Math.abs(session.expires_at - (now + session.expires_in)) < 60, show(session))
    assert.equal(user.email, email)
    assert.match(user.id, UUID_RE)
    assert.equal(session.user.id, user.id)
    assert.equal(session.user.email, email)
    assert.equal(user.aud, 'authenticated')
    assert.ok(user.email_confirmed_at, `autoconfirm should confirm the email: ${show(user)}`)
    assert.equal(user.user_metadata.display_name, 'Ada')
    // the client stored it in memory
    const { data: current } = await client.auth.getSession()
    assert.equal(current.session?.access_token, session.access_token)
  })

  test('signUp with an existing email fails with user_already_exists (422)', async () => {
    const { email } = await signUpUser()
    const { data, error } = await newClient('dup').auth.signUp({ email, password: 'another-pass-99' })
    assertApiError(error, { code: 'user_already_exists', status: 422 }, 'duplicate signUp')
    assert.ok(isAuthApiError(error), `expected AuthApiError: ${error?.name}`)
    assert.equal(data.session, null)
    assert.equal(data.user, null)
  })

  test('signUp with a 3-char password fails with weak_password (422)', async () => {
    const { data, error } = await newClient('weak').auth.signUp({ email: uniqueEmail(), password: 'abc' })
    assert.ok(error, 'expected an error')
    assert.ok(isAuthWeakPasswordError(error), `expected AuthWeakPasswordError, got ${error.name}: ${show(error)}`)
    assert.equal(error.name, 'AuthWeakPasswordError')
    assert.equal(error.code, 'weak_password')
    assert.equal(error.status, 422)
    assert.ok(Array.isArray(error.reasons), show(error))
    assert.equal(data.session, null)
  })
})

describe('sign in', () => {
  test('signInWithPassword with the right password returns a session', async () => {
    const { email, user } = await signUpUser()
    const client = newClient('signin')
    const { data, error } = await client.auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(error, null, show(error))
    assert.ok(data.session.access_token)
    assert.ok(data.session.refresh_token)
    assert.equal(data.session.token_type, 'bearer')
    assert.equal(data.user.id, user.id)
    assert.equal(data.user.email, email)
    assert.equal(data.session.user.id, user.id)
  })

  test('wrong password and unknown email both give invalid_credentials (400) with the same message', async () => {
    const { email } = await signUpUser()
    const wrong = await newClient('wrongpw').auth.signInWithPassword({ email, password: 'not-the-password' })
    assertApiError(wrong.error, { code: 'invalid_credentials', status: 400 }, 'wrong password')
    assert.equal(wrong.data.session, null)
    const unknown = await newClient('unknown').auth.signInWithPassword({
      email: uniqueEmail(),
      password: PASSWORD,
    })
    assertApiError(unknown.error, { code: 'invalid_credentials', status: 400 }, 'unknown email')
    assert.equal(unknown.error.message, wrong.error.message)
    assert.ok(wrong.error.message.length > 0)
  })
})

describe('user', () => {
  test('getUser() returns the signed-in user', async () => {
    const { email, user } = await signUpUser()
    const { client } = await signIn(email)
    const { data, error } = await client.auth.getUser()
    assert.equal(error, null, show(error))
    assert.equal(data.user.id, user.id)
    assert.equal(data.user.email, email)
    // and with an explicit JWT on a client that holds no session
    const { session } = await signIn(email)
    const other = await newClient('getuser-jwt').auth.getUser(session.access_token)
    assert.equal(other.error, null, show(other.error))
    assert.equal(other.data.user.id, user.id)
  })

  test('updateUser({ password }) changes the password', async () => {
    const { email } = await signUpUser()
    const { client } = await signIn(email)
    const newPassword = 'brand-new-password-7'
    const { data, error } = await client.auth.updateUser({ password: newPassword })
    assert.equal(error, null, show(error))
    assert.equal(data.user.email, email)

    const ok = await newClient('signin-new').auth.signInWithPassword({ email, password: newPassword })
    assert.equal(ok.error, null, `new password should work: ${show(ok.error)}`)
    assert.ok(ok.data.session?.access_token)

    const old = await newClient('signin-old').auth.signInWithPassword({ email, password: PASSWORD })
    assertApiError(old.error, { code: 'invalid_credentials', status: 400 }, 'old password')
  })

  test('updateUser({ data }) sets user_metadata', async () => {
    const { email } = await signUpUser()
    const { client } = await signIn(email)
    const { data, error } = await client.auth.updateUser({ data: { plan: 'pro' } })
    assert.equal(error, null, show(error))
    assert.equal(data.user.user_metadata.plan, 'pro')
    const again = await client.auth.getUser()
    assert.equal(again.error, null, show(again.error))
    assert.equal(again.data.user.user_metadata.plan, 'pro')
  })
})

describe('refresh', () => {
  test('refreshSession() rotates both tokens', async () => {
    const { email, user } = await signUpUser()
    const { client, session } = await signIn(email)
    const { data, error } = await client.auth.refreshSession()
    assert.equal(error, null, show(error))
    assert.ok(data.session)
    assert.notEqual(data.session.access_token, session.access_token)
    assert.notEqual(data.session.refresh_token, session.refresh_token)
    assert.equal(data.session.user.id, user.id)
    assert.equal(data.user.id, user.id)
    // the new refresh token works in turn
    const next = await refreshWithFreshClient(data.session.refresh_token)
    assert.equal(next.error, null, show(next.error))
    assert.notEqual(next.data.session.refresh_token, data.session.refresh_token)
  })

  test('two concurrent refreshes with the same token both succeed with the same new token', async () => {
    const { email } = await signUpUser()
    const { session } = await signIn(email)
    const [a, b] = await Promise.all([
      newClient('refresh-a').auth.refreshSession({ refresh_token: session.refresh_token }),
      newClient('refresh-b').auth.refreshSession({ refresh_token: session.refresh_token }),
    ])
    assert.equal(a.error, null, `first refresh: ${show(a.error)}`)
    assert.equal(b.error, null, `second refresh: ${show(b.error)}`)
    assert.notEqual(a.data.session.refresh_token, session.refresh_token)
    assert.equal(a.data.session.refresh_token, b.data.session.refresh_token)
    assert.equal(a.data.user.id, b.data.user.id)
  })
})

describe('sign out', () => {
  test("signOut({ scope: 'local' }) ends the session", async () => {
    const { email } = await signUpUser()
    const { client, session } = await signIn(email)
    const { error } = await client.auth.signOut({ scope: 'local' })
    assert.equal(error, null, show(error))
    const { data: local } = await client.auth.getSession()
    assert.equal(local.session, null, 'client should have dropped its session')

    const gu = await newClient('getuser-after-signout').auth.getUser(session.access_token)
    assert.ok(gu.error, 'getUser with the signed-out access token should fail')
    assert.equal(gu.data.user, null)
    // GoTrue answers 403 {code: "session_not_found"}, which auth-js maps to AuthSessionMissingError.
    assert.equal(gu.error.name, 'AuthSessionMissingError', show(gu.error))

    const r = await refreshWithFreshClient(session.refresh_token)
    assertApiError(r.error, { code: 'refresh_token_not_found' }, 'refresh after local signOut')
    assert.equal(r.data.session, null)
  })

  test("signOut({ scope: 'global' }) ends every session of the user", async () => {
    const { email } = await signUpUser()
    const one = await signIn(email, PASSWORD, 'signin-1')
    const two = await signIn(email, PASSWORD, 'signin-2')
    assert.notEqual(one.session.refresh_token, two.session.refresh_token)
    const { error } = await one.client.auth.signOut({ scope: 'global' })
    assert.equal(error, null, show(error))
    for (const [name, s] of [['signing-out session', one.session], ['other session', two.session]]) {
      const r = await refreshWithFreshClient(s.refresh_token)
      assertApiError(r.error, { code: 'refresh_token_not_found' }, `refresh of ${name} after global signOut`)
    }
  })

  test("signOut({ scope: 'others' }) keeps the current session only", async () => {
    const { email } = await signUpUser()
    const current = await signIn(email, PASSWORD, 'signin-current')
    const other = await signIn(email, PASSWORD, 'signin-other')
    const { error } = await current.client.auth.signOut({ scope: 'others' })
    assert.equal(error, null, show(error))
    // 'others' keeps the local session in the client
    const { data: local } = await current.client.auth.getSession()
    assert.equal(local.session?.refresh_token, current.session.refresh_token)

    const mine = await refreshWithFreshClient(current.session.refresh_token)
    assert.equal(mine.error, null, `current session should still refresh: ${show(mine.error)}`)
    assert.ok(mine.data.session.access_token)
    const theirs = await refreshWithFreshClient(other.session.refresh_token)
    assertApiError(theirs.error, { code: 'refresh_token_not_found' }, 'refresh of the other session')
  })
})

describe('access token', () => {
  test('the access token verifies against the JWKS (ES256) and carries the GoTrue claims', async () => {
    const { email, user } = await signUpUser({ options: { data: { plan: 'free' } } })
    const { session } = await signIn(email)

    const jwksUrl = new URL(`${server.url}/auth/v1/.well-known/jwks.json`)
    const raw = await fetch(jwksUrl, { headers: { apikey: server.key } })
    assert.equal(raw.status, 200)
    const jwks = await raw.json()
    assert.ok(Array.isArray(jwks.keys) && jwks.keys.length > 0, show(jwks))
    for (const k of jwks.keys) {
      assert.ok(!('d' in k), 'JWKS must not publish private key material')
      assert.ok(k.kid, `key without kid: ${show(k)}`)
    }

    const header = decodeProtectedHeader(session.access_token)
    assert.equal(header.alg, 'ES256')
    assert.equal(typeof header.kid, 'string')
    assert.ok(header.kid.length > 0)
    const key = jwks.keys.find((k) => k.kid === header.kid)
    assert.ok(key, `kid ${header.kid} not in JWKS`)
    assert.equal(key.kty, 'EC')
    assert.equal(key.crv, 'P-256')

    const JWKS = createRemoteJWKSet(jwksUrl, { headers: { apikey: server.key } })
    const { payload, protectedHeader } = await jwtVerify(session.access_token, JWKS, {
      algorithms: ['ES256'],
      audience: 'authenticated',
    })
    assert.equal(protectedHeader.kid, header.kid)
    assert.equal(typeof payload.iss, 'string')
    assert.ok(payload.iss.startsWith(server.url), `iss ${payload.iss} should be under ${server.url}`)
    assert.equal(payload.sub, user.id)
    assert.ok(payload.aud === 'authenticated' || (Array.isArray(payload.aud) && payload.aud.includes('authenticated')))
    const now = Math.floor(Date.now() / 1000)
    assert.equal(typeof payload.exp, 'number')
    assert.equal(typeof payload.iat, 'number')
    assert.ok(payload.iat <= now + 5 && payload.iat > now - 120, `iat ${payload.iat} now ${now}`)
    assert.ok(payload.exp > now, `exp ${payload.exp} now ${now}`)
    assert.ok(Math.abs(payload.exp - session.expires_at) <= 2, `exp ${payload.exp} vs session.expires_at ${session.expires_at}`)
    assert.equal(payload.email, email)
    assert.equal(payload.role, 'authenticated')
    assert.equal(typeof payload.aal, 'string')
    assert.equal(payload.aal, 'aal1')
    assert.ok(Array.isArray(payload.amr) && payload.amr.length > 0, show(payload.amr))
    assert.equal(payload.amr[0].method, 'password')
    assert.equal(typeof payload.amr[0].timestamp, 'number')
    assert.match(payload.session_id, UUID_RE)
    assert.equal(payload.is_anonymous, false)
    assert.equal(typeof payload.app_metadata, 'object')
    assert.equal(payload.app_metadata.provider, 'email')
    assert.equal(typeof payload.user_metadata, 'object')
    assert.equal(payload.user_metadata.plan, 'free')

    // a tampered token must not verify
    const [h, p] = session.access_token.split('.')
    const forged = `${h}.${p}.${Buffer.from(randomBytes(64)).toString('base64url')}`
    await assert.rejects(jwtVerify(forged, JWKS, { algorithms: ['ES256'] }))
    // ... and, what matters, the server refuses it: GoTrue's 403 bad_jwt on /auth/v1/user,
    // the envelope's 401 (reason malformed) on /v1/me.
    const userRes = await fetch(`${server.url}/auth/v1/user`, {
      headers: { apikey: server.key, authorization: `Bearer ${forged}`, 'x-supabase-api-version': '2024-01-01' },
    })
    assert.equal(userRes.status, 403)
    assert.equal((await userRes.json()).code, 'bad_jwt')
    const me = await fetch(`${server.url}/v1/me`, { headers: { authorization: `Bearer ${forged}` } })
    assert.equal(me.status, 401)
    const refused = await me.json()
    assert.equal(refused.error.code, 'unauthorized')
    assert.equal(refused.error.details.reason, 'malformed')
    // The untouched token still works there, so the refusal is the signature's.
    const ok = await fetch(`${server.url}/v1/me`, { headers: { authorization: `Bearer ${session.access_token}` } })
    assert.equal(ok.status, 200)
  })

  test('different sessions get different session_id claims', async () => {
    const { email } = await signUpUser()
    const a = await signIn(email)
    const b = await signIn(email)
    const JWKS = createRemoteJWKSet(new URL(`${server.url}/auth/v1/.well-known/jwks.json`), {
      headers: { apikey: server.key },
    })
    const pa = (await jwtVerify(a.session.access_token, JWKS)).payload
    const pb = (await jwtVerify(b.session.access_token, JWKS)).payload
    assert.notEqual(pa.session_id, pb.session_id)
    assert.equal(pa.sub, pb.sub)
  })

  test('auth.getClaims() verifies the token via the JWKS', async (t) => {
    const client = newClient('getclaims')
    if (typeof client.auth.getClaims !== 'function') {
      t.skip('getClaims() not in this supabase-js version')
      return
    }
    const { email, user } = await signUpUser()
    const { client: signedIn, session } = await signIn(email)
    const { data, error } = await client.auth.getClaims(session.access_token)
    assert.equal(error, null, show(error))
    assert.equal(data.claims.sub, user.id)
    assert.equal(data.claims.email, email)
    assert.equal(data.claims.role, 'authenticated')
    assert.equal(data.header.alg, 'ES256')
    // without an argument it uses the client's own session
    const own = await signedIn.auth.getClaims()
    assert.equal(own.error, null, show(own.error))
    assert.equal(own.data.claims.session_id, data.claims.session_id)
    // a bad signature is rejected (not silently accepted)
    const [h, p] = session.access_token.split('.')
    const forged = `${h}.${p}.${Buffer.from(randomBytes(64)).toString('base64url')}`
    const bad = await newClient('getclaims-forged').auth.getClaims(forged)
    assert.ok(bad.error, 'forged token must not verify')
    assert.equal(bad.data, null)
    // getClaims verified that locally with the JWKS; the server refuses it too (getUser asks it).
    const viaServer = await newClient('getuser-forged').auth.getUser(forged)
    assert.equal(viaServer.data.user, null)
    assert.equal(viaServer.error?.status, 403, show(viaServer.error))
    assert.equal(viaServer.error?.code, 'bad_jwt', show(viaServer.error))
  })
})
