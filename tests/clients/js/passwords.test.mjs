// The password policy through the unmodified @supabase/supabase-js client: a refused
// password surfaces as AuthWeakPasswordError with GoTrue's `reasons`, including `pwned` from
// a Have-I-Been-Pwned-compatible range API (a local mock here, node:http).
//
// Run: cd tests/clients/js && npm ci && node --test passwords.test.mjs

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomUUID } from 'node:crypto'
import http from 'node:http'

import { createClient, isAuthWeakPasswordError } from '@supabase/supabase-js'
import WebSocket from 'ws'

import { startGatehouse, stopGatehouse } from '../harness.mjs'

// The estimator accepts both; the mock lists the first as breached.
const BREACHED = 'Tr0ub4dor&3 zebra quantum'
const FINE = 'violet kettle marathon 77'

const sha1 = (s) => createHash('sha1').update(s).digest('hex').toUpperCase()

let server
let rangeApi
const asked = []

function newClient() {
  return createClient(server.url, server.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
  })
}

const uniqueEmail = () => `pw-${randomUUID()}@example.com`
const show = (x) => JSON.stringify(x, null, 1)

function assertWeak(error, reasons) {
  assert.ok(error, 'expected an error')
  assert.ok(isAuthWeakPasswordError(error), `expected AuthWeakPasswordError, got ${error.name}: ${show(error)}`)
  assert.equal(error.name, 'AuthWeakPasswordError')
  assert.equal(error.code, 'weak_password')
  assert.equal(error.status, 422)
  assert.deepEqual(error.reasons, reasons, show(error))
}

before(async () => {
  rangeApi = http.createServer((req, res) => {
    const m = /^\/range\/([^/?]*)$/.exec(req.url)
    if (!m) {
      res.writeHead(404).end()
      return
    }
    asked.push(m[1])
    const hash = sha1(BREACHED)
    let body = '00000000000000000000000000000000001:0\r\n'
    if (m[1].toUpperCase() === hash.slice(0, 5)) body += `${hash.slice(5)}:52\r\n`
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body)
  })
  await new Promise((resolve) => rangeApi.listen(0, '127.0.0.1', resolve))
  server = await startGatehouse({
    tmpPrefix: 'gatehouse-js-passwords-',
    env: {
      GATEHOUSE_AUTOCONFIRM: 'true',
      GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
      GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
      GATEHOUSE_PASSWORD_BREACH_CHECK_URL: `http://127.0.0.1:${rangeApi.address().port}`,
    },
  })
})

after(async () => {
  await stopGatehouse(server)
  await new Promise((resolve) => (rangeApi ? rangeApi.close(resolve) : resolve()))
})

describe('password policy (supabase-js)', () => {
  test('common passwords are refused with reason "strength"', async () => {
    for (const password of ['password', '12345678', '        ']) {
      const { data, error } = await newClient().auth.signUp({ email: uniqueEmail(), password })
      assertWeak(error, ['strength'])
      assert.equal(data.session, null)
    }
  })

  test('a short password is refused with reason "length"', async () => {
    const { error } = await newClient().auth.signUp({ email: uniqueEmail(), password: 'abc' })
    assertWeak(error, ['length'])
  })

  test('a breached password is refused with reason "pwned"; only 5 hex digits leave the server', async () => {
    asked.length = 0
    const { error } = await newClient().auth.signUp({ email: uniqueEmail(), password: BREACHED })
    assertWeak(error, ['pwned'])
    const { data, error: none } = await newClient().auth.signUp({ email: uniqueEmail(), password: FINE })
    assert.equal(none, null, show(none))
    assert.ok(data.session?.access_token)
    assert.deepEqual(asked, [sha1(BREACHED).slice(0, 5), sha1(FINE).slice(0, 5)])
  })

  test('updateUser with a weak password is refused too', async () => {
    const client = newClient()
    const { error: upError } = await client.auth.signUp({ email: uniqueEmail(), password: FINE })
    assert.equal(upError, null, show(upError))
    const { error } = await client.auth.updateUser({ password: '12345678' })
    assertWeak(error, ['strength'])
  })
})
