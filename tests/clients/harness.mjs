// Shared harness of the Node client suites (tests/clients/js, tests/clients/browser):
// starts a real `gatehouse serve` process on a free port (another one if that was taken
// meanwhile) with a temporary SQLite
// database, waits for GET /healthz, stops it again, and a few small helpers.
//
// Node built-ins only: the two suites are separate npm packages and import this file by
// relative path, so it cannot depend on anything either of them installs.
//
// Env: GATEHOUSE_BIN (default <repo>/target/debug/gatehouse),
//      GATEHOUSE_CLIENT_TEST_DATABASE_URL (use PostgreSQL instead of a temp SQLite file),
//      GATEHOUSE_CLIENT_TEST_SHOW_SERVER_LOG=1 (print the server's output when it stops).

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
export const REPO = path.resolve(HERE, '..', '..')
export const BIN = process.env.GATEHOUSE_BIN || path.join(REPO, 'target', 'debug', 'gatehouse')

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

export function alnum(n) {
  const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
  return Array.from(randomBytes(n), (b) => chars[b % chars.length]).join('')
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

// Starts `gatehouse serve` (cwd: a fresh temporary directory) and resolves once GET /healthz
// answers 200. The harness sets the listen address, the database, the publishable key and
// the public URL; `env` adds (or overrides) the suite's own settings.
// Returns { proc, url, key, output(), tmp, exited() }; give it to stopGatehouse.
//
// The port is picked here, not by the server (port 0), because the public URL, which the
// server needs at start (mailed links, the dashboard's origin check), names it. A port taken
// by someone else in between makes the server exit with "cannot listen on": then it is
// started again on another port.
export async function startGatehouse(opts = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts)
    } catch (e) {
      if (!(e instanceof PortTaken) || attempt >= 5) throw e
    }
  }
}

class PortTaken extends Error {}

async function startOnce({ env: extraEnv = {}, tmpPrefix = 'gatehouse-test-' } = {}) {
  if (!existsSync(BIN)) throw new Error(`gatehouse binary not found at ${BIN} (build it or set GATEHOUSE_BIN)`)
  const port = await freePort()
  const tmp = mkdtempSync(path.join(os.tmpdir(), tmpPrefix))
  const url = `http://127.0.0.1:${port}`
  const key = `gk_publishable_test_${alnum(24)}`
  // gatehouse rejects unknown GATEHOUSE_* variables, so the suites' own control variables
  // (GATEHOUSE_BIN, GATEHOUSE_CLIENT_TEST_*) are not passed on.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => k !== 'GATEHOUSE_BIN' && !k.startsWith('GATEHOUSE_CLIENT_TEST_')),
  )
  const env = {
    ...inherited,
    GATEHOUSE_LISTEN: `127.0.0.1:${port}`,
    GATEHOUSE_DATABASE_URL: process.env.GATEHOUSE_CLIENT_TEST_DATABASE_URL || `sqlite://${tmp}/gh.db`,
    GATEHOUSE_PUBLISHABLE_KEY: key,
    GATEHOUSE_PUBLIC_URL: url,
    ...extraEnv,
  }
  const chunks = []
  const proc = spawn(BIN, ['serve'], { env, cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] })
  proc.stdout.on('data', (d) => chunks.push(d))
  proc.stderr.on('data', (d) => chunks.push(d))
  let exited = null
  proc.on('exit', (code, signal) => {
    exited = { code, signal }
  })
  proc.on('error', (err) => {
    exited = { error: String(err) }
  })
  const output = () => Buffer.concat(chunks).toString('utf8')

  const deadline = Date.now() + 30_000
  for (;;) {
    if (exited) {
      rmSync(tmp, { recursive: true, force: true })
      const Err = output().includes('cannot listen on') ? PortTaken : Error
      throw new Err(`gatehouse exited before becoming ready (${JSON.stringify(exited)}):\n${output()}`)
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) })
      await res.arrayBuffer()
      if (res.status === 200) break
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL')
      rmSync(tmp, { recursive: true, force: true })
      throw new Error(`gatehouse did not answer GET /healthz with 200 within 30 s:\n${output()}`)
    }
    await sleep(200)
  }
  return { proc, url, key, output, tmp, exited: () => exited }
}

// SIGTERM, then SIGKILL after 5 s; prints the output if asked to; removes the temp directory.
export async function stopGatehouse(s) {
  if (!s) return
  if (!s.exited()) {
    const gone = new Promise((r) => s.proc.once('exit', r))
    s.proc.kill('SIGTERM')
    const t = setTimeout(() => s.proc.kill('SIGKILL'), 5000)
    await gone
    clearTimeout(t)
  }
  if (process.env.GATEHOUSE_CLIENT_TEST_SHOW_SERVER_LOG) {
    process.stderr.write(`--- gatehouse output ---\n${s.output()}\n`)
  }
  rmSync(s.tmp, { recursive: true, force: true })
}

// JSON call to gatehouse; returns the envelope's data, or throws with the whole exchange.
export async function api(method, url, { body, headers = {}, expect = 200 } = {}) {
  const res = await fetch(url, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  })
  const text = await res.text()
  if (res.status !== expect) throw new Error(`${method} ${url} -> ${res.status} (expected ${expect}): ${text}`)
  const json = JSON.parse(text)
  return json.data !== undefined ? json.data : json
}
