// supabase.auth.admin through the unmodified @supabase/supabase-js client, created with a
// service key: a `service_role` JWT minted by `gatehouse service-key` (and the configured
// `service_key` secret), never the publishable key.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { promisify } from 'node:util'

import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

import { BIN, alnum, startGatehouse, stopGatehouse } from '../harness.mjs'

const PASSWORD = 'correct-horse-42'
const SECRET = `svc_${alnum(40)}`

let server
let serviceKey

const options = {
  auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
}
const client = (key) => createClient(server.url, key, options)
const uniqueEmail = () => `admin-${randomUUID()}@example.com`
const show = (x) => JSON.stringify(x, null, 1)

before(async () => {
  server = await startGatehouse({
    tmpPrefix: 'gatehouse-js-admin-',
    env: {
      GATEHOUSE_AUTOCONFIRM: 'true',
      GATEHOUSE_SERVICE_KEY: SECRET,
      GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
      GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
      GATEHOUSE_RATE_LIMIT_TOKEN_REFRESH: '1000/60s',
    },
  })
  // `gatehouse service-key` against the server's own database prints the key once.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => k !== 'GATEHOUSE_BIN' && !k.startsWith('GATEHOUSE_CLIENT_TEST_')),
  )
  const { stdout } = await promisify(execFile)(BIN, ['service-key', '--days', '1'], {
    cwd: server.tmp,
    env: {
      ...env,
      GATEHOUSE_DATABASE_URL: process.env.GATEHOUSE_CLIENT_TEST_DATABASE_URL || `sqlite://${server.tmp}/gh.db`,
      GATEHOUSE_PUBLISHABLE_KEY: server.key,
      GATEHOUSE_PUBLIC_URL: server.url,
    },
  })
  serviceKey = stdout.trim()
  assert.equal(serviceKey.split('.').length, 3, 'a JWT')
})

after(async () => {
  await stopGatehouse(server)
})

describe('supabase.auth.admin with a service key', () => {
  test('the publishable key is refused with GoTrue error shape; both service keys work', async () => {
    const { data, error } = await client(server.key).auth.admin.listUsers()
    assert.equal(error?.status, 403, show(error))
    assert.equal(error?.code, 'not_admin')
    assert.equal(data.users.length, 0)
    for (const key of [serviceKey, SECRET]) {
      const res = await client(key).auth.admin.listUsers()
      assert.equal(res.error, null, show(res.error))
    }
  })

  test('createUser, getUserById, updateUserById, listUsers paging, deleteUser', async () => {
    const admin = client(serviceKey).auth.admin
    const emails = [uniqueEmail(), uniqueEmail(), uniqueEmail()]
    const ids = []
    for (const email of emails) {
      const { data, error } = await admin.createUser({
        email,
        password: PASSWORD,
        email_confirm: true,
        user_metadata: { name: 'Ann' },
        app_metadata: { plan: 'pro' },
      })
      assert.equal(error, null, show(error))
      assert.equal(data.user.email, email)
      assert.ok(data.user.email_confirmed_at)
      assert.deepEqual(data.user.app_metadata, { provider: 'email', providers: ['email'], plan: 'pro' })
      ids.push(data.user.id)
    }
    // The new user signs in with the password the admin set.
    const signedIn = await client(server.key).auth.signInWithPassword({ email: emails[0], password: PASSWORD })
    assert.equal(signedIn.error, null, show(signedIn.error))

    const got = await admin.getUserById(ids[1])
    assert.equal(got.error, null, show(got.error))
    assert.equal(got.data.user.email, emails[1])

    const updated = await admin.updateUserById(ids[1], { user_metadata: { team: 'blue' } })
    assert.equal(updated.error, null, show(updated.error))
    assert.deepEqual(updated.data.user.user_metadata, { name: 'Ann', team: 'blue' })

    // Pages of one, newest first, with the paging supabase-js reads from Link/X-Total-Count.
    const total = (await admin.listUsers()).data.total
    assert.ok(total >= 3, `total ${total}`)
    const page1 = await admin.listUsers({ page: 1, perPage: 1 })
    assert.equal(page1.error, null, show(page1.error))
    assert.equal(page1.data.users.length, 1)
    assert.equal(page1.data.users[0].id, ids[2])
    assert.equal(page1.data.total, total)
    assert.equal(page1.data.nextPage, 2)
    assert.equal(page1.data.lastPage, total)
    const page2 = await admin.listUsers({ page: 2, perPage: 1 })
    assert.equal(page2.data.users[0].id, ids[1])

    const deleted = await admin.deleteUser(ids[2])
    assert.equal(deleted.error, null, show(deleted.error))
    const gone = await admin.getUserById(ids[2])
    assert.equal(gone.error?.status, 404)
    assert.equal(gone.error?.code, 'user_not_found')
    const taken = await admin.createUser({ email: emails[0] })
    assert.equal(taken.error?.code, 'email_exists')
  })

  test('a banned user cannot sign in or refresh; lifting the ban lets them back', async () => {
    const admin = client(serviceKey).auth.admin
    const email = uniqueEmail()
    const user = client(server.key)
    const up = await user.auth.signUp({ email, password: PASSWORD })
    assert.equal(up.error, null, show(up.error))
    const refreshToken = up.data.session.refresh_token

    const banned = await admin.updateUserById(up.data.user.id, { ban_duration: '24h' })
    assert.equal(banned.error, null, show(banned.error))
    assert.ok(Date.parse(banned.data.user.banned_until) > Date.now() + 23 * 3600 * 1000, show(banned.data.user))

    const signIn = await client(server.key).auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(signIn.error?.code, 'user_banned', show(signIn.error))
    const refreshed = await client(server.key).auth.refreshSession({ refresh_token: refreshToken })
    assert.ok(refreshed.error, 'the refresh is refused')
    assert.equal(refreshed.data.session, null)

    const lifted = await admin.updateUserById(up.data.user.id, { ban_duration: 'none' })
    assert.equal(lifted.error, null, show(lifted.error))
    const back = await client(server.key).auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(back.error, null, show(back.error))
  })

  test('generateLink returns a working magic link; inviteUserByEmail creates the user', async () => {
    const admin = client(serviceKey).auth.admin
    const email = uniqueEmail()
    await admin.createUser({ email, password: PASSWORD, email_confirm: true })
    const { data, error } = await admin.generateLink({ type: 'magiclink', email })
    assert.equal(error, null, show(error))
    assert.equal(data.properties.verification_type, 'magiclink')
    assert.equal(data.properties.email_otp.length, 6)
    assert.equal(data.user.email, email)
    const res = await fetch(data.properties.action_link, { redirect: 'manual' })
    assert.equal(res.status, 303)
    assert.ok(res.headers.get('location').includes('#access_token='), res.headers.get('location'))
    // The hashed token works with verifyOtp too (a fresh link: the first was used).
    const again = await admin.generateLink({ type: 'recovery', email })
    assert.equal(again.error, null, show(again.error))
    const verified = await client(server.key).auth.verifyOtp({ type: 'recovery', token_hash: again.data.properties.hashed_token })
    assert.equal(verified.error, null, show(verified.error))
    assert.equal(verified.data.user.email, email)

    const invited = uniqueEmail()
    const inv = await admin.inviteUserByEmail(invited, { data: { team: 'blue' } })
    assert.equal(inv.error, null, show(inv.error))
    assert.equal(inv.data.user.email, invited)
    assert.equal(inv.data.user.email_confirmed_at, null)
    assert.deepEqual(inv.data.user.user_metadata, { team: 'blue' })
  })

  test('signOut(jwt) ends the user session', async () => {
    const email = uniqueEmail()
    const user = client(server.key)
    const up = await user.auth.signUp({ email, password: PASSWORD })
    assert.equal(up.error, null, show(up.error))
    const { error } = await client(serviceKey).auth.admin.signOut(up.data.session.access_token)
    assert.equal(error, null, show(error))
    const refreshed = await client(server.key).auth.refreshSession({ refresh_token: up.data.session.refresh_token })
    assert.equal(refreshed.error?.code, 'refresh_token_not_found', show(refreshed.error))
  })
})
