// Multi-factor authentication (TOTP) with the unmodified supabase-js client against a real
// `gatehouse serve`: enrol, challenge, verify with codes computed by an independent TOTP
// library (otpauth), the assurance level, replay refused, unenrol.
//
// Run: cd tests/clients/js && npm ci && node --test mfa.test.mjs

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'

import { createClient } from '@supabase/supabase-js'
import * as OTPAuth from 'otpauth'
import WebSocket from 'ws'

import { startGatehouse, stopGatehouse } from '../harness.mjs'

const PASSWORD = 'correct-horse-42'
let server

before(async () => {
  server = await startGatehouse({
    env: {
      GATEHOUSE_AUTOCONFIRM: 'true',
      GATEHOUSE_MFA_ENCRYPTION_KEY: 'a client-test key of at least 32 characters',
    },
  })
})

after(async () => {
  await stopGatehouse(server)
})

function newClient() {
  return createClient(server.url, server.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
  })
}

const show = (x) => JSON.stringify(x, null, 1)

function totpOf(secret) {
  return new OTPAuth.TOTP({
    secret: OTPAuth.Secret.fromBase32(secret),
    algorithm: 'SHA1',
    digits: 6,
    period: 30,
  })
}

function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'))
}

async function signedUp() {
  const email = `mfa-${randomUUID()}@example.com`
  const client = newClient()
  const { data, error } = await client.auth.signUp({ email, password: PASSWORD })
  assert.equal(error, null, show(error))
  assert.ok(data.session)
  return { email, client }
}

test('enrol, challenge and verify a TOTP factor, then the session is aal2', async () => {
  const { email, client } = await signedUp()

  let { data: aal } = await client.auth.mfa.getAuthenticatorAssuranceLevel()
  assert.deepEqual([aal.currentLevel, aal.nextLevel], ['aal1', 'aal1'])

  const { data: enrolled, error } = await client.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone' })
  assert.equal(error, null, show(error))
  assert.equal(enrolled.type, 'totp')
  assert.equal(enrolled.friendly_name, 'phone')
  assert.match(enrolled.totp.qr_code, /^data:image\/svg\+xml;utf-8,.*<svg/s)
  assert.match(enrolled.totp.uri, /^otpauth:\/\/totp\//)
  const parsed = OTPAuth.URI.parse(enrolled.totp.uri)
  assert.equal(parsed.secret.base32, enrolled.totp.secret)
  assert.equal(parsed.label, email)
  const totp = totpOf(enrolled.totp.secret)

  const { data: listed } = await client.auth.mfa.listFactors()
  assert.equal(listed.all.length, 1)
  assert.equal(listed.all[0].status, 'unverified')
  assert.equal(listed.totp.length, 0, 'only verified factors are listed as totp')

  const { data: challenge, error: cErr } = await client.auth.mfa.challenge({ factorId: enrolled.id })
  assert.equal(cErr, null, show(cErr))
  assert.ok(challenge.expires_at > Date.now() / 1000)

  const code = totp.generate()
  const { data: verified, error: vErr } = await client.auth.mfa.verify({
    factorId: enrolled.id,
    challengeId: challenge.id,
    code,
  })
  assert.equal(vErr, null, show(vErr))
  const claims = claimsOf(verified.access_token)
  assert.equal(claims.aal, 'aal2')
  assert.deepEqual(claims.amr.map((a) => a.method), ['totp', 'password'])

  ;({ data: aal } = await client.auth.mfa.getAuthenticatorAssuranceLevel())
  assert.deepEqual([aal.currentLevel, aal.nextLevel], ['aal2', 'aal2'])
  assert.equal(aal.currentAuthenticationMethods[0].method, 'totp')

  // The same code again, on a new challenge: refused as a replay.
  const { data: again } = await client.auth.mfa.challenge({ factorId: enrolled.id })
  const { error: replay } = await client.auth.mfa.verify({ factorId: enrolled.id, challengeId: again.id, code })
  assert.ok(replay, 'a replayed code was accepted')
  assert.equal(replay.code, 'mfa_verification_failed')
  assert.equal(replay.status, 422)

  // A fresh password sign-in is aal1 with aal2 reachable.
  const other = newClient()
  await other.auth.signInWithPassword({ email, password: PASSWORD })
  ;({ data: aal } = await other.auth.mfa.getAuthenticatorAssuranceLevel())
  assert.deepEqual([aal.currentLevel, aal.nextLevel], ['aal1', 'aal2'])
  // ... and cannot remove the verified factor.
  const { error: weak } = await other.auth.mfa.unenroll({ factorId: enrolled.id })
  assert.equal(weak?.code, 'insufficient_aal')

  // A refresh keeps aal2.
  const { data: refreshed, error: rErr } = await client.auth.refreshSession()
  assert.equal(rErr, null, show(rErr))
  assert.equal(claimsOf(refreshed.session.access_token).aal, 'aal2')

  // Unenrol from the aal2 session.
  const { data: gone, error: uErr } = await client.auth.mfa.unenroll({ factorId: enrolled.id })
  assert.equal(uErr, null, show(uErr))
  assert.equal(gone.id, enrolled.id)
  const { data: after } = await client.auth.mfa.listFactors()
  assert.equal(after.all.length, 0)
})

test('challengeAndVerify works, and a wrong code is refused with GoTrue’s error', async () => {
  const { client } = await signedUp()
  const { data: enrolled } = await client.auth.mfa.enroll({ factorType: 'totp' })
  const totp = totpOf(enrolled.totp.secret)
  const right = totp.generate()
  const wrong = right === '000000' ? '111111' : '000000'
  const { data: c } = await client.auth.mfa.challenge({ factorId: enrolled.id })
  const { error } = await client.auth.mfa.verify({ factorId: enrolled.id, challengeId: c.id, code: wrong })
  assert.equal(error?.code, 'mfa_verification_failed')
  const { data, error: err2 } = await client.auth.mfa.challengeAndVerify({ factorId: enrolled.id, code: right })
  assert.equal(err2, null, show(err2))
  assert.equal(claimsOf(data.access_token).aal, 'aal2')
})
