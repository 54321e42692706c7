// supabase.auth.admin.mfa (listFactors, deleteFactor) through the unmodified supabase-js
// client created with the configured service key, against a real `gatehouse serve`: a user
// enrols and verifies a TOTP factor (codes from otpauth), the admin lists it, deletes it, and
// the user's session is aal1 again at its next refresh. Every call is in the admin log.
//
// Run: cd tests/clients/js && npm ci && node --test admin_mfa.test.mjs

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'

import { createClient } from '@supabase/supabase-js'
import * as OTPAuth from 'otpauth'
import WebSocket from 'ws'

import { alnum, startGatehouse, stopGatehouse } from '../harness.mjs'

const PASSWORD = 'correct-horse-42'
const SECRET = `svc_${alnum(40)}`
let server

before(async () => {
  server = await startGatehouse({
    tmpPrefix: 'gatehouse-js-admin-mfa-',
    env: {
      GATEHOUSE_AUTOCONFIRM: 'true',
      GATEHOUSE_SERVICE_KEY: SECRET,
      GATEHOUSE_MFA_ENCRYPTION_KEY: 'a client-test key of at least 32 characters',
    },
  })
})

after(async () => {
  await stopGatehouse(server)
})

const options = {
  auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
}
const show = (x) => JSON.stringify(x, null, 1)
const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'))

test('the admin lists a user\'s factors and deletes a verified one; the session drops to aal1', async () => {
  const user = createClient(server.url, server.key, options)
  const admin = createClient(server.url, SECRET, options)
  const email = `admin-mfa-${randomUUID()}@example.com`
  const { data: up, error: upError } = await user.auth.signUp({ email, password: PASSWORD })
  assert.equal(upError, null, show(upError))
  const userId = up.user.id

  // No factors yet: an empty list.
  let { data, error } = await admin.auth.admin.mfa.listFactors({ userId })
  assert.equal(error, null, show(error))
  assert.deepEqual(data.factors, [])

  // The user enrols and verifies a TOTP factor: aal2.
  const { data: enrolled, error: enrolError } = await user.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone' })
  assert.equal(enrolError, null, show(enrolError))
  const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(enrolled.totp.secret), algorithm: 'SHA1', digits: 6, period: 30 })
  const { error: verifyError } = await user.auth.mfa.challengeAndVerify({ factorId: enrolled.id, code: totp.generate() })
  assert.equal(verifyError, null, show(verifyError))
  const { data: s1 } = await user.auth.getSession()
  assert.equal(claimsOf(s1.session.access_token).aal, 'aal2')
  // And a second, unverified one.
  const { data: second } = await user.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'tablet' })

  ;({ data, error } = await admin.auth.admin.mfa.listFactors({ userId }))
  assert.equal(error, null, show(error))
  assert.deepEqual(
    data.factors.map((f) => [f.id, f.friendly_name, f.factor_type, f.status]),
    [[enrolled.id, 'phone', 'totp', 'verified'], [second.id, 'tablet', 'totp', 'unverified']],
  )
  assert.ok(!JSON.stringify(data).includes(enrolled.totp.secret), 'no secret in the listing')

  // Delete the verified factor (no aal2 needed with the service key).
  ;({ data, error } = await admin.auth.admin.mfa.deleteFactor({ userId, id: enrolled.id }))
  assert.equal(error, null, show(error))
  // (supabase-js 2.109 wraps the body once more here: data.data is the removed factor.)
  assert.equal((data.data ?? data).id, enrolled.id)
  ;({ data, error } = await admin.auth.admin.mfa.listFactors({ userId }))
  assert.deepEqual(data.factors.map((f) => f.id), [second.id])

  // Gone: a second delete is mfa_factor_not_found; another user's factor id is the same.
  ;({ data, error } = await admin.auth.admin.mfa.deleteFactor({ userId, id: enrolled.id }))
  assert.equal(data, null)
  assert.equal(error.status, 404)
  assert.equal(error.code, 'mfa_factor_not_found')
  ;({ data, error } = await admin.auth.admin.mfa.listFactors({ userId: randomUUID() }))
  assert.equal(error.status, 404)
  assert.equal(error.code, 'user_not_found')

  // The user's session is aal1 at its next refresh.
  const { data: refreshed, error: refreshError } = await user.auth.refreshSession()
  assert.equal(refreshError, null, show(refreshError))
  assert.equal(claimsOf(refreshed.session.access_token).aal, 'aal1')

  // The publishable key is no service key.
  const anon = createClient(server.url, server.key, options)
  ;({ error } = await anon.auth.admin.mfa.listFactors({ userId }))
  assert.equal(error.status, 403)
  assert.equal(error.code, 'not_admin')

  // The admin log holds the calls.
  const res = await fetch(`${server.url}/auth/v1/admin/audit?per_page=10`, {
    headers: { apikey: SECRET, authorization: `Bearer ${SECRET}` },
  })
  const actions = (await res.json()).map((e) => [e.payload.action, e.payload.target ?? null])
  assert.deepEqual(actions.filter(([a]) => a.startsWith('user.factor')), [
    ['user.factors_listed', userId],
    ['user.factor_deleted', userId],
    ['user.factors_listed', userId],
    ['user.factors_listed', userId],
  ])
})
