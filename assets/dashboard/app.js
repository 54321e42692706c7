// Gatehouse dashboard: one page, hash routes (#/keys, #/members, #/widgets, #/webhooks, #/usage,
// #/audit; the person's own #/account with connected apps, and #/oauth/consent?request=… where
// an OAuth client's authorization request is approved or denied).
//
// Every call is a same-origin fetch() to /v1 with the HttpOnly session cookie; the server's
// Origin check on state-changing cookie requests is the CSRF protection. Secrets (new API
// keys, widget secrets) live only in the DOM of the page that showed them: never in
// storage, never in the console, and they are dropped when the page changes.
'use strict'
;(() => {
  // ---------------------------------------------------------------- DOM helpers
  const $ = (sel, root = document) => root.querySelector(sel)
  const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'multiple', 'indeterminate'])

  function add(el, kids) {
    for (const k of kids) {
      if (k === null || k === undefined || k === false) continue
      if (Array.isArray(k)) add(el, k)
      else el.append(k instanceof Node ? k : document.createTextNode(String(k)))
    }
  }
  // h('button', { class: 'x', onclick: f, 'aria-label': 'y' }, 'text', child…); never a style attribute.
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag)
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v)
      else if (k === 'class') el.className = v
      else if (k === 'for') el.htmlFor = v
      else if (k === 'checked') el.checked = el.defaultChecked = v // defaults survive form.reset()
      else if (k === 'selected') el.selected = el.defaultSelected = v
      else if (PROPS.has(k)) el[k] = v
      else el.setAttribute(k, v === true ? '' : String(v))
    }
    add(el, kids)
    return el
  }
  const SVGNS = 'http://www.w3.org/2000/svg'
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag)
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v))
    add(el, kids)
    return el
  }
  const icon = (d) => s('svg', { viewBox: '0 0 24 24', class: 'icon', 'aria-hidden': 'true' }, s('path', { d }))
  const TRASH = 'M9 3h6l1 2h4v2H4V5h4l1-2zm-3 6h12l-1 12H7L6 9zm4 2v8h1.5v-8H10zm3.5 0v8H15v-8h-1.5z'
  const ROLL = 'M12 4a8 8 0 0 1 7.7 6h-2.1A6 6 0 0 0 6.3 9.5L9 12H2V5l2.9 2.9A8 8 0 0 1 12 4zm-7.7 10h2.1a6 6 0 0 0 11.3.5L15 12h7v7l-2.9-2.9A8 8 0 0 1 4.3 14z'
  const CHAT = 'M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z'

  let uid = 0
  const nextId = (p) => `${p}-${++uid}`
  const spinner = () => h('span', { class: 'spinner', 'aria-hidden': 'true' })

  const dateFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' })
  // Usage days are UTC days, named in one format everywhere on that page.
  const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' })
  const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })
  const fmtDate = (ms) => (ms ? dateFmt.format(new Date(ms)) : '—')
  const fmtTime = (ms) => (ms ? timeFmt.format(new Date(ms)) : '—')
  const fmtNum = (n) => Number(n || 0).toLocaleString()

  function toast(text) {
    const t = $('#toast')
    t.textContent = text
    t.classList.add('show')
    clearTimeout(toast.timer)
    toast.timer = setTimeout(() => t.classList.remove('show'), 3000)
  }

  // ---------------------------------------------------------------- the API
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message)
      this.status = status
      this.code = code
      this.details = details
    }
  }

  // One /v1 call; returns the envelope's data or throws an ApiError with error.message.
  // referrerPolicy 'same-origin' keeps the Origin header real (under the page's no-referrer
  // policy a same-origin POST could otherwise send "Origin: null" and fail the CSRF check).
  async function api(method, path, body, { quiet401 = false } = {}) {
    const init = { method, credentials: 'same-origin', referrerPolicy: 'same-origin', cache: 'no-store', headers: { accept: 'application/json' } }
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    let res
    try {
      res = await fetch(path, init)
    } catch {
      throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.')
    }
    if (res.status === 204) return null
    let json = null
    try {
      json = await res.json()
    } catch {
      // not JSON: reported below
    }
    if (res.ok && json && json.success) return json.data
    const err = (json && json.error) || {}
    const e = new ApiError(res.status, err.code || 'error', err.message || `The server answered ${res.status}.`, err.details)
    if (res.status === 401 && !quiet401) signedOut('Your session has ended. Please sign in again.')
    throw e
  }
  const orgPath = (rest = '') => `/v1/orgs/${encodeURIComponent(state.orgId)}${rest}`

  // Shows an error from the API (its envelope's message) in a form's alert area, a 401 too:
  // the sign-in forms answer 401 for a wrong password (a 401 elsewhere has already sent the
  // page back to sign-in, so its slot is gone).
  function showError(slot, e) {
    slot.textContent = e && e.message ? e.message : String(e)
    slot.hidden = false
  }
  function clearError(slot) {
    slot.textContent = ''
    slot.hidden = true
  }
  const errorSlot = () => h('p', { class: 'error', role: 'alert', hidden: true })

  // Runs fn with the button busy (disabled, spinner) and errors shown in slot.
  async function busy(button, slot, fn) {
    if (button.disabled) return
    if (slot) clearError(slot)
    button.disabled = true
    button.setAttribute('aria-busy', 'true')
    const sp = spinner()
    button.prepend(sp)
    try {
      await fn()
    } catch (e) {
      if (slot) showError(slot, e)
      else if (e.status !== 401) toast(e.message)
    } finally {
      sp.remove()
      button.disabled = false
      button.removeAttribute('aria-busy')
    }
  }
  const btn = (text, attrs = {}) => h('button', { type: 'button', ...attrs }, h('span', { class: 'label' }, text))

  // ---------------------------------------------------------------- dialogs
  // A real <dialog>: resolves true on the confirming button, false on Cancel or Escape.
  function confirmDialog({ title, text, ok = 'Delete', danger = true }) {
    return new Promise((resolve) => {
      const tid = nextId('dlg-title'), did = nextId('dlg-text')
      const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': tid, 'aria-describedby': did })
      const done = (v) => {
        if (dlg.open) dlg.close()
        dlg.remove()
        resolve(v)
      }
      dlg.append(
        h('h2', { id: tid }, title),
        h('p', { id: did }, text),
        h('div', { class: 'actions' },
          btn('Cancel', { class: 'secondary', onclick: () => done(false) }),
          btn(ok, { class: danger ? 'danger' : 'primary', onclick: () => done(true) })),
      )
      dlg.addEventListener('cancel', (ev) => {
        ev.preventDefault()
        done(false)
      })
      document.body.append(dlg)
      dlg.showModal()
      // Cancel first: the safe choice is where the keyboard starts.
      dlg.querySelector('button').focus()
    })
  }

  // ---------------------------------------------------------------- one-time secrets
  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text)
      return
    }
    const ta = h('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true' })
    ta.value = text
    document.body.append(ta)
    ta.select()
    const ok = document.execCommand('copy')
    ta.remove()
    if (!ok) throw new Error('copy failed')
  }

  // A Copy button for a value; it says "Copied!" for 2 seconds.
  function copyButton(getValue, label = 'Copy', what = '') {
    const b = btn(label, { class: 'copy', 'aria-label': what ? `${label} ${what}` : null })
    b.addEventListener('click', async () => {
      const l = b.querySelector('.label')
      try {
        await copyText(getValue())
        l.textContent = 'Copied!'
      } catch {
        l.textContent = 'Select and copy'
      }
      clearTimeout(b.timer)
      b.timer = setTimeout(() => { l.textContent = label }, 2000)
    })
    return b
  }

  // The dark box: shown once, removed with the page (see render()).
  function secretBox({ heading, value, warning, extra }) {
    let secret = value
    const code = h('code', { class: 'secret-value', tabindex: '0' }, secret)
    const box = h('section', { class: 'secret', 'aria-label': heading },
      h('h3', null, heading),
      h('div', { class: 'secret-box' }, code, copyButton(() => secret || '', 'Copy', heading.toLowerCase())),
      h('p', { class: 'warning' }, h('strong', null, 'Copy it now. '), warning),
      extra || null)
    box.forget = () => {
      secret = null
      code.textContent = ''
      box.remove()
    }
    return box
  }
  function forgetSecrets() {
    for (const b of document.querySelectorAll('.secret')) (b.forget ? b.forget() : b.remove())
  }

  // ---------------------------------------------------------------- state and routing
  const ORG_STORE = 'gatehouse.dashboard.org' // only the selected organization's id
  const state = { me: null, orgId: null, roles: null }
  const PAGES = [
    { id: 'keys', title: 'API keys', need: 'keys:read', render: keysPage },
    { id: 'members', title: 'Members', need: 'members:read', render: membersPage },
    { id: 'widgets', title: 'Widgets', need: 'widgets:read', render: widgetsPage },
    { id: 'webhooks', title: 'Webhooks', need: 'webhooks:read', render: webhooksPage },
    { id: 'usage', title: 'Usage', need: 'analytics:read', render: usagePage },
    { id: 'audit', title: 'Audit log', need: 'audit:read', render: auditPage },
  ]
  const org = () => (state.me && state.me.organizations.find((o) => o.id === state.orgId)) || null
  const can = (perm) => !!org() && org().permissions.includes(perm)
  const isOwner = () => !!org() && org().role === 'owner'
  const allowedPages = () => PAGES.filter((p) => can(p.need))
  const routeId = () => (location.hash.match(/^#\/([a-z-]+)/) || [])[1] || ''

  function signedOut(notice) {
    state.me = null
    state.orgId = null
    forgetSecrets()
    renderSignIn(notice)
  }

  async function boot() {
    const link = invitationLink()
    if (link) return acceptPage(link)
    const outcome = linkOutcome()
    if (outcome) return followLink(outcome)
    try {
      state.me = await api('GET', '/v1/me', undefined, { quiet401: true })
    } catch (e) {
      if (e.status === 401) return renderSignIn()
      return renderFatal(e)
    }
    if (state.me.kind !== 'user') return renderFatal(new Error('The dashboard is for people, not API keys.'))
    pickOrg()
    render()
  }

  function pickOrg(preferred) {
    const orgs = state.me.organizations
    let stored = null
    try { stored = localStorage.getItem(ORG_STORE) } catch { /* storage may be off */ }
    const want = preferred || state.orgId || stored
    state.orgId = (orgs.find((o) => o.id === want) || orgs[0] || {}).id || null
    state.roles = null
    try { if (state.orgId) localStorage.setItem(ORG_STORE, state.orgId) } catch { /* ignore */ }
  }

  // Re-reads /v1/me (after a change to organizations or one's own role).
  async function refreshMe() {
    state.me = await api('GET', '/v1/me')
    pickOrg()
  }

  function render({ focus = false } = {}) {
    if (!state.me) return
    forgetSecrets()
    renderTopbar()
    const main = $('#main')
    main.replaceChildren()
    document.body.classList.remove('signed-out')
    // The person's own pages, whatever the organization (and with none).
    if (routeId() === 'oauth') return oauthConsentPage(main, { focus })
    if (routeId() === 'account') return accountPage(main, { focus })
    if (!org()) return noOrgPage(main)
    const pages = allowedPages()
    const page = pages.find((p) => p.id === routeId())
    if (!page) {
      if (pages.length) {
        // Not a page this role may use (or none chosen): go to the first one it may.
        history.replaceState(null, '', `#/${pages[0].id}`)
        return render({ focus })
      }
      main.append(h('h1', { tabindex: '-1' }, 'Nothing to show'),
        h('p', null, `Your role (${org().role}) has no dashboard pages in ${org().name}.`))
      return
    }
    document.title = `${page.title} · ${org().name} · Gatehouse`
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.page === page.id) a.setAttribute('aria-current', 'page')
      else a.removeAttribute('aria-current')
    }
    const heading = h('h1', { tabindex: '-1' }, page.title)
    main.append(heading)
    page.render(main)
    if (focus) heading.focus()
  }

  function renderTopbar() {
    const orgBox = $('#org'), nav = $('#nav'), account = $('#account')
    orgBox.replaceChildren()
    nav.replaceChildren()
    account.replaceChildren()
    const orgs = state.me.organizations
    if (orgs.length) {
      const sel = h('select', { id: 'org-select', onchange: (e) => switchOrg(e.target.value) },
        orgs.map((o) => h('option', { value: o.id, selected: o.id === state.orgId }, `${o.name} (${o.role})`)))
      orgBox.append(h('label', { for: 'org-select', class: 'sr' }, 'Organization'), sel)
    }
    orgBox.append(btn('New organization', { class: 'secondary small', onclick: newOrgDialog }))
    for (const p of allowedPages()) nav.append(h('a', { href: `#/${p.id}`, 'data-page': p.id }, p.title))
    account.append(
      h('a', { href: '#/account', class: 'email', title: 'Your account and connected apps' }, state.me.email),
      btn('Sessions', { class: 'secondary small', id: 'sessions', onclick: sessionsDialog }),
      btn('Security', { class: 'secondary small', id: 'security', onclick: securityDialog }),
      btn('Sign out', { class: 'secondary small', id: 'sign-out', onclick: signOut }))
  }

  async function signOut() {
    try {
      await api('DELETE', '/v1/session', undefined, { quiet401: true })
    } catch (e) {
      if (e.status !== 401) return toast(e.message)
    }
    history.replaceState(null, '', '#/')
    signedOut()
  }

  function switchOrg(id) {
    pickOrg(id)
    render({ focus: true })
  }

  function renderFatal(e) {
    $('#main').replaceChildren(h('h1', null, 'Something went wrong'), h('p', { class: 'error' }, e.message))
  }

  // ---------------------------------------------------------------- signing in
  // Every way in goes through /auth/v1 (Supabase Auth's routes) with the publishable key, as
  // any app would; what a flow answers (an access token) is then exchanged once for the
  // HttpOnly dashboard cookie (POST /v1/session) and dropped, and the token's own session is
  // ended. Links in mails land on /dashboard/#access_token=… (or #error=…), read once below.
  let authConfig = null
  const config = () => (authConfig ||= fetch('/dashboard/config.json', { cache: 'no-store' })
    .then((r) => r.json())
    .catch(() => { authConfig = null; throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.') }))
  const landing = () => `${location.origin}/dashboard/`

  // One /auth/v1 call; returns the JSON answer or throws an ApiError with the server's message.
  async function auth(method, path, body, { token, redirect = false } = {}) {
    const { publishable_key: key } = await config()
    const headers = { accept: 'application/json', apikey: key, 'x-supabase-api-version': '2024-01-01' }
    if (token) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    const url = `/auth/v1${path}${redirect ? `${path.includes('?') ? '&' : '?'}redirect_to=${encodeURIComponent(landing())}` : ''}`
    let res
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'omit', cache: 'no-store' })
    } catch {
      throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.')
    }
    let json = null
    try { json = await res.json() } catch { /* reported below */ }
    if (res.ok) return json || {}
    throw new ApiError(res.status, (json && json.code) || 'error', (json && (json.message || json.msg)) || `The server answered ${res.status}.`)
  }

  // An access token from a flow becomes the cookie session; the token is then signed out.
  async function exchange(accessToken) {
    await api('POST', '/v1/session', { access_token: accessToken }, { quiet401: true })
    auth('POST', '/logout?scope=local', undefined, { token: accessToken }).catch(() => {})
    await enter()
  }
  async function passwordSession(email, password) {
    await api('POST', '/v1/session', { email, password }, { quiet401: true })
    // With a verified second factor the password alone opens an aal1 session: ask for a code,
    // and reopen the session with the aal2 token it earns. The token stays in this closure.
    let s = null
    try {
      s = await auth('POST', '/token?grant_type=password', { email, password })
    } catch { /* the cookie session stands at aal1 */ }
    const factor = s && verifiedFactors(s.user)[0]
    if (factor) return renderMfa(s, factor)
    if (s) auth('POST', '/logout?scope=local', undefined, { token: s.access_token }).catch(() => {})
    await enter()
  }
  const verifiedFactors = (user) => ((user && user.factors) || []).filter((f) => f.status === 'verified')
  const aalOf = (token) => {
    try { return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).aal } catch { return null }
  }
  // A code from the authenticator app for factor f, with token: a new session at aal2.
  async function verifyCode(token, f, code) {
    const c = await auth('POST', `/factors/${encodeURIComponent(f.id)}/challenge`, {}, { token })
    return auth('POST', `/factors/${encodeURIComponent(f.id)}/verify`, { challenge_id: c.id, code }, { token })
  }
  // The dashboard session becomes the aal2 one a verified code opened (the token lives on
  // with its holder, who signs it out).
  async function reopenSession(accessToken) {
    await api('DELETE', '/v1/session', undefined, { quiet401: true }).catch(() => {})
    await api('POST', '/v1/session', { access_token: accessToken }, { quiet401: true })
    await enter()
  }

  // The second sign-in step of a person with a verified factor.
  function renderMfa(s, factor) {
    document.body.classList.add('signed-out')
    document.title = 'Two-factor authentication · Gatehouse'
    const err = errorSlot()
    const code = h('input', { id: 'mfa-code', name: 'code', required: true, inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: '6' })
    const submit = submitBtn('Verify')
    const form = h('form', { class: 'card signin', 'aria-labelledby': 'mfa-h', novalidate: true },
      h('h1', { id: 'mfa-h' }, 'Two-factor authentication'),
      h('p', { class: 'hint' }, 'Enter the six-digit code your authenticator app shows for Gatehouse.'),
      field('mfa-code', 'Code from your authenticator app', code), err, submit,
      h('p', { class: 'alt' }, linkBtn('Skip for now', () => {
        auth('POST', '/logout?scope=local', undefined, { token: s.access_token }).catch(() => {})
        enter()
      })))
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      busy(submit, err, async () => {
        const v = await verifyCode(s.access_token, factor, code.value.trim())
        await reopenSession(v.access_token)
        auth('POST', '/logout?scope=local', undefined, { token: v.access_token }).catch(() => {})
      })
    })
    $('#main').replaceChildren(form)
    code.focus()
  }

  // The person's own second factors: add an authenticator app, remove one. Every call goes
  // to /auth/v1 with a token this dialog gets from the password and drops when it closes.
  function securityDialog() {
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'security-h' })
    const err = errorSlot()
    const body = h('div', { class: 'stack' })
    let s = null
    const close = () => {
      if (s) auth('POST', '/logout?scope=local', undefined, { token: s.access_token }).catch(() => {})
      s = null
      dlg.close()
      dlg.remove()
    }
    dlg.append(h('h2', { id: 'security-h' }, 'Two-factor authentication'), err, body,
      h('div', { class: 'actions' }, btn('Close', { class: 'secondary', onclick: close })))
    dlg.addEventListener('cancel', (ev) => { ev.preventDefault(); close() })

    const form = (label, input, submitText, fn) => {
      const id = input.id
      const b = h('button', { type: 'submit', class: 'primary' }, h('span', { class: 'label' }, submitText))
      const f = h('form', { novalidate: true }, field(id, label, input), b)
      f.addEventListener('submit', (ev) => { ev.preventDefault(); busy(b, err, fn) })
      return f
    }
    const codeField = (id) => h('input', { id, name: 'code', required: true, inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: '6' })
    // aal2 first when a verified factor exists and the token is aal1.
    function stepUp(then) {
      const f = verifiedFactors(s.user)[0]
      if (!f || aalOf(s.access_token) === 'aal2') return then()
      const code = codeField('security-stepup')
      body.replaceChildren(h('p', null, 'First enter a code from your authenticator app.'),
        form('Code from your authenticator app', code, 'Continue', async () => {
          s = await verifyCode(s.access_token, f, code.value.trim())
          await then()
        }))
      code.focus()
    }
    function showFactors() {
      const factors = (s.user.factors || []).filter((f) => f.status === 'verified')
      const rows = factors.map((f) => h('li', null, `${f.friendly_name || 'Authenticator app'} (added ${fmtDate(Date.parse(f.created_at))}) `,
        btn('Remove', { class: 'danger small', 'aria-label': `Remove ${f.friendly_name || 'authenticator app'}`, onclick: (ev) => busy(ev.currentTarget, err, () => stepUp(async () => {
          await auth('DELETE', `/factors/${encodeURIComponent(f.id)}`, undefined, { token: s.access_token })
          s.user = await auth('GET', '/user', undefined, { token: s.access_token })
          toast('The authenticator app was removed.')
          showFactors()
        })) })))
      body.replaceChildren(
        h('p', { role: 'status' }, factors.length ? 'Two-factor authentication is on.' : 'Two-factor authentication is off: your password alone signs you in.'),
        factors.length ? h('ul', { class: 'plain' }, rows) : null,
        btn('Add an authenticator app', { class: 'primary', onclick: (ev) => busy(ev.currentTarget, err, () => stepUp(enrol)) }))
    }
    async function enrol() {
      const e = await auth('POST', '/factors', { factor_type: 'totp' }, { token: s.access_token })
      const code = codeField('security-code')
      const qr = h('img', { class: 'qr', alt: 'QR code to scan with your authenticator app', src: `data:image/svg+xml;utf-8,${encodeURIComponent(e.totp.qr_code)}` })
      body.replaceChildren(
        h('p', null, 'Scan the QR code with your authenticator app, or enter the key by hand. Then type the code it shows.'),
        qr,
        secretBox({ heading: 'Setup key', value: e.totp.secret, warning: 'It is shown only now; anyone with it can make your codes.' }),
        form('Code from your authenticator app', code, 'Turn on', async () => {
          const v = await verifyCode(s.access_token, { id: e.id }, code.value.trim())
          await reopenSession(v.access_token)
          s = v
          toast('Two-factor authentication is on.')
          showFactors()
        }))
      code.focus()
    }

    const password = h('input', { id: 'security-password', type: 'password', name: 'password', required: true, autocomplete: 'current-password' })
    body.append(h('p', null, 'A code from an authenticator app, on top of your password, protects your account; some organizations require it.'),
      form('Your password', password, 'Continue', async () => {
        s = await auth('POST', '/token?grant_type=password', { email: state.me.email, password: password.value })
        password.value = ''
        showFactors()
      }))
    document.body.append(dlg)
    dlg.showModal()
    password.focus()
  }
  async function enter() {
    state.me = await api('GET', '/v1/me')
    pickOrg()
    render({ focus: true })
  }

  // What an emailed link left in the fragment: a session (#access_token=…&type=…) or an error.
  function linkOutcome() {
    const frag = location.hash.slice(1)
    if (!/^(access_token|error|message)=|&(access_token|error)=/.test(frag)) return null
    const q = new URLSearchParams(frag)
    history.replaceState(null, '', location.pathname)
    if (q.get('access_token')) return { token: q.get('access_token'), type: q.get('type') || '' }
    if (q.get('error')) return { error: q.get('error_description') || q.get('error') }
    return { notice: q.get('message') }
  }

  async function followLink(o) {
    if (o.error) return renderAuth('signin', { error: `${o.error}. Ask for a new mail below.` })
    if (o.notice) return renderAuth('signin', { notice: o.notice })
    if (o.type === 'recovery') return renderAuth('reset', { token: o.token })
    try {
      await exchange(o.token)
    } catch (e) {
      renderAuth('signin', { error: e.message })
    }
  }

  const field = (id, label, input, hint) => h('div', { class: 'field' }, h('label', { for: id }, label), input,
    hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null)
  const emailInput = (id, value = '') => h('input', { id, type: 'email', name: 'email', required: true, autocomplete: 'username', value })
  const codeInput = (id) => h('input', { id, name: 'code', required: true, inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: '6' })
  const newPassword = (id) => h('input', { id, type: 'password', name: 'new-password', required: true, minlength: '8', autocomplete: 'new-password' })
  const submitBtn = (text) => h('button', { type: 'submit', class: 'primary wide' }, h('span', { class: 'label' }, text))
  const linkBtn = (text, onclick) => h('button', { type: 'button', class: 'link', onclick }, text)

  // The signed-out screens: 'signin' (password), 'code' (emailed code or link), 'signup',
  // 'forgot' (recovery mail, then the code and a new password) and 'reset' (a recovery
  // link was followed: a new password). opts: { email, notice, error, token, sent }.
  function renderAuth(mode = 'signin', opts = {}) {
    document.body.classList.add('signed-out')
    for (const id of ['#org', '#nav', '#account']) $(id).replaceChildren()
    const err = errorSlot()
    const titles = { signin: 'Sign in to Gatehouse', code: 'Sign in with an emailed code', signup: 'Create your Gatehouse account', forgot: 'Reset your password', reset: 'Choose a new password' }
    document.title = `${titles[mode]} · Gatehouse`
    const form = h('form', { class: 'card signin', 'aria-labelledby': 'signin-h', novalidate: true },
      h('h1', { id: 'signin-h' }, titles[mode]),
      opts.notice ? h('p', { class: 'notice', role: 'status' }, opts.notice) : null)
    if (opts.error) showError(err, { message: opts.error })
    const go = (m, o = {}) => () => renderAuth(m, o)
    let first
    // Runs the step with the form's own validity shown in the alert area first.
    const onSubmit = (button, fn) => form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      const bad = [...form.querySelectorAll('input')].find((i) => !i.checkValidity())
      if (bad) {
        clearError(err)
        showError(err, { message: `${bad.labels[0].textContent}: ${bad.validationMessage}` })
        bad.setAttribute('aria-invalid', 'true')
        return bad.focus()
      }
      for (const i of form.querySelectorAll('[aria-invalid]')) i.removeAttribute('aria-invalid')
      busy(button, err, fn)
    })

    if (mode === 'signin') {
      const email = emailInput('signin-email', opts.email)
      const password = h('input', { id: 'signin-password', type: 'password', name: 'password', required: true, autocomplete: 'current-password' })
      const submit = submitBtn('Sign in')
      form.append(field('signin-email', 'Email', email), field('signin-password', 'Password', password), err, submit,
        h('p', { class: 'alt' }, linkBtn('Forgot password?', () => renderAuth('forgot', { email: email.value.trim() })), ' · ',
          linkBtn('Email me a sign-in code', () => renderAuth('code', { email: email.value.trim() }))),
        h('p', { class: 'alt' }, 'New here? ', linkBtn('Create an account', () => renderAuth('signup', { email: email.value.trim() }))))
      onSubmit(submit, async () => {
        await passwordSession(email.value.trim(), password.value)
        password.value = ''
      })
      first = opts.email ? password : email
    } else if (mode === 'code') {
      const email = emailInput('code-email', opts.email)
      if (!opts.sent) {
        const submit = submitBtn('Email me a code')
        form.append(h('p', { class: 'hint' }, 'We send a six-digit code and a sign-in link to your address. Either one signs you in.'),
          field('code-email', 'Email', email), err, submit)
        onSubmit(submit, async () => {
          const address = email.value.trim()
          await auth('POST', '/otp', { email: address, create_user: false }, { redirect: true })
          renderAuth('code', { email: address, sent: true })
        })
      } else {
        const code = codeInput('code-value')
        const submit = submitBtn('Sign in')
        form.append(h('p', { class: 'notice', role: 'status' }, `If ${opts.email} has an account, a mail with a six-digit code and a sign-in link is on its way. Enter the code here, or follow the link.`),
          field('code-value', 'Code from the mail', code), err, submit)
        onSubmit(submit, async () => {
          const s = await auth('POST', '/verify', { type: 'email', email: opts.email, token: code.value.trim() })
          await exchange(s.access_token)
        })
        first = code
      }
      form.append(h('p', { class: 'alt' }, linkBtn('Sign in with a password instead', go('signin', { email: opts.email }))))
    } else if (mode === 'signup') {
      if (!opts.sent) {
        const email = emailInput('signup-email', opts.email)
        const password = newPassword('signup-password')
        password.setAttribute('aria-describedby', 'signup-password-hint')
        const submit = submitBtn('Create account')
        form.append(field('signup-email', 'Email', email), field('signup-password', 'Password', password, 'At least 8 characters; a long phrase is best.'), err, submit,
          h('p', { class: 'alt' }, 'Have an account? ', linkBtn('Sign in', () => renderAuth('signin', { email: email.value.trim() }))))
        onSubmit(submit, async () => {
          const address = email.value.trim()
          const s = await auth('POST', '/signup', { email: address, password: password.value }, { redirect: true })
          // Confirmed at once (no mail on this server): a session came back.
          if (s.access_token) return exchange(s.access_token)
          password.value = ''
          renderAuth('signup', { email: address, sent: true })
        })
      } else {
        const code = codeInput('signup-code')
        const submit = submitBtn('Confirm and sign in')
        form.append(h('p', { class: 'notice', role: 'status' }, `Confirm your address: we sent a mail to ${opts.email}. Enter the six-digit code from it, or follow its link.`),
          field('signup-code', 'Code from the mail', code), err, submit,
          h('p', { class: 'alt' }, 'No mail? Check the spam folder, or ', linkBtn('sign up again', go('signup', { email: opts.email })), ' for a new one.'))
        onSubmit(submit, async () => {
          const s = await auth('POST', '/verify', { type: 'signup', email: opts.email, token: code.value.trim() })
          await exchange(s.access_token)
        })
        first = code
      }
    } else if (mode === 'forgot') {
      const email = emailInput('forgot-email', opts.email)
      if (!opts.sent) {
        const submit = submitBtn('Email me a reset code')
        form.append(h('p', { class: 'hint' }, 'We send a six-digit code and a link to choose a new password.'),
          field('forgot-email', 'Email', email), err, submit)
        onSubmit(submit, async () => {
          const address = email.value.trim()
          await auth('POST', '/recover', { email: address }, { redirect: true })
          renderAuth('forgot', { email: address, sent: true })
        })
      } else {
        const code = codeInput('forgot-code')
        const password = newPassword('forgot-password')
        const submit = submitBtn('Set password and sign in')
        form.append(h('p', { class: 'notice', role: 'status' }, `If ${opts.email} has an account, a mail with a six-digit code and a link is on its way. Enter the code and your new password, or follow the link.`),
          field('forgot-code', 'Code from the mail', code), field('forgot-password', 'New password', password, 'At least 8 characters.'), err, submit)
        onSubmit(submit, async () => {
          const s = await auth('POST', '/verify', { type: 'recovery', email: opts.email, token: code.value.trim() })
          await setPassword(s.access_token, opts.email, password.value)
        })
        first = code
      }
      form.append(h('p', { class: 'alt' }, linkBtn('Back to sign in', go('signin', { email: opts.email }))))
    } else if (mode === 'reset') {
      const password = newPassword('reset-password')
      const submit = submitBtn('Set password and sign in')
      form.append(field('reset-password', 'New password', password, 'At least 8 characters.'), err, submit)
      onSubmit(submit, async () => {
        const u = await auth('GET', '/user', undefined, { token: opts.token })
        await setPassword(opts.token, u.email, password.value)
      })
      first = password
    }
    $('#main').replaceChildren(form)
    ;(first || form.querySelector('input'))?.focus()
  }

  // The recovery session sets the new password, then signs in with it (not with the token:
  // choosing a password may take longer than a token may be exchanged).
  async function setPassword(token, email, password) {
    await auth('PUT', '/user', { password }, { token })
    auth('POST', '/logout?scope=local', undefined, { token }).catch(() => {})
    await passwordSession(email, password)
    toast('Your new password is set.')
  }
  const renderSignIn = (notice) => renderAuth('signin', { notice })

  // ---------------------------------------------------------------- accepting an invitation
  // The mailed link is /dashboard/#invitation=inv_…&token=…: the token stays in the fragment
  // (never sent in a URL) and is dropped from the address bar at once.
  function invitationLink() {
    if (!location.hash.startsWith('#invitation=')) return null
    const q = new URLSearchParams(location.hash.slice(1))
    history.replaceState(null, '', location.pathname)
    const id = q.get('invitation'), token = q.get('token')
    return id && token ? { id, token } : null
  }

  async function acceptPage(link) {
    document.body.classList.add('signed-out')
    for (const id of ['#org', '#nav', '#account']) $(id).replaceChildren()
    document.title = 'Invitation · Gatehouse'
    const main = $('#main')
    main.replaceChildren(h('p', { class: 'muted' }, 'Loading the invitation…'))
    let inv, me = null
    try {
      inv = await api('POST', '/v1/invitations/lookup', { token: link.token }, { quiet401: true })
      me = await api('GET', '/v1/me', undefined, { quiet401: true }).catch((e) => { if (e.status === 401) return null; throw e })
    } catch (e) {
      return main.replaceChildren(h('section', { class: 'card signin' }, h('h1', null, 'Invitation'),
        h('p', { class: 'error', role: 'alert' }, e.message), h('p', null, h('a', { href: '/dashboard' }, 'Go to the dashboard'))))
    }
    const err = errorSlot()
    const card = h('section', { class: 'card signin', 'aria-labelledby': 'invite-h' },
      h('h1', { id: 'invite-h' }, `Join ${inv.org_name}`),
      h('p', null, `${inv.inviter_email} invited `, h('strong', null, inv.email), ` to join ${inv.org_name} as `, h('strong', null, inv.role), '.'),
      h('p', { class: 'hint' }, `The invitation expires ${fmtTime(inv.expires_at)}.`))
    main.replaceChildren(card)
    const joined = async () => {
      state.me = await api('GET', '/v1/me')
      pickOrg(inv.org_id)
      render({ focus: true })
      toast(`You joined ${inv.org_name}.`)
    }
    if (inv.status !== 'pending') {
      card.append(h('p', { class: 'error', role: 'alert' }, `This invitation is ${inv.status}.`),
        h('p', null, h('a', { href: '/dashboard' }, 'Go to the dashboard')))
      return
    }
    if (me && me.kind === 'user') {
      if (me.email !== inv.email) {
        card.append(h('p', { class: 'notice' }, `You are signed in as ${me.email}; this invitation is for ${inv.email}. Sign out and sign in (or sign up) with that address.`),
          err, btn('Sign out', { class: 'primary wide', onclick: async (ev) => {
            await busy(ev.currentTarget, err, async () => {
              await api('DELETE', '/v1/session', undefined, { quiet401: true })
              acceptPage(link)
            })
          } }))
        return
      }
      const accept = btn('Accept and join', { class: 'primary wide' })
      const decline = btn('Decline', { class: 'secondary wide' })
      accept.addEventListener('click', () => busy(accept, err, async () => {
        await api('POST', `/v1/invitations/${encodeURIComponent(inv.id)}/accept`)
        await joined()
      }))
      decline.addEventListener('click', () => busy(decline, err, async () => {
        await api('POST', `/v1/invitations/${encodeURIComponent(inv.id)}/decline`)
        toast('Invitation declined.')
        await boot()
      }))
      card.append(h('p', null, `Signed in as ${me.email}.`), err, h('div', { class: 'stack' }, accept, decline))
      accept.focus()
      return
    }
    // Not signed in: create an account (the link proves the address) or sign in.
    const email = h('input', { id: 'invite-email', type: 'email', value: inv.email, readonly: true, autocomplete: 'username' })
    const password = h('input', { id: 'invite-password', type: 'password', required: true, minlength: '8', autocomplete: 'new-password', 'aria-describedby': 'invite-password-hint' })
    const create = h('button', { type: 'submit', class: 'primary wide' }, h('span', { class: 'label' }, 'Create account and join'))
    const signIn = btn('I have an account: sign in and join', { class: 'secondary wide' })
    const form = h('form', { class: 'stack' },
      h('div', { class: 'field' }, h('label', { for: 'invite-email' }, 'Email'), email),
      h('div', { class: 'field' }, h('label', { for: 'invite-password' }, 'Password'), password,
        h('p', { class: 'hint', id: 'invite-password-hint' }, 'New here? Choose a password of at least 8 characters. Already have an account? Enter its password and sign in.')),
      err, create, signIn)
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      busy(create, err, async () => {
        await api('POST', '/v1/invitations/redeem', { token: link.token, password: password.value }, { quiet401: true })
        await api('POST', '/v1/session', { email: inv.email, password: password.value }, { quiet401: true })
        password.value = ''
        await joined()
      })
    })
    signIn.addEventListener('click', () => {
      if (!form.reportValidity()) return
      busy(signIn, err, async () => {
        await api('POST', '/v1/session', { email: inv.email, password: password.value }, { quiet401: true })
        password.value = ''
        await api('POST', `/v1/invitations/${encodeURIComponent(inv.id)}/accept`)
        await joined()
      })
    })
    card.append(form)
    password.focus()
  }

  // ---------------------------------------------------------------- organizations
  function orgForm(onDone) {
    const err = errorSlot()
    const name = h('input', { id: nextId('org-name'), required: true, maxlength: '100', autocomplete: 'off' })
    const submit = h('button', { type: 'submit', class: 'primary' }, h('span', { class: 'label' }, 'Create organization'))
    const form = h('form', { class: 'stack' },
      h('div', { class: 'field' }, h('label', { for: name.id }, 'Organization name'), name), err, submit)
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      busy(submit, err, async () => {
        const o = await api('POST', '/v1/orgs', { name: name.value.trim() })
        await refreshMe()
        pickOrg(o.id)
        onDone && onDone()
        render({ focus: true })
      })
    })
    return { form, name }
  }

  function newOrgDialog() {
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'new-org-h' })
    const close = () => { dlg.close(); dlg.remove() }
    const { form, name } = orgForm(close)
    dlg.append(h('h2', { id: 'new-org-h' }, 'New organization'), form,
      h('div', { class: 'actions' }, btn('Cancel', { class: 'secondary', onclick: close })))
    dlg.addEventListener('cancel', (ev) => { ev.preventDefault(); close() })
    document.body.append(dlg)
    dlg.showModal()
    name.focus()
  }

  // ---------------------------------------------------------------- sessions per device
  // The person's sign-ins through /auth/v1 (apps, other browsers), from GET /v1/me/sessions:
  // each can be signed out, or all at once. The dashboard's own cookie is not among them.
  const when = (ms) => new Date(ms).toLocaleString()

  function sessionsDialog() {
    const dlg = h('dialog', { class: 'dialog wide', 'aria-labelledby': 'sessions-h' })
    const close = () => { dlg.close(); dlg.remove() }
    const err = errorSlot()
    const body = h('div', { id: 'sessions-list' })
    const others = btn('Sign out everywhere else', { class: 'danger', id: 'sessions-others' })
    others.onclick = () => busy(others, err, async () => {
      const ok = await confirmDialog({ title: 'Sign out everywhere else?', text: 'Every app and browser signed in to your account is signed out. This dashboard stays signed in.', ok: 'Sign out everywhere else' })
      if (!ok) return
      const r = await api('DELETE', '/v1/me/sessions?others=true')
      toast(r.ended === 1 ? '1 session signed out.' : `${r.ended} sessions signed out.`)
      await load()
    })

    async function end(button, s) {
      await busy(button, err, async () => {
        await api('DELETE', `/v1/me/sessions/${encodeURIComponent(s.id)}`)
        toast('Session signed out.')
        await load()
      })
    }

    async function load() {
      const list = await api('GET', '/v1/me/sessions')
      body.replaceChildren()
      if (!list.length) {
        body.append(h('p', { class: 'empty' }, 'No app or browser is signed in with your account.'))
        others.hidden = true
        return
      }
      others.hidden = false
      body.append(h('table', { class: 'table' },
        h('thead', null, h('tr', null, ['Device', 'Address', 'Signed in', 'Last active', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, list.map((s) => h('tr', { 'data-session': s.id },
          h('td', null, s.user_agent || 'Unknown device', s.current ? [' ', h('span', { class: 'badge active' }, 'This session')] : null,
            h('div', { class: 'hint' }, `by ${s.sign_in_method}`)),
          h('td', null, s.ip || '—'),
          h('td', null, when(s.created_at)),
          h('td', null, when(s.last_refreshed_at)),
          h('td', null, s.current ? null : btn('Sign out', { class: 'secondary small', 'aria-label': `Sign out ${s.user_agent || 'this device'}`, onclick: (ev) => end(ev.currentTarget, s) })))))))
    }

    dlg.append(h('h2', { id: 'sessions-h' }, 'Where you are signed in'), err, body,
      h('div', { class: 'actions' }, btn('Close', { class: 'secondary', onclick: close }), others))
    dlg.addEventListener('cancel', (ev) => { ev.preventDefault(); close() })
    document.body.append(dlg)
    dlg.showModal()
    load().catch((e) => showError(err, e))
  }

  function noOrgPage(main) {
    document.title = 'Gatehouse'
    const { form } = orgForm()
    main.append(h('h1', { tabindex: '-1' }, 'Welcome'),
      h('section', { class: 'card narrow' },
        h('p', null, 'You are not a member of any organization yet. Create one, or ask an owner to invite you.'), form))
  }

  // ---------------------------------------------------------------- API keys
  const KEY_FORBIDDEN_SCOPES = ['keys:write', 'members:write'] // keys can never carry these
  const EXPIRY = [['30', '30 days'], ['90', '90 days'], ['365', '1 year'], ['never', 'Never']]
  // What each permission lets its holder do, in one line (the scopes of a key and a role's).
  const SCOPE_TEXT = {
    'keys:read': 'List this organization’s keys (never their secrets).',
    'keys:write': 'Create, roll and revoke keys.',
    'members:read': 'List members, roles and invitations.',
    'members:write': 'Invite, change and remove members; manage roles.',
    'widgets:read': 'List widgets and their settings.',
    'widgets:write': 'Create, change and delete widgets; mint widget tokens.',
    'chat:write': 'Chat through the gateway (POST /v1/chat) and delete threads.',
    'threads:read': 'Read chat threads and their messages.',
    'analytics:read': 'Read usage counts.',
    'audit:read': 'Read the audit log.',
    'webhooks:read': 'List webhook endpoints and their deliveries.',
    'webhooks:write': 'Manage webhook endpoints, send tests, retry deliveries.',
    'export:read': 'Export usage as CSV.',
    'keys:verify': 'Check other keys for your own services (POST /v1/keys/verify).',
  }
  // Ready-made sets of scopes; "all" is every scope the form offers.
  const PRESETS = [
    { name: 'Chat client', scopes: ['chat:write', 'threads:read'], text: 'A server that chats and reads its threads.' },
    { name: 'Read-only analytics', scopes: ['analytics:read', 'export:read'], text: 'Dashboards and reports: usage and exports.' },
    { name: 'Key verifier', scopes: ['keys:verify'], text: 'Your own service checks the keys its callers send.' },
    { name: 'Everything a key may have', scopes: 'all', text: 'Every scope your role can give a key.' },
  ]
  // The routes a key with these scopes can call ({org} is the organization's id).
  const KEY_ROUTES = [
    [null, 'GET /v1/me', 'who the key is, its scopes and rate limits'],
    ['chat:write', 'POST /v1/chat', 'chat through the gateway'],
    ['threads:read', 'GET /v1/threads', 'list threads (and GET /v1/threads/{id})'],
    ['keys:verify', 'POST /v1/keys/verify', 'verify a key your callers sent'],
    ['analytics:read', 'GET /v1/orgs/{org}/usage', 'usage counts'],
    ['export:read', 'GET /v1/orgs/{org}/export', 'usage as CSV'],
    ['audit:read', 'GET /v1/orgs/{org}/audit-log', 'the audit log'],
    ['keys:read', 'GET /v1/orgs/{org}/api-keys', 'the organization’s keys'],
    ['members:read', 'GET /v1/orgs/{org}/members', 'members (and roles, invitations)'],
    ['widgets:read', 'GET /v1/orgs/{org}/widgets', 'widgets'],
    ['widgets:write', 'POST /v1/orgs/{org}/widgets', 'create and change widgets, mint tokens'],
    ['webhooks:read', 'GET /v1/orgs/{org}/webhooks', 'webhook endpoints and deliveries'],
    ['webhooks:write', 'POST /v1/orgs/{org}/webhooks', 'manage webhook endpoints'],
  ]

  // ---------------------------------------------------------------- spending and limits
  // What AI traffic may cost (docs/usage-governance.md): credits (uses) per key, money
  // budgets per key, organization and end user, model allow-lists, token windows and
  // parallel streams. Money is an integer count of micro-units of the deployment's currency
  // (`currency` in /dashboard/config.json): typed amounts are parsed as decimal text, never
  // through a float, and only printed through one.
  const MICRO = 1_000_000
  let currencyCode = 'USD'
  config().then((c) => { if (c.currency) currencyCode = c.currency }).catch(() => {})
  function fmtMoney(micro) {
    const v = Number(micro || 0) / MICRO
    try {
      return new Intl.NumberFormat(undefined, { style: 'currency', currency: currencyCode, minimumFractionDigits: 2, maximumFractionDigits: 6 }).format(v)
    } catch {
      return `${v.toFixed(2)} ${currencyCode}`
    }
  }
  // "12", "12.5", "0.000001" → micro-units (an integer), or null when it is not an amount.
  function parseMoney(text) {
    const m = String(text).trim().replace(/^[^\d.]+/, '').match(/^(\d{1,12})(?:\.(\d{0,6}))?$/)
    if (!m) return null
    return Number(m[1]) * MICRO + Number((m[2] || '').padEnd(6, '0'))
  }
  // Micro-units back to the decimal text an input shows.
  function moneyText(micro) {
    const whole = Math.floor(micro / MICRO), frac = String(micro % MICRO).padStart(6, '0').replace(/0+$/, '')
    return frac ? `${whole}.${frac.length < 2 ? frac.padEnd(2, '0') : frac}` : String(whole)
  }
  const PERIODS = [['day', 'per day'], ['week', 'per week'], ['month', 'per month'], ['total', 'in total']]
  const PERIOD_TEXT = Object.fromEntries(PERIODS)
  const budgetText = (b) => `${fmtMoney(b.amount)} ${PERIOD_TEXT[b.period] || b.period}${b.soft ? ' (alert only)' : ''}`

  // One line per limit a key (or organization) has; "Unlimited" when it has none.
  function limitsSummary(x) {
    const out = []
    if (x.credits) {
      const r = x.credits.refill
      out.push(`${fmtNum(x.credits.remaining)} credits left${r ? `, refilled to ${fmtNum(r.amount)} ${r.interval === 'monthly' ? `monthly (day ${r.day || 1})` : 'daily'}` : ''}`)
    }
    for (const b of x.budgets || []) out.push(`Budget ${budgetText(b)}`)
    for (const b of x.end_user_budgets || []) out.push(`Each end user: ${budgetText(b)}`)
    for (const b of x.client_budgets || []) out.push(`Each connected app: ${budgetText(b)}`)
    if (x.allowed_models) out.push(`Models: ${x.allowed_models.length ? x.allowed_models.join(', ') : 'none'}`)
    const t = x.token_limits
    if (t && t.tokens_per_minute) out.push(`${fmtNum(t.tokens_per_minute)} tokens/min`)
    if (t && t.tokens_per_day) out.push(`${fmtNum(t.tokens_per_day)} tokens/day`)
    if (x.max_parallel) out.push(`${fmtNum(x.max_parallel)} parallel stream${x.max_parallel === 1 ? '' : 's'}`)
    return out
  }
  const limitsList = (x) => {
    const lines = limitsSummary(x)
    return lines.length ? h('ul', { class: 'plain limits' }, lines.map((l) => h('li', null, l))) : h('span', { class: 'muted' }, 'Unlimited')
  }

  // A list of budgets to edit: amount, period, alert only; rows are added and removed.
  // `what` names the rows for their labels ("Budget 1 amount", "End-user budget 1 amount").
  function budgetsEditor(what, initial, legend, hint) {
    const rows = h('div', { class: 'budget-rows' })
    const add = btn(`Add ${what.toLowerCase()}`, { class: 'secondary small' })
    const box = h('fieldset', { class: 'budgets' }, h('legend', null, legend), rows, add, h('p', { class: 'hint' }, hint))
    function relabel() {
      ;[...rows.children].forEach((r, i) => {
        const n = i + 1
        r.querySelector('.b-amount').setAttribute('aria-label', `${what} ${n} amount (${currencyCode})`)
        r.querySelector('.b-period').setAttribute('aria-label', `${what} ${n} period`)
        r.querySelector('.b-soft-text').textContent = 'Alert only'
        r.querySelector('.b-soft').setAttribute('aria-label', `${what} ${n} alert only`)
        r.querySelector('.b-remove').setAttribute('aria-label', `Remove ${what.toLowerCase()} ${n}`)
      })
    }
    function addRow(b = {}) {
      const amount = h('input', { class: 'b-amount', inputmode: 'decimal', autocomplete: 'off', placeholder: '10.00', value: b.amount ? moneyText(b.amount) : '' })
      const period = h('select', { class: 'b-period' }, PERIODS.map(([v, t]) => h('option', { value: v, selected: v === (b.period || 'month') }, t)))
      const soft = h('input', { type: 'checkbox', class: 'b-soft', checked: !!b.soft })
      const remove = h('button', { type: 'button', class: 'secondary small b-remove', onclick: () => { row.remove(); relabel(); add.focus() } }, icon(TRASH))
      const row = h('div', { class: 'budget-row' }, h('span', { class: 'cur', 'aria-hidden': 'true' }, currencyCode), amount, period,
        h('label', { class: 'check' }, soft, h('span', { class: 'b-soft-text' })), remove)
      rows.append(row)
      relabel()
      return amount
    }
    add.addEventListener('click', () => addRow().focus())
    for (const b of initial || []) addRow(b)
    // The budgets typed, or null for none; throws a message naming the bad row.
    box.read = () => {
      const list = [...rows.children].map((r, i) => {
        const text = r.querySelector('.b-amount').value
        const amount = parseMoney(text)
        if (!amount) throw new Error(`${what} ${i + 1}: give an amount above zero, such as 10 or 2.50 (${currencyCode}).`)
        const b = { amount, period: r.querySelector('.b-period').value }
        if (r.querySelector('.b-soft').checked) b.soft = true
        return b
      })
      return list.length ? list : null
    }
    return box
  }

  // A whole number field (empty: no limit).
  function countInput(id, value, { min = 1, max } = {}) {
    return h('input', { id, type: 'number', inputmode: 'numeric', min: String(min), max: max ? String(max) : null, step: '1', value: value ?? '', autocomplete: 'off', placeholder: 'No limit' })
  }
  function readCount(input, label, { min = 1 } = {}) {
    const t = input.value.trim()
    if (!t) return null
    if (!/^\d+$/.test(t) || Number(t) < min || !Number.isSafeInteger(Number(t))) throw new Error(`${label}: give a whole number of at least ${min}, or leave it empty.`)
    return Number(t)
  }
  const same = (a, b) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null)
  // A stored setting in the shape the form reads it, so that an untouched field compares equal
  // (and is not sent again: re-sending credits would reset what was spent meanwhile).
  const NORM = {
    credits: (c) => c ? { remaining: c.remaining, ...(c.refill ? { refill: { interval: c.refill.interval, amount: c.refill.amount, ...(c.refill.interval === 'monthly' ? { day: c.refill.day || 1 } : {}) } } : {}) } : null,
    budgets: (l) => (l && l.length ? l.map((b) => ({ amount: b.amount, period: b.period, ...(b.soft ? { soft: true } : {}) })) : null),
    allowed_models: (l) => (l && l.length ? l : null), // [] (no model) is not shown, so it is kept
    token_limits: (t) => {
      const o = {}
      for (const k of ['tokens_per_minute', 'tokens_per_day']) if (t && t[k]) o[k] = t[k]
      return Object.keys(o).length ? o : null
    },
    max_parallel: (n) => n || null,
  }
  NORM.end_user_budgets = NORM.budgets
  NORM.client_budgets = NORM.budgets

  // The spending and limit fields of a key (scope 'key') or an organization (scope 'org').
  // Returns { el, read(initial) }: read gives the body fields; with `initial` (an update)
  // only the fields that changed, `null` for a cleared one (PATCH semantics).
  function limitsFields(scope, x = {}) {
    const p = nextId('lim')
    const parts = []
    let credits = null
    if (scope === 'key') {
      const c = x.credits || null
      const remaining = countInput(`${p}-credits`, c ? c.remaining : '', { min: 0 })
      const interval = h('select', { id: `${p}-refill` }, [['', 'Never'], ['daily', 'Daily (UTC midnight)'], ['monthly', 'Monthly']]
        .map(([v, t]) => h('option', { value: v, selected: v === ((c && c.refill && c.refill.interval) || '') }, t)))
      const amount = countInput(`${p}-refill-amount`, c && c.refill ? c.refill.amount : '', { min: 0 })
      const day = countInput(`${p}-refill-day`, c && c.refill && c.refill.day ? c.refill.day : '', { min: 1, max: 31 })
      const dayField = field(`${p}-refill-day`, 'Refill on day', day, '1-31; a shorter month refills on its last day.')
      const amountField = field(`${p}-refill-amount`, 'Refill to', amount)
      const sync = () => {
        amountField.hidden = !interval.value
        dayField.hidden = interval.value !== 'monthly'
      }
      interval.addEventListener('change', sync)
      sync()
      parts.push(h('fieldset', null, h('legend', null, 'Credits'),
        h('div', { class: 'grid2' }, field(`${p}-credits`, 'Credits left', remaining), field(`${p}-refill`, 'Refill', interval), amountField, dayField),
        h('p', { class: 'hint' }, 'Uses the key may make: each authenticated request spends 1 (a verification its cost). Empty: unlimited. A refill sets the balance.')))
      credits = () => {
        const r = readCount(remaining, 'Credits left', { min: 0 })
        if (r === null) {
          if (interval.value) throw new Error('Credits left: give the starting balance of a key that refills.')
          return null
        }
        const out = { remaining: r }
        if (interval.value) {
          const a = readCount(amount, 'Refill to', { min: 0 })
          if (a === null) throw new Error('Refill to: give the balance a refill sets.')
          out.refill = { interval: interval.value, amount: a }
          if (interval.value === 'monthly') out.refill.day = readCount(day, 'Refill on day') || 1
        }
        return out
      }
    }
    const budgets = budgetsEditor('Budget', x.budgets, scope === 'key' ? 'Budgets' : 'Budgets for the whole organization',
      'Money this may spend on chat, priced per model. A request that would go over is refused (402); an alert-only budget only sends budget.threshold events.')
    parts.push(budgets)
    let endUser = null, perApp = null
    if (scope === 'org') {
      endUser = budgetsEditor('End-user budget', x.end_user_budgets, 'Budgets per end user',
        'Each widget visitor or signed-in end user separately.')
      perApp = budgetsEditor('Connected-app budget', x.client_budgets, 'Budgets per connected app',
        'Each OAuth client (connected app) separately, for all the people it acts for here.')
      parts.push(endUser, perApp)
    }
    const models = h('textarea', { id: `${p}-models`, rows: '2', autocomplete: 'off', spellcheck: 'false', placeholder: 'gpt-4o*\nanthropic/*' },
      x.allowed_models ? x.allowed_models.join('\n') : '')
    const tpm = countInput(`${p}-tpm`, x.token_limits && x.token_limits.tokens_per_minute)
    const tpd = countInput(`${p}-tpd`, x.token_limits && x.token_limits.tokens_per_day)
    const par = countInput(`${p}-parallel`, x.max_parallel, { max: 10000 })
    parts.push(h('fieldset', null, h('legend', null, 'Models and throughput'),
      field(`${p}-models`, 'Allowed models', models, 'One pattern per line or comma; * matches anything (gpt-4o*, anthropic/*). Empty: every model.'),
      h('div', { class: 'grid2' }, field(`${p}-tpm`, 'Tokens per minute', tpm), field(`${p}-tpd`, 'Tokens per day', tpd)),
      field(`${p}-parallel`, 'Parallel streams', par, 'Chats this may run at once. Empty: no limit.')))
    const el = h('div', { class: 'stack limits-fields' }, parts)
    // Every field as typed (null: no limit); throws a message naming a bad field.
    function values() {
      const v = {}
      if (credits) v.credits = credits()
      v.budgets = budgets.read()
      if (endUser) v.end_user_budgets = endUser.read()
      if (perApp) v.client_budgets = perApp.read()
      const pats = models.value.split(/[\n,]/).map((m) => m.trim()).filter(Boolean)
      v.allowed_models = pats.length ? pats : null
      const t = { tokens_per_minute: readCount(tpm, 'Tokens per minute'), tokens_per_day: readCount(tpd, 'Tokens per day') }
      for (const k of Object.keys(t)) if (t[k] === null) delete t[k]
      v.token_limits = Object.keys(t).length ? t : null
      v.max_parallel = readCount(par, 'Parallel streams')
      return v
    }
    function read(initial) {
      const v = values()
      for (const k of Object.keys(v)) {
        // A new record leaves out what is unlimited (the default); an update sends changes only.
        if (initial ? same(v[k], NORM[k](initial[k])) : v[k] === null) delete v[k]
      }
      return v
    }
    return { el, read, values }
  }

  // Edits a key's spending and limits in a <dialog> (PATCH …/api-keys/{id}).
  function keyLimitsDialog(k, onSaved) {
    const tid = nextId('dlg-title')
    const dlg = h('dialog', { class: 'dialog wide', 'aria-labelledby': tid })
    const err = errorSlot()
    const fields = limitsFields('key', k)
    const save = h('button', { type: 'submit', class: 'primary' }, h('span', { class: 'label' }, 'Save limits'))
    const close = () => { if (dlg.open) dlg.close(); dlg.remove() }
    const form = h('form', { class: 'stack', novalidate: true }, fields.el, err,
      h('div', { class: 'actions' }, btn('Cancel', { class: 'secondary', onclick: close }), save))
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      busy(save, err, async () => {
        const changes = fields.read(k)
        if (Object.keys(changes).length) await api('PATCH', orgPath(`/api-keys/${encodeURIComponent(k.id)}`), changes)
        close()
        toast(`Saved the limits of ${k.name}.`)
        await onSaved()
      })
    })
    dlg.append(h('h2', { id: tid }, `Limits of “${k.name}”`), form)
    dlg.addEventListener('cancel', (ev) => { ev.preventDefault(); close() })
    document.body.append(dlg)
    dlg.showModal()
    form.querySelector('input').focus()
  }

  function statusBadge(k) {
    const text = k.status === 'active' && k.rolled_to ? 'rolled' : k.status
    return h('span', { class: `badge ${text}` }, text)
  }
  // A table cell that names its column, for the card layout of narrow screens.
  const cell = (label, ...kids) => h('td', { 'data-label': label }, ...kids)

  function keysPage(main) {
    const o = org()
    main.append(h('p', { class: 'lede' },
      `Keys let your servers call Gatehouse as ${o.name}. Send one as X-API-Key or Authorization: Bearer.`))
    const cols = h('div', { class: 'cols keys' })
    main.append(cols)
    const listCard = h('section', { class: 'card', 'aria-labelledby': 'keys-list-h' })
    const listBody = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading keys…'))
    const listErr = errorSlot()
    const search = h('input', { id: 'key-search', type: 'search', autocomplete: 'off', placeholder: 'A name, or the start of a key' })
    const showRevoked = h('input', { type: 'checkbox', id: 'show-revoked' })
    const revokedLabel = h('span', null, 'Show revoked keys')
    const filters = h('div', { class: 'row filters' },
      h('div', { class: 'field grow' }, h('label', { for: 'key-search' }, 'Search keys'), search),
      h('label', { class: 'check', for: 'show-revoked' }, showRevoked, revokedLabel))
    listCard.append(h('h2', { id: 'keys-list-h' }, 'Existing keys'), filters, listErr, listBody)
    const writable = can('keys:write')
    let slot = null
    let keys = []
    if (writable) {
      const createCard = h('section', { class: 'card', 'aria-labelledby': 'key-create-h' })
      slot = h('div', { class: 'slot' })
      createCard.append(h('h2', { id: 'key-create-h' }, 'Create API key'), slot, keyForm(showKey, reload))
      cols.append(createCard)
    }
    cols.append(listCard)
    search.addEventListener('input', draw)
    showRevoked.addEventListener('change', draw)

    function showKey(created, heading) {
      slot.replaceChildren(newKeyBox(created, heading))
      slot.querySelector('.secret-value').focus()
    }

    async function reload() {
      try {
        keys = await api('GET', orgPath('/api-keys'))
        clearError(listErr)
        draw()
      } catch (e) {
        showError(listErr, e)
      }
    }

    function draw() {
      const revoked = keys.filter((k) => k.status !== 'active').length
      revokedLabel.textContent = `Show revoked keys (${revoked})`
      const q = search.value.trim().toLowerCase().replace(/•+$/, '')
      const shown = keys.filter((k) => (showRevoked.checked || k.status === 'active') &&
        (!q || k.name.toLowerCase().includes(q) || k.start.toLowerCase().startsWith(q)))
      if (!keys.length) return listBody.replaceChildren(h('p', { class: 'muted empty' }, 'No API keys yet.'))
      if (!shown.length) {
        return listBody.replaceChildren(h('p', { class: 'muted empty' },
          q ? `No key matches “${search.value.trim()}”.` : `No active keys. ${revoked} revoked or expired: tick “Show revoked keys” to see them.`))
      }
      listBody.replaceChildren(keysTable(shown))
    }

    function keysTable(list) {
      const rows = list.map((k) => {
        const actions = []
        if (writable && k.status === 'active') {
          actions.push(h('button', { type: 'button', class: 'secondary small', 'aria-label': `Edit limits of API key ${k.name}`, onclick: () => keyLimitsDialog(k, reload) }, h('span', { class: 'label' }, 'Limits')))
          if (!k.rolled_to) actions.push(h('button', { type: 'button', class: 'secondary small', 'aria-label': `Roll API key ${k.name}`, onclick: (ev) => roll(ev.currentTarget, k) }, icon(ROLL), h('span', { class: 'label' }, 'Roll')))
          actions.push(h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete API key ${k.name}`, onclick: (ev) => del(ev.currentTarget, k) }, icon(TRASH), h('span', { class: 'label' }, 'Delete')))
        }
        return h('tr', { 'data-key-id': k.id },
          h('th', { scope: 'row' }, k.name, h('span', { class: 'sub' }, `${k.environment}${k.scopes.length ? ' · ' + k.scopes.join(', ') : ' · no scopes'}`)),
          cell('Key', h('code', null, k.masked)),
          cell('Created', fmtDate(k.created_at)),
          cell('Expires', k.expires_at ? fmtDate(k.expires_at) : 'Never'),
          cell('Last used', k.last_used_at ? fmtTime(k.last_used_at) : 'Never'),
          cell('Status', statusBadge(k)),
          cell('Limits', limitsList(k)),
          writable ? h('td', { class: 'actions-cell', 'data-label': 'Actions' }, actions) : null)
      })
      return h('table', { class: 'table cards' },
        h('caption', { class: 'sr' }, 'API keys, newest first'),
        h('thead', null, h('tr', null, ['Name', 'Key', 'Created', 'Expires', 'Last used', 'Status', 'Limits', writable ? 'Actions' : null]
          .filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, rows))
    }

    async function del(button, k) {
      const yes = await confirmDialog({
        title: 'Delete API key',
        text: `Delete the key “${k.name}” (${k.masked})? Requests with it fail with 401 at once. This cannot be undone.`,
        ok: 'Delete',
      })
      if (!yes) return button.focus()
      await busy(button, listErr, async () => {
        await api('DELETE', orgPath(`/api-keys/${encodeURIComponent(k.id)}`))
        toast(`Deleted ${k.name}. Requests with it now fail with 401.`)
        await reload()
      })
    }

    async function roll(button, k) {
      const yes = await confirmDialog({
        title: 'Roll API key',
        text: `Roll “${k.name}”? A new key with the same settings is made; the old one keeps working for 24 hours.`,
        ok: 'Roll key',
        danger: false,
      })
      if (!yes) return button.focus()
      await busy(button, listErr, async () => {
        const created = await api('POST', orgPath(`/api-keys/${encodeURIComponent(k.id)}/roll`))
        showKey(created, 'Your rolled API key')
        await reload()
      })
    }

    reload()
  }

  function keyForm(onCreated, reload) {
    const err = errorSlot()
    const name = h('input', { id: 'key-name', name: 'name', required: true, maxlength: '50', autocomplete: 'off', placeholder: 'e.g. Production server', 'aria-describedby': 'key-name-count' })
    const count = h('span', { id: 'key-name-count', class: 'count' }, '0/50')
    name.addEventListener('input', () => {
      count.textContent = `${name.value.length}/50`
    })
    const scopes = org().permissions.filter((p) => !KEY_FORBIDDEN_SCOPES.includes(p))
    const scopeBoxes = scopes.map((p) => {
      const id = `scope-${p.replace(':', '-')}`
      return h('div', { class: 'scope' },
        h('input', { type: 'checkbox', id, value: p, 'aria-describedby': `${id}-text` }),
        h('label', { for: id }, h('code', null, p)),
        h('span', { class: 'hint', id: `${id}-text` }, SCOPE_TEXT[p] || ''))
    })
    const inputs = () => scopeBoxes.map((b) => b.querySelector('input'))
    const presets = PRESETS.map((p) => {
      const want = p.scopes === 'all' ? scopes : p.scopes
      const missing = want.filter((s) => !scopes.includes(s))
      return h('button', {
        type: 'button', class: 'secondary small preset', disabled: missing.length > 0 || !want.length,
        title: missing.length ? `Your role cannot give ${missing.join(', ')}` : p.text,
        onclick: () => { for (const i of inputs()) i.checked = want.includes(i.value) },
      }, h('span', { class: 'label' }, p.name))
    })
    const env = ['live', 'test'].map((v) => h('label', { class: 'check', for: `env-${v}` },
      h('input', { type: 'radio', name: 'environment', id: `env-${v}`, value: v, checked: v === 'live' }), v))
    const expiry = h('select', { id: 'key-expiry' }, EXPIRY.map(([v, t]) => h('option', { value: v, selected: v === '365' }, t)))
    let limits = limitsFields('key')
    const limitsHost = h('div', null, limits.el)
    const limitsBox = h('details', { class: 'limits-box' },
      h('summary', null, 'Spending and limits', h('span', { class: 'hint' }, ' credits, budgets, models, tokens, parallel streams (optional)')), limitsHost)
    const submit = h('button', { type: 'submit', class: 'primary wide', id: 'generate-key' }, h('span', { class: 'label' }, 'Generate API key'))
    const form = h('form', { class: 'stack', 'aria-labelledby': 'key-create-h', novalidate: true },
      h('div', { class: 'field' },
        h('div', { class: 'label-row' }, h('label', { for: 'key-name' }, 'Name ', h('span', { class: 'req', 'aria-hidden': 'true' }, '*')), count),
        name),
      h('fieldset', null, h('legend', null, 'Scopes'),
        scopeBoxes.length ? [
          h('div', { class: 'presets', role: 'group', 'aria-label': 'Scope presets' }, h('span', { class: 'hint' }, 'Presets:'), presets),
          h('div', { class: 'scopes' }, scopeBoxes)] : h('p', { class: 'muted' }, 'Your role has no permissions a key can carry.'),
        h('p', { class: 'hint' }, 'A key can do only what its scopes allow. Keys never manage keys or members.')),
      h('fieldset', null, h('legend', null, 'Environment'), h('div', { class: 'checks inline' }, env)),
      h('div', { class: 'field' }, h('label', { for: 'key-expiry' }, 'Expires after'), expiry),
      limitsBox, err, submit)
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault()
      clearError(err)
      const n = name.value.trim()
      if (!n) {
        showError(err, { message: 'Give the key a name.' })
        name.setAttribute('aria-invalid', 'true')
        return name.focus()
      }
      name.removeAttribute('aria-invalid')
      const chosen = inputs().filter((i) => i.checked).map((i) => i.value)
      if (!chosen.length) {
        const yes = await confirmDialog({
          title: 'Create a key with no scopes?',
          text: 'A key without scopes can only call GET /v1/me: it cannot chat, read threads or verify keys. Pick a preset above, or create it anyway.',
          ok: 'Create without scopes',
          danger: false,
        })
        if (!yes) return submit.focus()
      }
      busy(submit, err, async () => {
        const body = {
          name: n,
          scopes: chosen,
          environment: form.querySelector('input[name=environment]:checked').value,
          expires_in_days: expiry.value === 'never' ? null : Number(expiry.value),
          ...limits.read(),
        }
        const created = await api('POST', orgPath('/api-keys'), body)
        form.reset()
        count.textContent = '0/50'
        limits = limitsFields('key')
        limitsHost.replaceChildren(limits.el)
        limitsBox.open = false
        onCreated(created, 'Your new API key')
        await reload()
      })
    })
    return form
  }

  function newKeyBox(created, heading) {
    const base = location.origin
    const code = (t) => h('code', null, t)
    const routes = KEY_ROUTES.filter(([need]) => need === null || created.scopes.includes(need))
    return secretBox({
      heading,
      value: created.key,
      warning: 'This key cannot be shown again after you leave this page.',
      extra: h('dl', { class: 'details' },
        h('dt', null, 'Name'), h('dd', null, created.name),
        h('dt', null, 'Scopes'), h('dd', null, created.scopes.length ? created.scopes.join(', ') : 'none'),
        h('dt', null, 'Created'), h('dd', null, fmtDate(created.created_at)),
        h('dt', null, 'Expires'), h('dd', null, created.expires_at ? fmtDate(created.expires_at) : 'Never'),
        h('dt', null, 'Limits'), h('dd', null, limitsList(created)),
        h('dt', null, 'It can call'), h('dd', null, h('ul', { class: 'plain key-routes' },
          routes.map(([, route, what]) => {
            const [method, path] = route.split(' ')
            return h('li', null, code(`${method} ${base}${path.replace('{org}', state.orgId)}`), ` ${what}`)
          }))),
        h('dt', null, 'Header'), h('dd', null, code('X-API-Key: <key>'))),
    })
  }

  // ---------------------------------------------------------------- members and roles
  async function loadRoles() {
    if (!state.roles) state.roles = await api('GET', orgPath('/roles'))
    return state.roles
  }
  // Roles this person may hand out: none with a permission they lack; owner only by owners.
  function assignable(roles) {
    const mine = org().permissions
    return roles.filter((r) => (r.name === 'owner' ? isOwner() : r.permissions.every((p) => mine.includes(p))))
  }

  // Owners and admins may require members to use two-factor authentication.
  function mfaSetting() {
    const err = errorSlot()
    const box = h('input', { id: 'require-mfa', type: 'checkbox', disabled: true })
    box.addEventListener('change', async () => {
      box.disabled = true
      clearError(err)
      try {
        const o = await api('PATCH', orgPath(), { require_mfa: box.checked })
        box.checked = o.require_mfa
        toast(o.require_mfa ? 'Members now need two-factor authentication.' : 'Two-factor authentication is optional again.')
      } catch (e) {
        box.checked = !box.checked
        showError(err, e)
      } finally {
        box.disabled = false
      }
    })
    api('GET', orgPath()).then((o) => { box.checked = o.require_mfa; box.disabled = false }).catch((e) => showError(err, e))
    return h('section', { class: 'card', 'aria-labelledby': 'org-security-h' }, h('h2', { id: 'org-security-h' }, 'Security'),
      h('div', { class: 'field check' }, box, h('label', { for: 'require-mfa' }, 'Require two-factor authentication')),
      h('p', { class: 'hint' }, 'Members who signed in without a code from an authenticator app cannot use this organization (API keys are not affected). Turn it on after adding an authenticator app yourself (Security, at the top).'),
      err)
  }

  function membersPage(main) {
    const writable = can('members:write')
    const listErr = errorSlot()
    const list = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading members…'))
    const rolesErr = errorSlot()
    const rolesList = h('div', { class: 'table-wrap' })
    const cols = h('div', { class: 'cols' })
    const membersCard = h('section', { class: 'card', 'aria-labelledby': 'members-h' }, h('h2', { id: 'members-h' }, 'People'), listErr, list)
    const invErr = errorSlot()
    const invList = h('div', { class: 'table-wrap' })
    const invCard = h('div', { class: 'stack bordered', role: 'region', 'aria-labelledby': 'invitations-h' }, h('h3', { id: 'invitations-h' }, 'Pending invitations'), invErr, invList)
    const rolesCard = h('section', { class: 'card', 'aria-labelledby': 'roles-h' }, h('h2', { id: 'roles-h' }, 'Roles'), rolesErr, rolesList)
    cols.append(membersCard, rolesCard)
    main.append(h('p', { class: 'lede' }, `People in ${org().name} and what each role may do.`), cols)
    if (['owner', 'admin'].includes(org().role)) main.append(mfaSetting())

    async function reload() {
      state.roles = null
      try {
        const [members, roles, invitations] = await Promise.all([api('GET', orgPath('/members')), loadRoles(), api('GET', orgPath('/invitations'))])
        clearError(listErr)
        list.replaceChildren(membersTable(members, roles))
        invList.replaceChildren(invitationsTable(invitations.filter((i) => i.status === 'pending')))
        rolesList.replaceChildren(rolesTable(roles))
        addForm.replaceChildren(...(writable ? [memberForm(roles)] : []))
        roleForm.replaceChildren(...(writable ? [newRoleForm()] : []))
      } catch (e) {
        showError(listErr, e)
      }
    }
    const addForm = h('div')
    const roleForm = h('div')
    membersCard.append(invCard, addForm)
    rolesCard.append(roleForm)

    // The only owner can be neither demoted nor removed (the server refuses both: an
    // organization always has an owner), so those controls are not offered for them.
    let soleOwner = null
    function mayManage(m) {
      return writable && (m.role !== 'owner' || isOwner()) && m.user_id !== soleOwner
    }

    function membersTable(members, roles) {
      const give = assignable(roles)
      const owners = members.filter((m) => m.role === 'owner')
      soleOwner = owners.length === 1 ? owners[0].user_id : null
      const rows = members.map((m) => {
        let roleCell = h('span', { class: 'badge role' }, m.role)
        if (m.user_id === soleOwner) {
          roleCell = h('span', null, roleCell, h('span', { class: 'sub' }, 'the only owner: make someone else owner before changing this role'))
        }
        if (mayManage(m) && give.some((r) => r.name === m.role)) {
          const id = nextId('role')
          const sel = h('select', { id, 'aria-label': `Role of ${m.email}` },
            give.map((r) => h('option', { value: r.name, selected: r.name === m.role }, r.name)))
          sel.addEventListener('change', async () => {
            sel.disabled = true
            clearError(listErr)
            try {
              await api('PATCH', orgPath(`/members/${encodeURIComponent(m.user_id)}`), { role: sel.value })
              toast(`${m.email} is now ${sel.value}.`)
              if (m.user_id === state.me.user_id) {
                await refreshMe()
                return render()
              }
              await reload()
            } catch (e) {
              showError(listErr, e)
              sel.value = m.role
            } finally {
              sel.disabled = false
            }
          })
          roleCell = sel
        }
        const remove = mayManage(m)
          ? h('button', { type: 'button', class: 'danger small', 'aria-label': `Remove ${m.email}`, onclick: (ev) => removeMember(ev.currentTarget, m) }, icon(TRASH), h('span', { class: 'label' }, 'Remove'))
          : null
        return h('tr', { 'data-user-id': m.user_id },
          h('th', { scope: 'row', title: m.user_id }, m.email, m.user_id === state.me.user_id ? h('span', { class: 'sub' }, 'you') : null),
          cell('Role', roleCell), cell('Added', fmtDate(m.created_at)),
          writable ? h('td', { class: 'actions-cell', 'data-label': 'Actions' }, remove) : null)
      })
      return h('table', { class: 'table cards' }, h('caption', { class: 'sr' }, 'Members'),
        h('thead', null, h('tr', null, ['Email', 'Role', 'Added', writable ? 'Actions' : null].filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, rows))
    }

    async function removeMember(button, m) {
      const self = m.user_id === state.me.user_id
      const yes = await confirmDialog({
        title: self ? 'Leave organization' : 'Remove member',
        text: self ? `Leave ${org().name}? You will lose access at once.` : `Remove ${m.email} from ${org().name}?`,
        ok: self ? 'Leave' : 'Remove',
      })
      if (!yes) return button.focus()
      await busy(button, listErr, async () => {
        await api('DELETE', orgPath(`/members/${encodeURIComponent(m.user_id)}`))
        toast(self ? `You left ${org().name}.` : `Removed ${m.email}.`)
        if (self) {
          await refreshMe()
          return render({ focus: true })
        }
        await reload()
      })
    }

    function invitationsTable(pending) {
      if (!pending.length) return h('p', { class: 'muted' }, 'No pending invitations.')
      const rows = pending.map((i) => h('tr', null,
        h('th', { scope: 'row' }, i.email, h('span', { class: 'sub' }, `by ${i.inviter_email}, expires ${fmtTime(i.expires_at)}`)),
        cell('Role', h('span', { class: 'badge role' }, i.role)),
        writable ? h('td', { class: 'actions-cell', 'data-label': 'Actions' },
          h('button', { type: 'button', class: 'secondary small', 'aria-label': `Resend the invitation to ${i.email}`, onclick: (ev) => resend(ev.currentTarget, i) }, h('span', { class: 'label' }, 'Resend')),
          h('button', { type: 'button', class: 'danger small', 'aria-label': `Revoke the invitation to ${i.email}`, onclick: (ev) => revoke(ev.currentTarget, i) }, icon(TRASH), h('span', { class: 'label' }, 'Revoke'))) : null))
      return h('table', { class: 'table cards' }, h('caption', { class: 'sr' }, 'Pending invitations'),
        h('thead', null, h('tr', null, ['Email', 'Role', writable ? 'Actions' : null].filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, rows))
    }

    // Inviting again replaces the pending invitation (a new link) and mails it again.
    async function resend(button, i) {
      await busy(button, invErr, async () => {
        await api('POST', orgPath('/invitations'), { email: i.email, role: i.role })
        toast(`Sent the invitation to ${i.email} again.`)
        await reload()
      })
    }

    async function revoke(button, i) {
      const yes = await confirmDialog({ title: 'Revoke invitation', text: `Revoke the invitation to ${i.email}? Its link stops working.`, ok: 'Revoke' })
      if (!yes) return button.focus()
      await busy(button, invErr, async () => {
        await api('DELETE', orgPath(`/invitations/${encodeURIComponent(i.id)}`))
        toast(`Revoked the invitation to ${i.email}.`)
        await reload()
      })
    }

    function memberForm(roles) {
      const err = errorSlot()
      const email = h('input', { id: 'member-email', type: 'email', required: true, autocomplete: 'off' })
      const give = assignable(roles)
      const role = h('select', { id: 'member-role' }, give.map((r) => h('option', { value: r.name, selected: r.name === 'member' }, r.name)))
      const submit = h('button', { type: 'submit', class: 'primary' }, h('span', { class: 'label' }, 'Send invitation'))
      const form = h('form', { class: 'stack bordered', 'aria-labelledby': 'add-member-h' },
        h('h3', { id: 'add-member-h' }, 'Invite someone'),
        h('p', { class: 'hint' }, 'They get an email with a link to join, and can sign up from it if they have no account yet.'),
        h('div', { class: 'row' },
          h('div', { class: 'field grow' }, h('label', { for: 'member-email' }, 'Email'), email),
          h('div', { class: 'field' }, h('label', { for: 'member-role' }, 'Role'), role)),
        err, submit)
      form.addEventListener('submit', (ev) => {
        ev.preventDefault()
        busy(submit, err, async () => {
          await api('POST', orgPath('/invitations'), { email: email.value.trim(), role: role.value })
          toast(`Invited ${email.value.trim()}.`)
          await reload()
        })
      })
      return form
    }

    function rolesTable(roles) {
      const rows = roles.map((r) => h('tr', null,
        h('th', { scope: 'row' }, r.name, h('span', { class: 'sub' }, r.builtin ? 'built-in' : 'custom')),
        cell('Permissions', h('ul', { class: 'perms' }, r.permissions.map((p) => h('li', { title: SCOPE_TEXT[p] || null }, h('code', null, p))))),
        writable ? h('td', { class: 'actions-cell', 'data-label': 'Actions' }, r.builtin ? null
          : h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete role ${r.name}`, onclick: (ev) => deleteRole(ev.currentTarget, r) }, icon(TRASH), h('span', { class: 'label' }, 'Delete'))) : null))
      return h('table', { class: 'table cards' }, h('caption', { class: 'sr' }, 'Roles'),
        h('thead', null, h('tr', null, ['Role', 'Permissions', writable ? 'Actions' : null].filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, rows))
    }

    async function deleteRole(button, r) {
      const yes = await confirmDialog({ title: 'Delete role', text: `Delete the role “${r.name}”? Roles still held by a member cannot be deleted.` })
      if (!yes) return button.focus()
      await busy(button, rolesErr, async () => {
        await api('DELETE', orgPath(`/roles/${encodeURIComponent(r.name)}`))
        toast(`Deleted the role ${r.name}.`)
        await reload()
      })
    }

    function newRoleForm() {
      const err = errorSlot()
      const name = h('input', { id: 'role-name', required: true, maxlength: '32', pattern: '[a-z][a-z0-9_\\-]*', autocomplete: 'off', 'aria-describedby': 'role-name-hint' })
      const boxes = org().permissions.map((p) => {
        const id = `role-perm-${p.replace(':', '-')}`
        return h('label', { class: 'check', for: id }, h('input', { type: 'checkbox', id, value: p }), h('code', null, p))
      })
      const submit = h('button', { type: 'submit', class: 'primary' }, h('span', { class: 'label' }, 'Create role'))
      const form = h('form', { class: 'stack bordered', 'aria-labelledby': 'new-role-h' },
        h('h3', { id: 'new-role-h' }, 'Custom role'),
        h('div', { class: 'field' }, h('label', { for: 'role-name' }, 'Name'), name,
          h('p', { class: 'hint', id: 'role-name-hint' }, 'Lower-case letters, digits, - and _, starting with a letter.')),
        h('fieldset', null, h('legend', null, 'Permissions'), h('div', { class: 'checks' }, boxes)),
        err, submit)
      form.addEventListener('submit', (ev) => {
        ev.preventDefault()
        busy(submit, err, async () => {
          const permissions = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value)
          await api('POST', orgPath('/roles'), { name: name.value.trim(), permissions })
          toast(`Created the role ${name.value.trim()}.`)
          await reload()
        })
      })
      return form
    }

    if (org().role === 'owner' || org().role === 'admin') main.append(orgSettings())
    reload()
  }

  // Rename (owners and admins) and delete (owners only) the organization.
  function orgSettings() {
    const o = org()
    const err = errorSlot()
    const name = h('input', { id: 'org-rename', required: true, maxlength: '100', value: o.name, autocomplete: 'off' })
    const save = h('button', { type: 'submit', class: 'secondary' }, h('span', { class: 'label' }, 'Rename'))
    const form = h('form', { class: 'row' }, h('div', { class: 'field grow' }, h('label', { for: 'org-rename' }, 'Organization name'), name), save)
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      busy(save, err, async () => {
        await api('PATCH', orgPath(), { name: name.value.trim() })
        await refreshMe()
        toast('Renamed.')
        render()
      })
    })
    const card = h('section', { class: 'card', 'aria-labelledby': 'org-settings-h' }, h('h2', { id: 'org-settings-h' }, 'Organization'), form, err,
      orgLimitsForm(), orgPricesForm())
    if (isOwner()) {
      const del = h('button', { type: 'button', class: 'danger' }, icon(TRASH), h('span', { class: 'label' }, 'Delete organization'))
      del.addEventListener('click', async () => {
        const yes = await confirmDialog({ title: 'Delete organization', text: `Delete ${o.name} with all its members, roles, keys, widgets and audit log? This cannot be undone.` })
        if (!yes) return del.focus()
        await busy(del, err, async () => {
          await api('DELETE', orgPath())
          state.orgId = null
          await refreshMe()
          render({ focus: true })
        })
      })
      card.append(h('div', { class: 'danger-zone' }, h('p', null, 'Only owners can delete the organization.'), del))
    }
    return card
  }

  // The organization's budgets (for all of it, and for each end user; GET and PUT
  // /v1/orgs/{org}/budgets, which replaces both lists) and its allowed models, token windows
  // and parallel streams (GET and PATCH /v1/orgs/{org}/chat-limits, only the fields that
  // changed). Owners and admins.
  function orgLimitsForm() {
    const err = errorSlot()
    const host = h('div', null, h('p', { class: 'muted' }, 'Loading…'))
    const save = h('button', { type: 'submit', class: 'primary' }, h('span', { class: 'label' }, 'Save spending and limits'))
    const form = h('form', { class: 'stack bordered', 'aria-labelledby': 'org-limits-h', novalidate: true },
      h('h3', { id: 'org-limits-h' }, 'Spending and limits'),
      h('p', { class: 'hint' }, 'They apply on top of each key’s own: a chat must fit every budget and window that applies.'),
      host, err, save)
    let current = null, fields = null
    async function read() {
      const [c, b] = await Promise.all([api('GET', orgPath('/chat-limits')), api('GET', orgPath('/budgets'))])
      return { ...c, budgets: b.budgets, end_user_budgets: b.end_user_budgets, client_budgets: b.client_budgets }
    }
    async function load() {
      try {
        current = await read()
        fields = limitsFields('org', current)
        host.replaceChildren(fields.el)
      } catch (e) {
        showError(err, e)
      }
    }
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      if (!fields) return
      busy(save, err, async () => {
        const changes = fields.read(current)
        const all = fields.values()
        const { budgets, end_user_budgets: perUser, client_budgets: perApp, ...rest } = changes
        if (budgets !== undefined || perUser !== undefined || perApp !== undefined) {
          await api('PUT', orgPath('/budgets'), { budgets: all.budgets, end_user_budgets: all.end_user_budgets, client_budgets: all.client_budgets })
        }
        if (Object.keys(rest).length) await api('PATCH', orgPath('/chat-limits'), rest)
        current = await read()
        fields = limitsFields('org', current)
        host.replaceChildren(fields.el)
        toast('Saved the organization’s spending and limits.')
      })
    })
    load()
    return form
  }

  // The organization's own model prices, over the deployment's price table (GET
  // /v1/orgs/{org}/prices lists every price that applies and where it comes from; PUT and
  // DELETE …/models/{model}/price set and remove its own). Prices are money per million
  // tokens, typed as decimal text and sent in micro-units. Owners and admins.
  function orgPricesForm() {
    const err = errorSlot()
    const host = h('div', null, h('p', { class: 'muted' }, 'Loading prices…'))
    const model = h('input', { id: 'price-model', required: true, maxlength: '200', autocomplete: 'off', spellcheck: 'false' })
    const input = h('input', { id: 'price-input', required: true, inputmode: 'decimal', autocomplete: 'off' })
    const output = h('input', { id: 'price-output', required: true, inputmode: 'decimal', autocomplete: 'off' })
    const save = h('button', { type: 'submit', class: 'secondary' }, h('span', { class: 'label' }, 'Set price'))
    const form = h('form', { class: 'stack bordered', 'aria-labelledby': 'org-prices-h', novalidate: true },
      h('h3', { id: 'org-prices-h' }, 'Model prices'),
      h('p', { class: 'hint' }, 'What a chat costs against budgets, per million tokens. The organization’s own price wins over the deployment’s; under a budget, a model without a price is refused.'),
      host,
      h('div', { class: 'row' },
        h('div', { class: 'field grow' }, h('label', { for: 'price-model' }, 'Model'), model),
        h('div', { class: 'field' }, h('label', { for: 'price-input' }, 'Prompt, per 1M tokens'), input),
        h('div', { class: 'field' }, h('label', { for: 'price-output' }, 'Answer, per 1M tokens'), output)),
      err, save)
    const perMtok = (micro) => `${fmtMoney(micro)} / 1M`
    async function load() {
      const p = await api('GET', orgPath('/prices'))
      if (p.currency) currencyCode = p.currency
      if (!p.prices.length) return host.replaceChildren(h('p', { class: 'muted empty' }, 'No model has a price yet.'))
      const rows = p.prices.map((x) => {
        const own = x.source === 'org'
        let action = null
        if (own) {
          action = h('button', { type: 'button', class: 'secondary small', 'aria-label': `Remove the organization’s price of ${x.model}` }, h('span', { class: 'label' }, 'Remove'))
          action.addEventListener('click', () => busy(action, err, async () => {
            await api('DELETE', orgPath(`/models/${encodeURIComponent(x.model)}/price`))
            await load()
            toast(`Removed the organization’s price of ${x.model}.`)
          }))
        }
        return h('tr', { class: own ? 'price own' : 'price' },
          h('th', { scope: 'row' }, x.model),
          cell('Prompt', perMtok(x.input_per_mtok)),
          cell('Answer', perMtok(x.output_per_mtok)),
          cell('Set by', own ? 'this organization' : 'the deployment'),
          cell('', action))
      })
      host.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table cards prices' },
        h('caption', { class: 'sr' }, 'Model prices'),
        h('thead', null, h('tr', null, ['Model', 'Prompt', 'Answer', 'Set by', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, rows))))
    }
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      busy(save, err, async () => {
        const m = model.value.trim()
        if (!m) throw new Error('Give the model’s name, such as gpt-4o-mini.')
        const i = parseMoney(input.value), o = parseMoney(output.value)
        if (i === null || o === null) throw new Error(`Give both prices as amounts of money per million tokens, such as 0.15 (${currencyCode}).`)
        await api('PUT', orgPath(`/models/${encodeURIComponent(m)}/price`), { input_per_mtok: i, output_per_mtok: o })
        model.value = input.value = output.value = ''
        await load()
        toast(`Set the organization’s price of ${m}.`)
      })
    })
    load().catch((e) => showError(err, e))
    return form
  }

  // ---------------------------------------------------------------- widgets
  const DEFAULT_SETTINGS = { title: 'Chat with us', greeting: 'Hi! How can we help?', position: 'bottom-right', accent_color: '#2563eb' }

  // Black or white text on the accent colour, whichever reads better (as widget.js does).
  function onAccent(hex) {
    const n = parseInt(hex.slice(1), 16)
    const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4 }
    const l = 0.2126 * lin((n >> 16) & 255) + 0.7152 * lin((n >> 8) & 255) + 0.0722 * lin(n & 255)
    return l > 0.4 ? '#1f2328' : '#ffffff'
  }

  // A static look-alike of the launcher and panel, redrawn from the form as it is typed.
  function preview() {
    const title = h('span', { class: 'pv-title' })
    const greeting = h('div', { class: 'pv-msg' })
    const panel = h('div', { class: 'pv-panel' },
      h('div', { class: 'pv-head' }, title, h('span', { class: 'pv-x', 'aria-hidden': 'true' }, '×')),
      h('div', { class: 'pv-log' }, greeting),
      h('div', { class: 'pv-form' }, h('span', { class: 'pv-input' }, 'Type a message…'), h('span', { class: 'pv-send' }, 'Send')))
    const launcher = h('div', { class: 'pv-launcher' }, s('svg', { viewBox: '0 0 24 24', 'aria-hidden': 'true' }, s('path', { d: CHAT })))
    const el = h('figure', { class: 'preview right' },
      h('div', { class: 'pv-page', 'aria-hidden': 'true' }, h('div', { class: 'pv-lines' }, h('i'), h('i'), h('i')), panel, launcher),
      h('figcaption', null, 'Preview'))
    el.update = (st) => {
      title.textContent = st.title || DEFAULT_SETTINGS.title
      greeting.textContent = st.greeting || DEFAULT_SETTINGS.greeting
      const color = /^#[0-9a-fA-F]{6}$/.test(st.accent_color || '') ? st.accent_color : DEFAULT_SETTINGS.accent_color
      // CSSOM custom properties (allowed by the CSP, unlike style attributes).
      el.style.setProperty('--accent', color)
      el.style.setProperty('--on-accent', onAccent(color))
      el.classList.toggle('left', st.position === 'bottom-left')
      el.classList.toggle('right', st.position !== 'bottom-left')
    }
    return el
  }

  // Normalises allowed origins as the server reads them (scheme://host[:port], lower case,
  // no default port, no path) and explains every change, or why an entry cannot be one.
  function checkOrigins(text) {
    const origins = [], notes = [], errors = []
    for (const raw of text.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean)) {
      const m = raw.match(/^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(.*)$/i)
      if (!m) {
        const host = raw.replace(/^\/+/, '').split(/[/?#]/)[0]
        errors.push(`“${raw}” is not an origin: write the scheme too, e.g. https://${host || 'shop.example.com'}.`)
        continue
      }
      const scheme = m[1].toLowerCase()
      if (scheme !== 'http' && scheme !== 'https') {
        errors.push(`“${raw}”: only http:// and https:// pages can show the widget.`)
        continue
      }
      const host = m[2].toLowerCase().replace(scheme === 'https' ? /:443$/ : /:80$/, '')
      if (!host || host.includes('@')) {
        errors.push(`“${raw}” has no host name.`)
        continue
      }
      const origin = `${scheme}://${host}`
      if (origin !== raw) {
        notes.push(m[3] && m[3] !== '/'
          ? `${raw} became ${origin}: an origin is the scheme, host and port only, so every page of ${origin} may show the widget.`
          : `${raw} became ${origin}.`)
      }
      if (!origins.includes(origin)) origins.push(origin)
    }
    return { origins, notes, errors }
  }

  function widgetsPage(main) {
    const writable = can('widgets:write')
    const listErr = errorSlot()
    const list = h('div', { class: 'widget-list' }, h('p', { class: 'muted' }, 'Loading widgets…'))
    const editor = h('div', { class: 'editor' })
    const listCard = h('section', { class: 'card', 'aria-labelledby': 'widgets-h' },
      h('div', { class: 'card-head' }, h('h2', { id: 'widgets-h' }, 'Your widgets'),
        writable ? btn('New widget', { class: 'primary small', onclick: () => openEditor(null) }) : null),
      listErr, list)
    main.append(h('p', { class: 'lede' }, 'A chat panel for your website: one script tag, allowed origins only.'),
      h('div', { class: 'cols wide-right' }, listCard, editor))
    let widgets = []
    // What the origin check changed on the last save, shown again in the redrawn editor.
    let savedNotes = []

    async function reload(selectId) {
      try {
        widgets = await api('GET', orgPath('/widgets'))
        clearError(listErr)
        list.replaceChildren(widgets.length ? h('ul', { class: 'plain items' }, widgets.map((w) => h('li', null,
          h('button', { type: 'button', class: 'item', 'aria-label': `Edit widget ${w.name}`, onclick: () => openEditor(w) },
            h('strong', null, w.name),
            h('span', { class: 'sub' }, `${w.allowed_origins.length} origin${w.allowed_origins.length === 1 ? '' : 's'} · ${w.require_token ? 'token required' : 'no token'}`))))) :
          h('p', { class: 'muted empty' }, 'No widgets yet.'))
        if (selectId) {
          const w = widgets.find((x) => x.id === selectId)
          if (w) openEditor(w, { keepSecret: true })
        } else {
          // #/widgets/wgt_… (the link widget.js prints when it refuses an origin) opens it.
          const linked = (location.hash.match(/^#\/widgets\/([\w-]+)/) || [])[1]
          const w = linked && widgets.find((x) => x.id === linked)
          if (w) openEditor(w)
        }
      } catch (e) {
        showError(listErr, e)
      }
    }

    function openEditor(w, { keepSecret = false } = {}) {
      const kept = keepSecret ? editor.querySelector('.secret') : null
      if (!kept) forgetSecrets()
      editor.replaceChildren(widgetEditor(w, kept))
      if (!keepSecret) editor.querySelector('h2').focus()
    }

    function widgetEditor(w, keptSecret) {
      const st = { ...DEFAULT_SETTINGS, ...((w && w.settings) || {}) }
      const err = errorSlot()
      const ro = !writable
      const field = (id, label, input, hint) => h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint' }, hint) : null)
      const name = h('input', { id: 'w-name', required: true, maxlength: '100', value: w ? w.name : '', disabled: ro, autocomplete: 'off' })
      const origins = h('textarea', { id: 'w-origins', rows: '3', disabled: ro, placeholder: 'https://shop.example.com', spellcheck: 'false', 'aria-describedby': 'w-origins-hint' })
      const originNotes = h('div', { class: 'notice', role: 'status', hidden: !savedNotes.length }, savedNotes.map((n) => h('p', null, n)))
      savedNotes = []
      origins.value = w ? w.allowed_origins.join('\n') : ''
      const requireToken = h('input', { type: 'checkbox', id: 'w-token', checked: w ? w.require_token : true, disabled: ro })
      const title = h('input', { id: 'w-title', maxlength: '80', value: st.title, disabled: ro })
      const greeting = h('textarea', { id: 'w-greeting', rows: '2', maxlength: '500', disabled: ro })
      greeting.value = st.greeting
      const position = h('select', { id: 'w-position', disabled: ro },
        [['bottom-right', 'Bottom right'], ['bottom-left', 'Bottom left']].map(([v, t]) => h('option', { value: v, selected: st.position === v }, t)))
      const color = h('input', { type: 'color', id: 'w-color', value: st.accent_color, disabled: ro })
      // The model and the daily token budgets (the answer shows the defaults that apply; an
      // unchanged budget is not sent, so a widget on the defaults stays on them).
      const tl = (w && w.token_limits) || {}
      const model = h('input', { id: 'w-model', maxlength: '200', value: (w && w.model) || '', disabled: ro, autocomplete: 'off', spellcheck: 'false', placeholder: 'The deployment’s default' })
      const wTokens = countInput('w-tokens', tl.tokens_per_day)
      const vTokens = countInput('w-visitor-tokens', tl.visitor_tokens_per_day)
      for (const i of [wTokens, vTokens]) i.disabled = ro
      const pv = preview()
      const settings = () => ({ title: title.value.trim(), greeting: greeting.value.trim(), position: position.value, accent_color: color.value.toLowerCase() })
      const redraw = () => pv.update(settings())
      for (const i of [title, greeting, position, color]) i.addEventListener('input', redraw)
      redraw()
      const submit = ro ? null : h('button', { type: 'submit', class: 'primary' }, h('span', { class: 'label' }, w ? 'Save changes' : 'Create widget'))
      const form = h('form', { class: 'stack', 'aria-labelledby': 'w-edit-h' },
        field('w-name', 'Name', name),
        h('div', { class: 'field' }, h('label', { for: 'w-origins' }, 'Allowed origins'), origins,
          h('p', { class: 'hint', id: 'w-origins-hint' }, 'The sites that may show the widget, one per line: scheme and host (and port), no path. For example https://shop.example.com, http://localhost:3000 or https://*.example.com.'),
          originNotes),
        h('label', { class: 'check', for: 'w-token' }, requireToken, 'Require a widget token (data-key)'),
        h('fieldset', null, h('legend', null, 'Look'),
          h('div', { class: 'grid2' },
            field('w-title', 'Title', title), field('w-position', 'Position', position),
            field('w-greeting', 'Greeting', greeting), field('w-color', 'Accent colour', color))),
        h('fieldset', null, h('legend', null, 'Model and daily tokens'),
          field('w-model', 'Model', model, 'Must be on the organization’s allowed models. Empty: the deployment’s default.'),
          h('div', { class: 'grid2' }, field('w-tokens', 'Tokens per day, all visitors', wTokens), field('w-visitor-tokens', 'Tokens per day, each visitor', vTokens)),
          h('p', { class: 'hint' }, 'A public widget spends for anyone who opens the page: these daily budgets bound it. Empty: the deployment’s defaults.')),
        err, submit)
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault()
        clearError(err)
        const checked = checkOrigins(origins.value)
        origins.value = checked.origins.join('\n')
        originNotes.replaceChildren(...checked.notes.map((n) => h('p', null, n)))
        originNotes.hidden = !checked.notes.length
        if (checked.errors.length) {
          showError(err, { message: checked.errors.join(' ') })
          origins.setAttribute('aria-invalid', 'true')
          return origins.focus()
        }
        origins.removeAttribute('aria-invalid')
        if (!checked.origins.length) {
          const yes = await confirmDialog({
            title: 'Save with no allowed origins?',
            text: 'With no allowed origins the widget refuses to load on every website. Add the address of each site that shows it (e.g. https://shop.example.com), or save anyway and add them later.',
            ok: 'Save without origins',
            danger: false,
          })
          if (!yes) return origins.focus()
        }
        busy(submit, err, async () => {
          const body = {
            name: name.value.trim(),
            allowed_origins: checked.origins,
            settings: settings(),
            require_token: requireToken.checked,
          }
          const m = model.value.trim()
          if (m !== ((w && w.model) || '')) body.model = m || null
          const t = { tokens_per_day: readCount(wTokens, 'Tokens per day, all visitors'), visitor_tokens_per_day: readCount(vTokens, 'Tokens per day, each visitor') }
          if (t.tokens_per_day !== (tl.tokens_per_day ?? null) || t.visitor_tokens_per_day !== (tl.visitor_tokens_per_day ?? null)) {
            for (const k of Object.keys(t)) if (t[k] === null) delete t[k]
            body.token_limits = Object.keys(t).length ? t : null
          }
          if (w) {
            await api('PATCH', orgPath(`/widgets/${encodeURIComponent(w.id)}`), body)
            savedNotes = checked.notes
            toast('Saved.')
            await reload(w.id)
          } else {
            const { secret, ...created } = await api('POST', orgPath('/widgets'), body)
            savedNotes = checked.notes
            const box = widgetSecretBox(secret, 'Widget secret')
            await reload()
            openEditor(created)
            editor.querySelector('.slot').replaceChildren(box)
          }
        })
      })
      const slot = h('div', { class: 'slot' }, keptSecret || null)
      const card = h('section', { class: 'card', 'aria-labelledby': 'w-edit-h' },
        h('h2', { id: 'w-edit-h', tabindex: '-1' }, w ? `Widget: ${w.name}` : 'New widget'),
        w ? h('p', { class: 'sub' }, h('code', null, w.id)) : null,
        slot,
        h('div', { class: 'split' }, form, pv))
      if (w) card.append(widgetTools(w, slot))
      return card
    }

    function widgetSecretBox(secret, heading) {
      return secretBox({
        heading,
        value: secret,
        warning: 'Keep it on your server (it signs widget tokens and identified visitors\u2019 user_hash). It cannot be shown again after you leave this page.',
      })
    }

    function widgetTools(w, slot) {
      const err = errorSlot()
      const tools = h('div', { class: 'tools' })
      const where = w.allowed_origins.length
        ? `It loads only on ${w.allowed_origins.join(', ')}.`
        : 'It loads on no website until you add an allowed origin above.'
      tools.append(h('h3', null, 'Embed'))
      // A widget that needs a token has no working tag until one is minted: no placeholder.
      if (!w.require_token) {
        tools.append(h('p', { class: 'hint' }, `Paste this tag into your pages, before </body>. ${where}`),
          h('pre', { class: 'code' }, h('code', { class: 'embed' }, w.embed)), copyButton(() => w.embed, 'Copy', 'embed snippet'))
      } else {
        tools.append(h('p', { class: 'hint token-needed' }, writable
          ? `This widget requires a widget token, so its tag needs one: mint a token below to get a complete tag to paste into your pages. ${where}`
          : `This widget requires a widget token, so its tag needs one, and minting one takes the widgets:write permission. Ask an owner or admin for the tag. ${where}`))
      }
      const tokenOut = h('div')
      tools.append(tokenOut)
      if (writable) {
        const mint = btn(w.require_token ? 'Mint a token and show the tag' : 'Mint widget token', { class: w.require_token ? 'primary' : 'secondary' })
        mint.addEventListener('click', () => busy(mint, err, async () => {
          const t = await api('POST', orgPath(`/widgets/${encodeURIComponent(w.id)}/tokens`), {})
          tokenOut.replaceChildren(h('p', { class: 'hint' }, 'A complete tag with a fresh token: paste it into your pages. Tokens are not stored; rotating the secret revokes them all.'),
            h('pre', { class: 'code' }, h('code', { class: 'token-embed' }, t.embed)), copyButton(() => t.embed, 'Copy', 'tag with token'))
        }))
        const rotate = btn('Rotate secret', { class: 'secondary' })
        rotate.addEventListener('click', async () => {
          const yes = await confirmDialog({ title: 'Rotate widget secret', text: 'Every token and open visitor session of this widget stops working at once. Continue?', ok: 'Rotate secret' })
          if (!yes) return rotate.focus()
          await busy(rotate, err, async () => {
            const r = await api('POST', orgPath(`/widgets/${encodeURIComponent(w.id)}/rotate-secret`))
            forgetSecrets()
            slot.replaceChildren(widgetSecretBox(r.secret, 'New widget secret'))
            tokenOut.replaceChildren()
          })
        })
        const del = h('button', { type: 'button', class: 'danger' }, icon(TRASH), h('span', { class: 'label' }, 'Delete widget'))
        del.addEventListener('click', async () => {
          const yes = await confirmDialog({ title: 'Delete widget', text: `Delete “${w.name}”? Its visitors’ sessions end at once; their conversations stay with the organization.` })
          if (!yes) return del.focus()
          await busy(del, err, async () => {
            await api('DELETE', orgPath(`/widgets/${encodeURIComponent(w.id)}`))
            forgetSecrets()
            editor.replaceChildren()
            toast(`Deleted ${w.name}.`)
            await reload()
          })
        })
        tools.append(h('div', { class: 'row gap' }, mint, rotate, del), err)
      }
      return tools
    }

    reload()
  }

  // ---------------------------------------------------------------- webhooks
  const EVENT_TYPES = ['api_key.created', 'api_key.rolled', 'api_key.revoked', 'member.added', 'member.removed',
    'member.role_changed', 'rate_limit.exceeded', 'thread.created', 'widget.created', 'widget.updated', 'widget.deleted',
    'webhook.test', 'webhook.endpoint_disabled']

  function endpointBadge(e) {
    if (e.enabled) return h('span', { class: 'badge active' }, e.failing_since ? 'failing' : 'enabled')
    return h('span', { class: 'badge revoked' }, e.disabled_reason ? `disabled (${e.disabled_reason})` : 'disabled')
  }

  function webhooksPage(main) {
    const writable = can('webhooks:write')
    const listErr = errorSlot()
    const list = h('div', null, h('p', { class: 'muted' }, 'Loading endpoints…'))
    const editor = h('div', { class: 'editor' })
    const listCard = h('section', { class: 'card', 'aria-labelledby': 'hooks-h' },
      h('div', { class: 'card-head' }, h('h2', { id: 'hooks-h' }, 'Endpoints'),
        writable ? btn('New endpoint', { class: 'primary small', onclick: () => openEditor(null) }) : null),
      listErr, list)
    main.append(h('p', { class: 'lede' }, 'Signed events (Standard Webhooks) sent to your HTTPS endpoints, with every delivery attempt logged.'),
      h('div', { class: 'cols wide-right' }, listCard, editor))

    async function reload(selectId) {
      try {
        const endpoints = await api('GET', orgPath('/webhooks'))
        clearError(listErr)
        list.replaceChildren(endpoints.length ? h('ul', { class: 'plain items' }, endpoints.map((e) => h('li', null,
          h('button', { type: 'button', class: 'item', 'aria-label': `Edit endpoint ${e.url}`, onclick: () => openEditor(e) },
            h('strong', { class: 'url' }, e.url),
            h('span', { class: 'sub' }, e.description || (e.event_types ? `${e.event_types.length} event type${e.event_types.length === 1 ? '' : 's'}` : 'every event')),
            endpointBadge(e))))) : h('p', { class: 'muted empty' }, 'No endpoints yet.'))
        if (selectId) {
          const e = endpoints.find((x) => x.id === selectId)
          if (e) openEditor(e, { keepSecret: true })
        }
      } catch (e) {
        showError(listErr, e)
      }
    }

    function openEditor(e, { keepSecret = false } = {}) {
      const kept = keepSecret ? editor.querySelector('.secret') : null
      if (!kept) forgetSecrets()
      editor.replaceChildren(endpointEditor(e, kept))
      if (!keepSecret) editor.querySelector('h2').focus()
    }

    function hookSecretBox(secret, heading) {
      return secretBox({
        heading,
        value: secret,
        warning: 'Verify each delivery\u2019s webhook-signature with it (any Standard Webhooks library). It cannot be shown again after you leave this page.',
      })
    }

    function endpointEditor(e, keptSecret) {
      const err = errorSlot()
      const ro = !writable
      const url = h('input', { id: 'hook-url', type: 'url', required: true, value: e ? e.url : '', placeholder: 'https://api.example.com/webhooks/gatehouse', disabled: ro, autocomplete: 'off' })
      const description = h('input', { id: 'hook-desc', maxlength: '200', value: e ? e.description : '', disabled: ro, autocomplete: 'off' })
      const enabled = h('input', { type: 'checkbox', id: 'hook-enabled', checked: e ? e.enabled : true, disabled: ro })
      const all = h('input', { type: 'checkbox', id: 'hook-all', checked: !e || !e.event_types, disabled: ro })
      const boxes = EVENT_TYPES.map((t) => {
        const id = `hook-ev-${t.replace(/[._]/g, '-')}`
        return h('label', { class: 'check', for: id }, h('input', { type: 'checkbox', id, value: t, checked: !!(e && e.event_types && e.event_types.includes(t)), disabled: ro }), h('code', null, t))
      })
      const types = h('div', { class: 'checks' }, boxes)
      const syncAll = () => { types.hidden = all.checked }
      all.addEventListener('change', syncAll)
      syncAll()
      const submit = ro ? null : h('button', { type: 'submit', class: 'primary' }, h('span', { class: 'label' }, e ? 'Save changes' : 'Create endpoint'))
      const form = h('form', { class: 'stack', 'aria-labelledby': 'hook-edit-h' },
        h('div', { class: 'field' }, h('label', { for: 'hook-url' }, 'Endpoint URL'), url),
        h('div', { class: 'field' }, h('label', { for: 'hook-desc' }, 'Description'), description),
        h('fieldset', null, h('legend', null, 'Events'),
          h('label', { class: 'check', for: 'hook-all' }, all, 'Every event'), types),
        h('label', { class: 'check', for: 'hook-enabled' }, enabled, 'Enabled'),
        err, submit)
      form.addEventListener('submit', (ev) => {
        ev.preventDefault()
        busy(submit, err, async () => {
          const body = {
            url: url.value.trim(),
            description: description.value.trim(),
            event_types: all.checked ? null : boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
            enabled: enabled.checked,
          }
          if (e) {
            await api('PATCH', orgPath(`/webhooks/${encodeURIComponent(e.id)}`), body)
            toast('Saved.')
            await reload(e.id)
          } else {
            const { secret, ...created } = await api('POST', orgPath('/webhooks'), body)
            const box = hookSecretBox(secret, 'Signing secret')
            await reload()
            openEditor(created)
            editor.querySelector('.slot').replaceChildren(box)
          }
        })
      })
      const slot = h('div', { class: 'slot' }, keptSecret || null)
      const card = h('section', { class: 'card', 'aria-labelledby': 'hook-edit-h' },
        h('h2', { id: 'hook-edit-h', tabindex: '-1' }, e ? 'Endpoint' : 'New endpoint'),
        e ? h('p', { class: 'sub' }, h('code', null, e.id), ' ', endpointBadge(e)) : null,
        slot, form)
      if (e) card.append(endpointTools(e, slot), deliveryLog(e))
      return card
    }

    function endpointTools(e, slot) {
      if (!writable) return null
      const err = errorSlot()
      const test = btn('Send test event', { class: 'secondary' })
      test.addEventListener('click', () => busy(test, err, async () => {
        const q = await api('POST', orgPath(`/webhooks/${encodeURIComponent(e.id)}/test`))
        toast(`Test event queued (${q.message_id}).`)
        setTimeout(() => editor.querySelector('.refresh-log')?.click(), 1500)
      }))
      const rotate = btn('Rotate secret', { class: 'secondary' })
      rotate.addEventListener('click', async () => {
        const yes = await confirmDialog({ title: 'Rotate signing secret', text: 'A new secret is made. For 24 hours every delivery is signed with both the new and the old one. Continue?', ok: 'Rotate secret', danger: false })
        if (!yes) return rotate.focus()
        await busy(rotate, err, async () => {
          const r = await api('POST', orgPath(`/webhooks/${encodeURIComponent(e.id)}/rotate-secret`))
          forgetSecrets()
          slot.replaceChildren(hookSecretBox(r.secret, 'New signing secret'))
        })
      })
      const del = h('button', { type: 'button', class: 'danger' }, icon(TRASH), h('span', { class: 'label' }, 'Delete endpoint'))
      del.addEventListener('click', async () => {
        const yes = await confirmDialog({ title: 'Delete endpoint', text: `Delete ${e.url} and its delivery log?` })
        if (!yes) return del.focus()
        await busy(del, err, async () => {
          await api('DELETE', orgPath(`/webhooks/${encodeURIComponent(e.id)}`))
          forgetSecrets()
          editor.replaceChildren()
          toast('Endpoint deleted.')
          await reload()
        })
      })
      return h('div', { class: 'tools' }, h('div', { class: 'row gap' }, test, rotate, del), err)
    }

    function deliveryLog(e) {
      const err = errorSlot()
      const body = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading deliveries…'))
      const refresh = btn('Refresh', { class: 'secondary small refresh-log' })
      async function load() {
        const attempts = await api('GET', orgPath(`/webhooks/${encodeURIComponent(e.id)}/deliveries?limit=50`))
        body.replaceChildren(attempts.length ? h('table', { class: 'table deliveries' }, h('caption', { class: 'sr' }, 'Delivery attempts, newest first'),
          h('thead', null, h('tr', null, ['When', 'Event', 'Attempt', 'Status', 'Latency', 'Result', 'Response', writable ? 'Actions' : null]
            .filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', null, attempts.map((a) => h('tr', { 'data-delivery-id': a.delivery_id },
            h('td', null, fmtTime(a.created_at)), h('td', null, h('code', null, a.event_type)),
            h('td', null, String(a.attempt)), h('td', null, a.status_code === null ? 'network error' : String(a.status_code)),
            h('td', null, `${fmtNum(a.latency_ms)} ms`),
            h('td', null, h('span', { class: `badge ${a.succeeded ? 'active' : 'revoked'}` }, a.succeeded ? 'succeeded' : 'failed'),
              h('span', { class: 'sub' }, `delivery ${a.delivery_status}`)),
            h('td', null, a.response ? h('details', null, h('summary', null, 'Show'), h('pre', { class: 'code' }, a.response)) : '—'),
            writable ? h('td', { class: 'actions-cell' }, replayButton(a)) : null)))) :
          h('p', { class: 'muted empty' }, 'No deliveries yet. Send a test event.'))
      }
      function replayButton(a) {
        const b = btn(a.succeeded ? 'Replay' : 'Retry', { class: 'secondary small', 'aria-label': `${a.succeeded ? 'Replay' : 'Retry'} ${a.event_type} delivery ${a.delivery_id}` })
        b.addEventListener('click', () => busy(b, err, async () => {
          await api('POST', orgPath(`/webhooks/deliveries/${encodeURIComponent(a.delivery_id)}/retry`))
          toast('Delivery queued again, with the same webhook-id.')
          setTimeout(() => busy(refresh, err, load), 1500)
        }))
        return b
      }
      refresh.addEventListener('click', () => busy(refresh, err, load))
      busy(refresh, err, load)
      return h('div', { class: 'tools' }, h('div', { class: 'card-head' }, h('h3', null, 'Delivery log'), refresh), err, body)
    }

    reload()
  }

  // ---------------------------------------------------------------- usage
  const DAY = 86_400_000
  const PALETTE = ['#2563eb', '#0f766e', '#b45309', '#7c3aed', '#be185d', '#15803d', '#0369a1', '#a16207', '#4d7c0f', '#9f1239']

  // The smallest 1-2-5 step that covers v in four whole-number steps.
  function niceStep(v) {
    const raw = Math.max(1, Math.ceil(v / 4))
    const p = 10 ** Math.floor(Math.log10(raw))
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw && Number.isInteger(m * p)) return m * p
    return 10 * p
  }

  // A stacked bar chart in inline SVG: one bar per day, one segment per series. Drawn at the
  // width it is shown (width is the pixels available), so its text is never scaled.
  function barChart({ days, series, label, width, fmt = fmtNum }) {
    const totals = days.map((_, i) => series.reduce((a, sr) => a + sr.values[i], 0))
    const step = niceStep(Math.max(0, ...totals))
    // The left margin fits the longest axis label (money labels are longer than counts).
    const L = Math.max(44, 10 + 6.5 * Math.max(...[0, 1, 2, 3, 4].map((i) => fmt(step * i).length)))
    const W = Math.max(320, Math.min(1400, Math.round(width))), H = 220, R = 8, T = 12, B = 28
    const max = step * 4
    const bw = (W - L - R) / days.length
    const y = (v) => T + (H - T - B) * (1 - v / max)
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label })
    for (let i = 0; i <= 4; i++) {
      const v = step * i
      svg.append(s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
        s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, fmt(v)))
    }
    const every = Math.ceil(days.length / Math.max(2, Math.floor((W - L - R) / 64)))
    days.forEach((d, i) => {
      let base = 0
      for (const sr of series) {
        const v = sr.values[i]
        if (!v) continue
        const top = y(base + v)
        svg.append(s('rect', { x: L + i * bw + bw * 0.15, y: top, width: Math.max(1, bw * 0.7), height: Math.max(0.5, y(base) - top), fill: sr.color },
          s('title', null, `${sr.name}, ${dayFmt.format(new Date(d))}: ${fmt(v)}`)))
        base += v
      }
      // A date under every few bars, counted back from today so the last bar is labelled.
      if ((days.length - 1 - i) % every === 0) {
        svg.append(s('text', { x: L + i * bw + bw / 2, y: H - 8, 'text-anchor': 'middle', class: 'axis' }, dayFmt.format(new Date(d))))
      }
    })
    return svg
  }

  function legend(series) {
    return h('ul', { class: 'legend' }, series.map((sr) => h('li', null,
      s('svg', { viewBox: '0 0 10 10', class: 'swatch', 'aria-hidden': 'true' }, s('rect', { width: 10, height: 10, rx: 2, fill: sr.color })), sr.name)))
  }

  function usagePage(main) {
    const err = errorSlot()
    const range = h('select', { id: 'usage-range' }, [[7, 'Last 7 days'], [30, 'Last 30 days'], [90, 'Last 90 days']]
      .map(([v, t]) => h('option', { value: v, selected: v === 30 }, t)))
    const out = h('div', null, h('p', { class: 'muted' }, 'Loading usage…'))
    const lede = h('p', { class: 'lede' }, 'Requests per day and per key, from the usage counters; spend and budgets from the spend ledger. Days are UTC.')
    main.append(lede,
      h('div', { class: 'row' }, h('div', { class: 'field' }, h('label', { for: 'usage-range' }, 'Period'), range)), err, out)
    range.addEventListener('change', load)
    config().then((c) => {
      const n = c.write_behind_seconds
      if (n) lede.textContent = `Requests per day and per key, from the usage counters; spend and budgets from the spend ledger. Counters are written every ${n} second${n === 1 ? '' : 's'} (write_behind_seconds), so the last ${n === 1 ? 'second' : `${n} seconds`} may be missing. Days are UTC.`
    }).catch(() => {})

    async function load() {
      const n = Number(range.value)
      const today = Math.floor(Date.now() / DAY) * DAY
      const from = today - (n - 1) * DAY
      try {
        const [rows, keys, orgBudgets, spendRows] = await Promise.all([
          api('GET', orgPath(`/usage?granularity=day&from=${from}`)),
          can('keys:read') ? api('GET', orgPath('/api-keys')) : Promise.resolve([]),
          api('GET', orgPath('/budgets')),
          api('GET', orgPath(`/spend?granularity=day&from=${from}`)),
        ])
        const o = { name: org().name, ...orgBudgets }
        if (orgBudgets.currency) currencyCode = orgBudgets.currency
        clearError(err)
        const budgets = h('section', { class: 'card', 'aria-labelledby': 'budgets-h' }, h('h2', { id: 'budgets-h' }, 'Budgets left'),
          h('p', { class: 'muted' }, 'Loading budgets…'))
        out.replaceChildren(usageView(rows, keys, from, n, spendRows), budgets)
        budgetsLeft(budgets, keys, o).catch((e) => showError(err, e))
      } catch (e) {
        showError(err, e)
      }
    }

    // One measure for every row, so the columns add up: a key's requests are every admitted
    // request made with it (chat among them); a widget's are its chats (it has no key).
    function usageView(rows, keys, from, n, spendRows) {
      if (!rows.length) return h('p', { class: 'muted empty' }, 'No requests in this period.')
      const days = Array.from({ length: n }, (_, i) => from + i * DAY)
      const names = new Map(keys.map((k) => [k.id, `${k.name} (${k.masked})`]))
      const WIDGETS = 'Widgets (no key)'
      const label = (id) => (id ? names.get(id) || id : WIDGETS)
      const reqs = (r) => (r.key_id ? r.api_requests || 0 : r.requests || 0)
      const ids = [...new Set(rows.map((r) => r.key_id || ''))]
      const zero = () => ({ requests: 0, chat: 0, limited: 0, prompt: 0, completion: 0, cost: 0 })
      const totals = new Map(ids.map((id) => [id, zero()]))
      const all = zero()
      for (const r of rows) {
        for (const t of [totals.get(r.key_id || ''), all]) {
          t.requests += reqs(r)
          t.chat += r.requests || 0
          t.limited += r.rate_limited || 0
          t.prompt += r.prompt_tokens || 0
          t.completion += r.completion_tokens || 0
          t.cost += r.cost || 0
        }
      }
      // Spend comes from the same ledger the budgets are enforced from (`cost`, micro-units).
      const spend = rows.some((r) => r.cost)
      const per = (value) => ids.map((id, i) => ({
        name: label(id),
        color: PALETTE[i % PALETTE.length],
        values: days.map((d) => rows.filter((r) => (r.key_id || '') === id && r.start >= d && r.start < d + DAY).reduce((a, r) => a + value(r), 0)),
      })).filter((x) => x.values.some(Boolean))
      const widgets = totals.get('')
      const width = $('#main').clientWidth - 64
      const chart = (id, title, hint, series, text, fmt) => h('section', { class: 'card', 'aria-labelledby': id },
        h('h2', { id }, title), h('p', { class: 'hint' }, hint),
        series.length ? [barChart({ days, series, label: text, width, fmt }), legend(series)] : null)
      const period = `${dayFmt.format(new Date(days[0]))} – ${dayFmt.format(new Date(days[days.length - 1]))}`
      const row = (head, t, attrs = {}) => h('tr', attrs, head,
        cell('Requests', fmtNum(t.requests)), cell('Chat', fmtNum(t.chat)), cell('429s', fmtNum(t.limited)),
        cell('Prompt tokens', fmtNum(t.prompt)), cell('Completion tokens', fmtNum(t.completion)),
        spend ? cell('Spend', fmtMoney(t.cost)) : null)
      return h('div', { class: 'stack' },
        chart('chart-req-h', 'Requests per day, by key', `${period}: ${fmtNum(all.requests)} requests, ${fmtNum(all.requests - (widgets ? widgets.requests : 0))} with keys and ${fmtNum(widgets ? widgets.requests : 0)} widget chats; ${fmtNum(all.chat)} of them chat.`,
          per(reqs), `Requests per day, ${period}`),
        chart('chart-429-h', 'Rate-limited requests (429) per day', `${period}: ${fmtNum(all.limited)} refused with 429.`,
          per((r) => r.rate_limited || 0), `429 responses per day, ${period}`),
        h('section', { class: 'card', 'aria-labelledby': 'usage-table-h' },
          h('h2', { id: 'usage-table-h' }, 'Totals per key'),
          h('p', { class: 'hint' }, 'Requests: every admitted request made with a key (chat among them); for widgets, their chats. Chat is part of Requests, so each column adds up to the total.'),
          h('div', { class: 'table-wrap' }, h('table', { class: 'table num cards' },
            h('thead', null, h('tr', null, ['Key', 'Requests', 'Chat', '429s', 'Prompt tokens', 'Completion tokens', spend ? 'Spend' : null]
              .filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', null, ids.map((id) => row(h('th', { scope: 'row', title: id || null }, label(id)), totals.get(id)))),
            h('tfoot', null, row(h('th', { scope: 'row' }, 'Total'), all, { class: 'total' }))))),
        spend ? spendView(spendRows, days, period, width, chart, all.cost) : null)
    }

    // Spend per day by model (a chart) and per model (a table), from GET …/spend (the ledger's
    // settled chats per day, key and model).
    function spendView(rows, days, period, width, chart, total) {
      const MODEL = (r) => r.model || 'all models'
      const models = [...new Set(rows.filter((r) => r.cost).map(MODEL))].sort()
      const series = models.map((m, i) => ({
        name: m,
        color: PALETTE[i % PALETTE.length],
        values: days.map((d) => rows.filter((r) => MODEL(r) === m && r.start >= d && r.start < d + DAY).reduce((a, r) => a + (r.cost || 0), 0)),
      })).filter((x) => x.values.some(Boolean))
      const per = models.map((m) => {
        const t = { requests: 0, prompt: 0, completion: 0, cost: 0 }
        for (const r of rows.filter((x) => MODEL(x) === m)) {
          t.requests += r.requests || 0
          t.prompt += r.prompt_tokens || 0
          t.completion += r.completion_tokens || 0
          t.cost += r.cost || 0
        }
        return [m, t]
      })
      return [
        chart('chart-spend-h', 'Spend per day, by model', `${period}: ${fmtMoney(total)} spent (settled cost of chats, from the spend ledger).`,
          series, `Spend per day by model, ${period}`, fmtMoney),
        h('section', { class: 'card', 'aria-labelledby': 'spend-models-h' },
          h('h2', { id: 'spend-models-h' }, 'Spend per model'),
          h('div', { class: 'table-wrap' }, h('table', { class: 'table num cards spend-models' },
            h('thead', null, h('tr', null, ['Model', 'Chats', 'Prompt tokens', 'Completion tokens', 'Spend'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', null, per.map(([m, t]) => h('tr', null, h('th', { scope: 'row' }, m),
              cell('Chats', fmtNum(t.requests)), cell('Prompt tokens', fmtNum(t.prompt)), cell('Completion tokens', fmtNum(t.completion)),
              cell('Spend', fmtMoney(t.cost)))))))),
      ]
    }

    // Every budget that applies (the organization's, each active key's) with what its current
    // period has spent and what is left, as the server enforces them: GET …/budgets and
    // GET …/api-keys/{id}/budgets read the spend ledger.
    async function budgetsLeft(card, keys, o) {
      const entries = []
      for (const b of (o && o.budgets) || []) entries.push({ who: o.name, sub: 'the whole organization', b })
      const budgeted = keys.filter((k) => k.status === 'active' && k.budgets && k.budgets.length)
      const states = await Promise.all(budgeted.map((k) => api('GET', orgPath(`/api-keys/${encodeURIComponent(k.id)}/budgets`))))
      budgeted.forEach((k, i) => { for (const b of states[i]) entries.push({ who: k.name, sub: k.masked, b }) })
      const perUser = (o && o.end_user_budgets) || []
      const perApp = (o && o.client_budgets) || []
      const hint = h('p', { class: 'hint' }, 'Settled spend in each budget’s current period (UTC); chats still streaming are not in it yet. ',
        perUser.length ? `Each end user may also spend ${perUser.map(budgetText).join(', ')}. ` : null,
        perApp.length ? `Each connected app may also spend ${perApp.map(budgetText).join(', ')}.` : null)
      if (!entries.length) {
        return card.replaceChildren(card.firstChild, hint, h('p', { class: 'muted empty' },
          'No budgets. Give a key budgets on the API keys page (Limits), or the organization on the Members page.'))
      }
      const body = entries.map(({ who, sub, b }) => {
        const level = b.spent >= b.amount ? 'over' : b.spent >= b.amount * 0.8 ? 'near' : 'ok'
        return h('tr', { class: `budget ${level}` },
          h('th', { scope: 'row' }, who, h('span', { class: 'sub' }, sub)),
          cell('Budget', budgetText(b)),
          cell('Spent', fmtMoney(b.spent)),
          cell('Left', h('span', { class: 'left' }, fmtMoney(b.remaining)),
            h('meter', { min: '0', max: String(b.amount), value: String(Math.min(b.spent, b.amount)), low: String(b.amount * 0.5), high: String(b.amount * 0.8), optimum: '0',
              'aria-label': `${who}: ${fmtMoney(b.spent)} of ${fmtMoney(b.amount)} spent` })),
          cell('Resets', b.resets_at ? fmtTime(b.resets_at) : 'Never'))
      })
      card.replaceChildren(card.firstChild, hint, h('div', { class: 'table-wrap' }, h('table', { class: 'table cards budgets-left' },
        h('caption', { class: 'sr' }, 'Budgets and what is left of each'),
        h('thead', null, h('tr', null, ['Applies to', 'Budget', 'Spent', 'Left', 'Resets'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, body))))
    }

    load()
  }

  // ---------------------------------------------------------------- audit log
  // The server filters by action and actor (`?action=`, `?actor=`) and pages with `before`.
  // Actors and targets are named from the lists the signed-in person may read (ids on hover).
  // Every action the log records, as GET …/audit-log?action= accepts them (tests/api/docs_lists.rs
  // keeps this list equal to the server's).
  const AUDIT_ACTIONS = ['organization.created', 'organization.renamed', 'organization.rate_limits_changed', 'organization.mfa_requirement_changed', 'organization.chat_limits_changed',
    'member.added', 'member.role_changed', 'member.removed', 'role.created', 'role.deleted',
    'invitation.created', 'invitation.accepted', 'invitation.declined', 'invitation.revoked',
    'api_key.created', 'api_key.updated', 'api_key.revoked', 'api_key.rolled', 'credits.low', 'credits.exhausted',
    'widget.created', 'widget.updated', 'widget.secret_rotated', 'widget.deleted',
    'webhook_endpoint.created', 'webhook_endpoint.updated', 'webhook_endpoint.secret_rotated',
    'webhook_endpoint.deleted', 'webhook_endpoint.disabled',
    'organization.budgets_changed', 'model_price.set', 'model_price.deleted', 'budget.threshold',
    'oauth_client.created', 'oauth_client.deleted', 'oauth_grant.created', 'oauth_grant.revoked']

  // Names by id, and the actors one can filter by ([value, label]).
  async function directory() {
    const names = new Map()
    const actors = new Map([['cli', 'the command line'], ['system', 'the delivery worker']])
    const read = async (perm, path, fn) => {
      if (!can(perm)) return
      try { for (const x of await api('GET', orgPath(path))) fn(x) } catch { /* ids stay ids */ }
    }
    await Promise.all([
      read('members:read', '/members', (m) => { names.set(m.user_id, m.email); actors.set(`user:${m.user_id}`, m.email) }),
      read('members:read', '/invitations', (i) => names.set(i.id, `invitation to ${i.email}`)),
      read('keys:read', '/api-keys', (k) => { names.set(k.id, `key “${k.name}” (${k.masked})`); actors.set(`api_key:${k.id}`, `key “${k.name}” (${k.masked})`) }),
      read('widgets:read', '/widgets', (w) => names.set(w.id, `widget “${w.name}”`)),
      read('webhooks:read', '/webhooks', (e) => names.set(e.id, `endpoint ${e.url}`)),
    ])
    names.set(state.me.user_id, state.me.email)
    actors.set(`user:${state.me.user_id}`, state.me.email)
    names.set(state.orgId, org().name)
    return { names, actors }
  }

  function auditPage(main) {
    const err = errorSlot()
    const body = h('tbody')
    const more = btn('Load older entries', { class: 'secondary' })
    const action = h('select', { id: 'audit-action' }, h('option', { value: '' }, 'Every action'),
      AUDIT_ACTIONS.map((a) => h('option', { value: a }, a)))
    const actor = h('select', { id: 'audit-actor' }, h('option', { value: '' }, 'Anyone'))
    const count = h('p', { class: 'hint', role: 'status' })
    const LIMIT = 50
    let before = null
    let names = new Map()
    let entries = []
    // Bumped when the filters change, so a page answered for the old filters is dropped.
    let generation = 0
    // Actors are `user:{id}`, `api_key:{id}`, `cli` or `system`; targets ids or addresses.
    const lookup = (id) => {
      if (!id) return null
      if (id === 'cli') return 'the command line'
      if (id === 'system') return 'the delivery worker'
      return names.get(id) || names.get(id.replace(/^(user|api_key):/, '')) || null
    }
    const name = (id) => (id ? lookup(id) || id : '—')
    // A name with its id on hover.
    const named = (id) => (lookup(id) ? h('span', { title: id }, lookup(id)) : h('code', null, id || '—'))
    main.append(h('p', { class: 'lede' }, 'Every change to members, roles, keys, widgets and webhooks, newest first. Entries never hold secrets.'),
      h('section', { class: 'card' },
        h('div', { class: 'row filters' },
          h('div', { class: 'field' }, h('label', { for: 'audit-action' }, 'Action'), action),
          h('div', { class: 'field' }, h('label', { for: 'audit-actor' }, 'Actor'), actor)),
        count, err,
        h('div', { class: 'table-wrap' }, h('table', { class: 'table audit cards' }, h('caption', { class: 'sr' }, 'Audit log'),
          h('thead', null, h('tr', null, ['When', 'Action', 'Actor', 'Target', 'IP', 'Details'].map((t) => h('th', { scope: 'col' }, t)))), body)),
        more))
    more.addEventListener('click', () => busy(more, err, page))
    const refilter = async () => {
      generation += 1
      entries = []
      before = null
      clearError(err)
      try { await page() } catch (e) { showError(err, e) }
    }
    action.addEventListener('change', refilter)
    actor.addEventListener('change', refilter)

    function details(d) {
      const keys = d ? Object.keys(d) : []
      if (!keys.length) return '—'
      return h('dl', { class: 'fields' }, keys.map((k) => {
        const v = d[k]
        const text = typeof v === 'string' ? name(v) : Array.isArray(v) ? v.map((x) => (typeof x === 'string' ? name(x) : JSON.stringify(x))).join(', ') || 'none' : JSON.stringify(v)
        return [h('dt', null, k.replace(/_/g, ' ')), h('dd', { title: typeof v === 'string' && lookup(v) ? v : null }, text)]
      }))
    }

    function draw() {
      body.replaceChildren(...entries.map((e) => h('tr', { 'data-seq': e.seq },
        cell('When', fmtTime(e.created_at)), cell('Action', h('code', null, e.action)), cell('Actor', named(e.actor)),
        cell('Target', named(e.target)), cell('IP', e.ip || '—'), cell('Details', details(e.details)))))
      const filtered = action.value || actor.value
      if (!entries.length) body.append(h('tr', null, h('td', { colspan: '6', class: 'muted' }, filtered ? 'No entry matches these filters.' : 'No entries yet.')))
      const n = entries.length
      const shown = `${n} ${filtered ? (n === 1 ? 'matching entry' : 'matching entries') : (n === 1 ? 'entry' : 'entries')}`
      count.textContent = `${shown}${more.hidden ? '.' : ' loaded; older ones remain.'}`
    }

    async function page() {
      const mine = generation
      const q = new URLSearchParams({ limit: String(LIMIT) })
      if (before !== null) q.set('before', String(before))
      if (action.value) q.set('action', action.value)
      if (actor.value) q.set('actor', actor.value)
      const got = await api('GET', orgPath(`/audit-log?${q}`))
      if (mine !== generation) return
      entries.push(...got)
      if (got.length) before = got[got.length - 1].seq
      more.hidden = got.length < LIMIT
      draw()
    }
    busy(more, err, async () => {
      const dir = await directory()
      names = dir.names
      const keep = actor.value
      actor.replaceChildren(actor.firstChild, ...[...dir.actors].sort((a, b) => a[1].localeCompare(b[1]))
        .map(([v, label]) => h('option', { value: v, selected: v === keep }, label)))
      await page()
    })
  }

  // ---------------------------------------------------------------- OAuth: consent and connected apps
  // What each OpenID scope lets an app do (the permissions are in SCOPE_TEXT).
  const OPENID_SCOPE_TEXT = {
    openid: 'Know who you are (your user id).',
    profile: 'See your profile.',
    email: 'See your email address.',
    offline_access: 'Stay connected while you are away (it may renew its access until you revoke it).',
  }
  const scopeText = (scope) => OPENID_SCOPE_TEXT[scope] || SCOPE_TEXT[scope] || 'A permission this server does not describe.'

  // One call to the authorization server's consent API (/oauth/…, cookie-authenticated like
  // /v1): its answer, in the /v1 envelope or as plain JSON; errors carry the server's message.
  async function oauthApi(method, path, body) {
    const init = { method, credentials: 'same-origin', referrerPolicy: 'same-origin', cache: 'no-store', headers: { accept: 'application/json' } }
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    let res
    try {
      res = await fetch(path, init)
    } catch {
      throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.')
    }
    let json = null
    try { json = await res.json() } catch { /* reported below */ }
    if (res.ok && json) return json.success === true && 'data' in json ? json.data : json
    const err = (json && json.error) || {}
    const message = (typeof err === 'object' && err.message) || (json && json.error_description) ||
      (typeof err === 'string' && err) || `The server answered ${res.status}.`
    if (res.status === 401) signedOut('Your session has ended. Please sign in again.')
    throw new ApiError(res.status, (typeof err === 'string' ? err : err.code) || 'error', message)
  }

  // #/oauth/consent?request=ID: the authorization server sent the person here (after signing
  // in, when they were not) to approve or deny an app's request.
  async function oauthConsentPage(main, { focus }) {
    document.title = 'Authorize an app · Gatehouse'
    const heading = h('h1', { tabindex: '-1' }, 'Authorize an app')
    main.append(heading)
    if (focus) heading.focus()
    const query = new URLSearchParams((location.hash.split('?')[1]) || '')
    const id = query.get('request')
    const card = h('section', { class: 'card narrow consent', 'aria-busy': 'true' }, spinner())
    main.append(card)
    if (!id) {
      card.replaceChildren(h('p', { class: 'error', role: 'alert' }, 'This page needs an authorization request. Start again from the app you are connecting.'))
      return card.removeAttribute('aria-busy')
    }
    let req
    try {
      req = await oauthApi('GET', `/oauth/requests/${encodeURIComponent(id)}`)
    } catch (e) {
      card.removeAttribute('aria-busy')
      if (e.status === 401) return
      return card.replaceChildren(h('p', { class: 'error', role: 'alert', 'data-testid': 'oauth-error' },
        e.status === 404 ? 'This authorization request has expired or was already answered. Start again from the app you are connecting.' : e.message))
    }
    card.removeAttribute('aria-busy')
    const client = req.client || {}
    const name = client.name || client.client_id || 'An app'
    const orgs = req.orgs || []
    const err = errorSlot()
    const who = h('p', { class: 'lead' }, h('strong', { 'data-testid': 'oauth-client-name' }, name),
      ' wants to act for you (', state.me.email, ').')
    const origin = client.metadata_host
      ? h('p', { class: 'hint', 'data-testid': 'oauth-client-host' }, 'Its details come from ', h('strong', null, client.metadata_host), '.')
      : h('p', { class: 'hint', 'data-testid': 'oauth-client-host' }, 'It registered itself with this server; its name is not verified.')
    const back = client.redirect_uri ? h('p', { class: 'hint' }, 'You will be sent back to ', h('code', null, client.redirect_uri), '.') : null
    const scopes = req.scopes || []
    const list = h('ul', { class: 'plain scopes', 'data-testid': 'oauth-scopes' },
      scopes.map((sc) => h('li', { 'data-scope': sc }, h('strong', null, sc), ' — ', scopeText(sc))))
    const orgSel = h('select', { id: 'oauth-org', 'data-testid': 'oauth-org', required: true },
      orgs.map((o) => h('option', { value: o.id, selected: o.id === state.orgId }, o.name)))
    const approve = btn('Allow', { class: 'primary', 'data-testid': 'oauth-approve', disabled: !orgs.length })
    const deny = btn('Deny', { class: 'secondary', 'data-testid': 'oauth-deny' })
    const decide = (decision, button) => busy(button, err, async () => {
      const got = await oauthApi('POST', `/oauth/requests/${encodeURIComponent(id)}`, { decision, org_id: orgSel.value || null })
      if (!got || !got.redirect_to) throw new Error('The server did not say where to go next.')
      // Back to the app (its redirect URI, with the code or error=access_denied).
      location.assign(got.redirect_to)
    })
    approve.addEventListener('click', () => decide('approve', approve))
    deny.addEventListener('click', () => decide('deny', deny))
    card.replaceChildren(who, origin,
      h('h2', null, scopes.length ? 'It asks to' : 'It asks for no permissions'), list,
      req.resource ? h('p', { class: 'hint' }, 'For use at ', h('code', null, req.resource), '.') : null,
      orgs.length
        ? field('oauth-org', 'In the organization', orgSel, 'The app can use only what you may do there, and loses it when your role changes.')
        : h('p', { class: 'error' }, 'You are not a member of any organization, so there is nothing to allow.'),
      back, err, h('div', { class: 'consent-actions' }, deny, approve),
      h('p', { class: 'hint' }, 'You can revoke it at any time under ', h('a', { href: '#/account' }, 'Connected apps'), '.'))
  }

  // #/account: the person's own account, with the apps they connected.
  async function accountPage(main, { focus }) {
    document.title = 'Your account · Gatehouse'
    const heading = h('h1', { tabindex: '-1' }, 'Your account')
    main.append(heading, h('p', null, 'Signed in as ', h('strong', null, state.me.email), '.'))
    if (focus) heading.focus()
    const err = errorSlot()
    const body = h('tbody')
    const empty = h('p', { class: 'hint', hidden: true, 'data-testid': 'oauth-none' }, 'No apps are connected. An app appears here once you allow it.')
    const table = h('table', { class: 'table cards grants' },
      h('thead', null, h('tr', null, h('th', null, 'App'), h('th', null, 'Organization'), h('th', null, 'Permissions'),
        h('th', null, 'Connected'), h('th', null, 'Last used'), h('th', null, h('span', { class: 'sr' }, 'Actions')))),
      body)
    main.append(h('section', { class: 'card', 'aria-labelledby': 'apps-h' },
      h('h2', { id: 'apps-h' }, 'Connected apps'),
      h('p', { class: 'hint' }, 'Apps you allowed to act for you. Revoking one ends its access at once.'),
      err, empty, table))
    const orgName = (id) => ((state.me.organizations || []).find((o) => o.id === id) || {}).name || id
    async function load() {
      const grants = await api('GET', '/v1/me/oauth/grants')
      body.replaceChildren(...grants.map((g) => {
        const revoke = btn('Revoke', { class: 'danger small', 'data-testid': 'oauth-revoke', 'aria-label': `Revoke ${g.client_name}` })
        revoke.addEventListener('click', async () => {
          const yes = await confirmDialog({ title: 'Revoke this app?', text: `${g.client_name} will no longer act for you in ${orgName(g.org_id)}. It would have to ask again.`, ok: 'Revoke' })
          if (!yes) return
          await busy(revoke, err, async () => {
            await api('DELETE', `/v1/me/oauth/grants/${encodeURIComponent(g.id)}`)
            toast(`${g.client_name} was revoked.`)
            await load()
          })
        })
        return h('tr', { 'data-testid': 'oauth-grant', 'data-grant': g.id },
          h('td', { 'data-label': 'App', title: g.client_id }, h('strong', { 'data-testid': 'oauth-grant-name' }, g.client_name)),
          h('td', { 'data-label': 'Organization' }, orgName(g.org_id)),
          h('td', { 'data-label': 'Permissions' }, (g.scopes || []).join(', ') || '—'),
          h('td', { 'data-label': 'Connected' }, fmtDate(g.created_at)),
          h('td', { 'data-label': 'Last used' }, fmtTime(g.last_used_at)),
          h('td', { class: 'actions-cell' }, revoke))
      }))
      table.hidden = !grants.length
      empty.hidden = !!grants.length
    }
    try {
      await load()
    } catch (e) {
      if (e.status !== 401) showError(err, e)
    }
  }

  // ---------------------------------------------------------------- start
  window.addEventListener('hashchange', () => render({ focus: true }))
  // Leaving or hiding the page in the back/forward cache drops any one-time secret.
  window.addEventListener('pagehide', forgetSecrets)
  boot()
})()
