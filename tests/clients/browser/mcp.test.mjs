// The official MCP TypeScript SDK against Gatehouse as its OAuth 2.1 authorization server,
// end to end, in a real Chromium.
//
// An MCP server made with the SDK (its Streamable HTTP server transport, stateless, one tool
// `whoami` that answers the X-Gatehouse-* identity headers it received) is Gatehouse's `/api`
// backend (`proxy_target`). The SDK's client (`Client` + `StreamableHTTPClientTransport` with
// an `OAuthClientProvider`) connects to `{gatehouse}/api/mcp`:
//   1. it gets 401 with `WWW-Authenticate: Bearer resource_metadata="…"`, reads the protected
//      resource metadata, discovers the authorization server, registers dynamically;
//   2. its `redirectToAuthorization` opens the authorization URL in Chromium, where the person
//      signs in to the dashboard and allows the app on the consent page;
//   3. a loopback redirect URI server catches the code; `transport.finishAuth(code)` exchanges
//      it with the PKCE verifier (the SDK asks for the metadata's scopes_supported, which
//      include offline_access, so this first authorization brings a refresh token);
//   4. the client calls the tool, which sees the person, the organization, the client id and
//      the scopes in effect;
//   5. the refresh token is used twice: by `auth()` itself, and by the transport when the
//      stored access token is refused (401), after which the call goes through;
//   6. the person revokes the app under "Connected apps"; the next call is refused (the access
//      token at its next use, the refresh token at once) and the SDK asks to authorize again.
//
// Run: cargo build && cd tests/clients/browser && npm ci && node --test mcp.test.mjs
// Env: GATEHOUSE_BIN, GATEHOUSE_CLIENT_TEST_SHOW_SERVER_LOG=1, CHROMIUM, as the other suites.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import http from 'node:http'

import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { auth, UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'

import { api, freePort, startGatehouse, stopGatehouse } from '../harness.mjs'

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const PASSWORD = 'correct-horse-42'
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') {
  console.log(`NOTICE: ${CHROMIUM} not found: the MCP browser test is skipped (apt-get install chromium)`)
}
const skip = !haveChromium && process.env.CI !== 'true'

// The MCP server behind Gatehouse's /api proxy: every POST /api/mcp gets a fresh stateless
// server; the tool answers the identity headers the proxy added.
function startMcpServer() {
  const seen = []
  const srv = http.createServer(async (req, res) => {
    if (!req.url.startsWith('/api/mcp')) return res.writeHead(404).end()
    seen.push(req.headers)
    const server = new McpServer({ name: 'gatehouse-identity-echo', version: '1.0.0' })
    server.registerTool('whoami', { description: 'The identity Gatehouse vouches for' }, async (extra) => {
      const h = extra.requestInfo?.headers || {}
      const identity = Object.fromEntries(Object.entries(h).filter(([k]) => k.startsWith('x-gatehouse-')))
      // Gatehouse consumed the credential: none reaches the backend.
      identity.authorization = h.authorization ?? null
      return { content: [{ type: 'text', text: JSON.stringify(identity) }] }
    })
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
    res.on('close', () => {
      transport.close()
      server.close()
    })
    await server.connect(transport)
    await transport.handleRequest(req, res)
  })
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({ srv, seen, url: `http://127.0.0.1:${srv.address().port}` })))
}

// The native app's loopback redirect URI (RFC 8252): resolves each code it receives.
async function startRedirectCatcher() {
  const port = await freePort()
  let waiting = null
  const srv = http.createServer((req, res) => {
    const u = new URL(req.url, `http://127.0.0.1:${port}`)
    // The browser also asks for /favicon.ico: only the callback counts.
    if (u.pathname !== '/callback') return res.writeHead(404).end()
    res.writeHead(200, { 'content-type': 'text/plain' }).end('You can close this window.')
    if (waiting) waiting({ code: u.searchParams.get('code'), state: u.searchParams.get('state'), error: u.searchParams.get('error') })
  })
  await new Promise((r) => srv.listen(port, '127.0.0.1', r))
  return {
    srv,
    redirectUrl: `http://127.0.0.1:${port}/callback`,
    next: () => new Promise((resolve) => { waiting = resolve }),
  }
}

// An OAuthClientProvider that keeps everything in memory and, to authorize, hands the URL
// to `onRedirect` (the test opens it in Chromium).
class Provider {
  constructor(redirectUrl, onRedirect) {
    this._redirectUrl = redirectUrl
    this.onRedirect = onRedirect
    this.redirects = []
    this.saved = { client: undefined, tokens: undefined, verifier: undefined, discovery: undefined }
    this.tokenHistory = []
  }
  get redirectUrl() { return this._redirectUrl }
  get clientMetadata() {
    return {
      client_name: 'MCP Identity Probe',
      redirect_uris: [this._redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    }
  }
  state() { return randomUUID() }
  clientInformation() { return this.saved.client }
  saveClientInformation(info) { this.saved.client = info }
  tokens() { return this.saved.tokens }
  saveTokens(tokens) {
    this.saved.tokens = tokens
    this.tokenHistory.push(tokens)
  }
  async redirectToAuthorization(url) {
    this.redirects.push(url)
    await this.onRedirect(url)
  }
  saveCodeVerifier(v) { this.saved.verifier = v }
  codeVerifier() { return this.saved.verifier }
  saveDiscoveryState(s) { this.saved.discovery = s }
  discoveryState() { return this.saved.discovery }
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this.saved.client = undefined
    if (scope === 'all' || scope === 'tokens') this.saved.tokens = undefined
    if (scope === 'all' || scope === 'verifier') this.saved.verifier = undefined
  }
}

const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'))
const headerOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString('utf8'))

describe('the official MCP SDK through Gatehouse OAuth', { skip }, () => {
  let gh, mcp, catcher, browser, page, email, owner, org

  before(async () => {
    if (!haveChromium) throw new Error(`${CHROMIUM} not found (CI=true): install Debian's chromium package`)
    const { chromium } = await import('playwright-core')
    mcp = await startMcpServer()
    catcher = await startRedirectCatcher()
    gh = await startGatehouse({
      tmpPrefix: 'gatehouse-mcp-',
      env: {
        GATEHOUSE_AUTOCONFIRM: 'true',
        GATEHOUSE_RATE_LIMIT_SIGN_UP: '1000/60s',
        GATEHOUSE_RATE_LIMIT_SIGN_IN: '1000/60s',
        GATEHOUSE_PROXY_TARGET: mcp.url,
      },
    })
    email = `mcp-${randomUUID()}@example.com`
    await api('POST', `${gh.url}/auth/v1/signup`, { body: { email, password: PASSWORD }, headers: { apikey: gh.key } })
    const tok = await api('POST', `${gh.url}/auth/v1/token?grant_type=password`, {
      body: { email, password: PASSWORD },
      headers: { apikey: gh.key },
    })
    owner = { authorization: `Bearer ${tok.access_token}` }
    org = await api('POST', `${gh.url}/v1/orgs`, { body: { name: 'Probe Labs' }, headers: owner, expect: 201 })
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
    page = await (await browser.newContext()).newPage()
  })

  after(async () => {
    await browser?.close()
    await stopGatehouse(gh)
    mcp?.srv.close()
    catcher?.srv.close()
  })

  test('discovers, registers, consents in Chromium, calls a tool, refreshes, and is refused once revoked', async () => {
    const serverUrl = new URL(`${gh.url}/api/mcp`)

    // The first call made without a token: the challenge names the resource's metadata.
    const bare = await fetch(serverUrl, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' })
    assert.equal(bare.status, 401)
    assert.equal(bare.headers.get('www-authenticate'), `Bearer resource_metadata="${gh.url}/.well-known/oauth-protected-resource/api"`)

    // The browser leg: sign in on the dashboard (the authorization server sends the person
    // there), then allow the app on the consent page.
    let signedIn = false
    const provider = new Provider(catcher.redirectUrl, async (url) => {
      assert.equal(url.origin, new URL(gh.url).origin, 'the authorization endpoint is Gatehouse')
      assert.equal(url.searchParams.get('code_challenge_method'), 'S256')
      assert.equal(url.searchParams.get('resource'), `${gh.url}/api`)
      await page.goto(url.href)
      if (!signedIn) {
        await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor()
        await page.getByLabel('Email').fill(email)
        await page.getByLabel('Password').fill(PASSWORD)
        await page.getByRole('button', { name: 'Sign in' }).click()
        signedIn = true
      }
      // A consent already given for this client and scope set may send the person straight
      // back; otherwise the consent page asks.
      const where = await Promise.race([
        page.getByRole('heading', { name: 'Authorize an app' }).waitFor().then(() => 'consent'),
        page.waitForURL((u) => u.href.startsWith(catcher.redirectUrl)).then(() => 'back'),
      ])
      if (where === 'back') return
      assert.equal(await page.getByTestId('oauth-client-name').textContent(), 'MCP Identity Probe')
      assert.match(await page.getByTestId('oauth-scopes').textContent(), /chat:write/)
      await page.getByTestId('oauth-org').selectOption(org.id)
      await page.getByTestId('oauth-approve').click()
    })

    const codeArrives = catcher.next()
    let transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider })
    let client = new Client({ name: 'gatehouse-mcp-test', version: '1.0.0' })
    await assert.rejects(client.connect(transport), UnauthorizedError, 'the first connect needs the person')
    assert.ok(provider.saved.client?.client_id, 'registered dynamically')
    assert.equal(provider.redirects.length, 1)
    const { code, error } = await codeArrives
    assert.equal(error, null)
    assert.ok(code)
    await transport.finishAuth(code)

    // The resource metadata lists offline_access, so the SDK's first authorization already
    // asks for it and gets a refresh token.
    const first = provider.saved.tokens
    assert.deepEqual(first.scope.split(' ').sort(), ['chat:write', 'offline_access'])
    assert.ok(first.access_token && first.refresh_token, 'an access and a refresh token')
    assert.equal(headerOf(first.access_token).typ, 'at+jwt')
    const claims = claimsOf(first.access_token)
    assert.equal(claims.aud, `${gh.url}/api`)
    assert.equal(claims.client_id, provider.saved.client.client_id)
    assert.equal(claims.org_id, org.id)

    // Connected: the tool sees who calls, through the proxy.
    transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider })
    client = new Client({ name: 'gatehouse-mcp-test', version: '1.0.0' })
    await client.connect(transport)
    const tools = await client.listTools()
    assert.deepEqual(tools.tools.map((t) => t.name), ['whoami'])
    const whoami = async () => JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text)
    const me = await api('GET', `${gh.url}/v1/me`, { headers: owner })
    const id = await whoami()
    assert.equal(id['x-gatehouse-user'], me.user_id)
    assert.equal(id['x-gatehouse-org'], org.id)
    assert.equal(id['x-gatehouse-client-id'], provider.saved.client.client_id)
    assert.ok(id['x-gatehouse-scopes'].split(',').includes('chat:write'), id['x-gatehouse-scopes'])
    assert.equal(id.authorization, null, 'the token does not reach the backend')

    // The token is for /api only: /v1 refuses it with the standard error.
    const elsewhere = await fetch(`${gh.url}/v1/me`, { headers: { authorization: `Bearer ${first.access_token}` } })
    assert.equal(elsewhere.status, 401)
    assert.match(elsewhere.headers.get('www-authenticate'), /error="invalid_token"/)

    // Refresh: the SDK's auth() with a refresh token at hand rotates it.
    assert.equal(await auth(provider, { serverUrl }), 'AUTHORIZED')
    const second = provider.saved.tokens
    assert.notEqual(second.refresh_token, first.refresh_token, 'rotated')
    assert.notEqual(second.access_token, first.access_token)
    // The transport refreshes by itself when the access token is refused.
    const stale = { ...provider.saved.tokens, access_token: 'not-a-token' }
    provider.saved.tokens = stale
    transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider })
    client = new Client({ name: 'gatehouse-mcp-test', version: '1.0.0' })
    await client.connect(transport)
    assert.notEqual(provider.saved.tokens.access_token, 'not-a-token', 'refreshed on the 401')
    assert.equal((await whoami())['x-gatehouse-client-id'], provider.saved.client.client_id)

    // The person revokes the app under Connected apps.
    await page.goto(`${gh.url}/dashboard/#/account`)
    const live = claimsOf(provider.saved.tokens.access_token).grant_id
    const row = page.locator(`[data-testid="oauth-grant"][data-grant="${live}"]`)
    await row.waitFor()
    assert.equal(await row.getByTestId('oauth-grant-name').textContent(), 'MCP Identity Probe')
    await row.getByTestId('oauth-revoke').click()
    await page.getByRole('dialog').getByRole('button', { name: 'Revoke' }).click()
    await row.waitFor({ state: 'detached' })

    // The next call is refused; the refresh fails too, so the SDK asks for the person again.
    const before = provider.redirects.length
    provider.onRedirect = async () => {}
    await assert.rejects(whoami(), (e) => e instanceof UnauthorizedError || /401|Unauthorized/i.test(String(e)))
    assert.equal(provider.redirects.length, before + 1, 'the SDK went back to the authorization endpoint')
    const last = provider.tokenHistory.at(-1)
    const dead = await fetch(`${gh.url}/api/mcp`, { method: 'POST', headers: { authorization: `Bearer ${last.access_token}`, 'content-type': 'application/json' }, body: '{}' })
    assert.equal(dead.status, 401)
    assert.match(dead.headers.get('www-authenticate'), /resource_metadata="[^"]+\/api"/)
  })
})
