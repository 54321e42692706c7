// A user moved in from Supabase signs in through the unmodified @supabase/supabase-js with the
// password they had there: `gatehouse import supabase` reads a database laid out like
// Supabase's `auth` schema (a subset of its columns, made here with psql), keeps the user's
// id, metadata and GoTrue bcrypt hash, and the server verifies that hash.
//
// Needs PostgreSQL (GATEHOUSE_TEST_POSTGRES_URL, as the Rust tests) and psql; skipped without.
// Run: cd tests/clients/js && npm ci && node --test imported.test.mjs

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'

import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

import { BIN, startGatehouse, stopGatehouse } from '../harness.mjs'

const ADMIN = process.env.GATEHOUSE_TEST_POSTGRES_URL
const HAVE_PSQL = spawnSync('psql', ['--version']).status === 0
const SKIP = !ADMIN || !HAVE_PSQL ? 'needs GATEHOUSE_TEST_POSTGRES_URL and psql' : false

// "supabase password one", hashed by Python's bcrypt (PyPI) with GoTrue's cost and prefix.
const PASSWORD = 'supabase password one'
const HASH = '$2a$10$p/lb/n2ikDG1bcpy4xFQFO0d6OLqGxZOc.2WFnR9gXNMDP.ZP0dDS'

const sourceDb = `gh_supabase_src_${Date.now()}_${process.pid}`
const sourceUrl = ADMIN ? `${ADMIN.replace(/\/[^/]*$/, '')}/${sourceDb}` : ''
const userId = randomUUID()
const email = `moved-${userId}@example.com`

const psql = (url, sql) => execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' })

let server

describe('a user imported from Supabase', { skip: SKIP }, () => {
  before(async () => {
    psql(ADMIN, `CREATE DATABASE ${sourceDb}`)
    psql(
      sourceUrl,
      `CREATE SCHEMA auth;
       CREATE TABLE auth.users (
         id uuid NOT NULL PRIMARY KEY, aud varchar(255), "role" varchar(255), email varchar(255),
         encrypted_password varchar(255), email_confirmed_at timestamptz, last_sign_in_at timestamptz,
         raw_app_meta_data jsonb, raw_user_meta_data jsonb, created_at timestamptz, updated_at timestamptz,
         banned_until timestamptz, deleted_at timestamptz, is_anonymous boolean NOT NULL DEFAULT false);
       CREATE TABLE auth.identities (
         provider_id text NOT NULL, user_id uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
         identity_data jsonb NOT NULL, provider text NOT NULL, created_at timestamptz, updated_at timestamptz,
         id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY);
       INSERT INTO auth.users VALUES ('${userId}', 'authenticated', 'authenticated', '${email}', '${HASH}',
         now(), NULL, '{"provider":"email","providers":["email"]}', '{"display_name":"Moved In"}',
         now(), now(), NULL, NULL, false);
       INSERT INTO auth.identities (provider_id, user_id, identity_data, provider)
         VALUES ('${userId}', '${userId}', '{"sub":"${userId}","email":"${email}"}', 'email');`,
    )
    server = await startGatehouse({ env: { GATEHOUSE_AUTOCONFIRM: 'true' } })
    // Into the running server's database, as an operator would.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => k !== 'GATEHOUSE_BIN' && !k.startsWith('GATEHOUSE_CLIENT_TEST_')),
    )
    env.GATEHOUSE_DATABASE_URL = process.env.GATEHOUSE_CLIENT_TEST_DATABASE_URL || `sqlite://${server.tmp}/gh.db`
    env.SUPABASE_DB_URL = sourceUrl
    const out = execFileSync(BIN, ['import', 'supabase'], { env, encoding: 'utf8' })
    assert.match(out, /imported 1 users \(1 with their password hash\)/)
  })

  after(async () => {
    await stopGatehouse(server)
    if (ADMIN) psql(ADMIN, `DROP DATABASE IF EXISTS ${sourceDb} WITH (FORCE)`)
  })

  test('signs in with the password they had, as the same user', async () => {
    const client = createClient(server.url, server.key, {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
      ...(globalThis.WebSocket ? {} : { realtime: { transport: WebSocket } }),
    })
    const wrong = await client.auth.signInWithPassword({ email, password: 'not the password' })
    assert.equal(wrong.error?.code, 'invalid_credentials')
    const { data, error } = await client.auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(error, null)
    assert.equal(data.user.id, userId)
    assert.equal(data.user.user_metadata.display_name, 'Moved In')
    const me = await client.auth.getUser()
    assert.equal(me.error, null)
    assert.equal(me.data.user.id, userId)
    // Again, now against the argon2id hash that replaced the bcrypt one.
    await client.auth.signOut()
    const again = await client.auth.signInWithPassword({ email, password: PASSWORD })
    assert.equal(again.error, null)
    assert.equal(again.data.user.id, userId)
  })
})
