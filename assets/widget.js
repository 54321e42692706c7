/*! Gatehouse chat widget. No dependencies, no build step.
 * <script src="https://gatehouse.example.com/widget.js" data-key="TOKEN" defer></script>
 * Attributes: data-key | data-widget-id, data-position, data-user-id + data-user-hash, data-api.
 * Everything is drawn inside a shadow root; nothing is ever thrown into the host page. */
(() => {
  'use strict'
  const script = document.currentScript
  const warn = (...a) => { try { console.warn('[gatehouse widget]', ...a) } catch (_) {} }
  const enc = new TextEncoder()

  // A widget token is base64url("{org_id}:{widget_id}:{nonce}:{signature}").
  const widgetIdFromKey = (key) => {
    const b = key.replace(/-/g, '+').replace(/_/g, '/')
    return atob(b + '='.repeat((4 - (b.length % 4)) % 4)).split(':')[1]
  }
  const b64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('')

  // An API failure, with the parts the UI needs.
  class ApiError extends Error {
    constructor(status, code, reason, retryAfter, message) {
      super(message || code || 'HTTP ' + status)
      Object.assign(this, { status, code, reason, retryAfter })
    }
  }
  const apiError = async (res) => {
    let e = {}
    try { e = (await res.json()).error || {} } catch (_) {}
    const d = e.details || {}
    const ra = parseInt(res.headers.get('retry-after') || d.retry_after, 10)
    return new ApiError(res.status, e.code, d.reason, Number.isFinite(ra) ? ra : null, e.message)
  }

  let ds, key, id, base // from the script tag, set by start()
  function start() {
    if (!script) return warn('load widget.js with a plain <script> tag')
    ds = script.dataset
    key = ds.key || ''
    id = ds.widgetId || (key && widgetIdFromKey(key))
    if (!id || !/^[\w-]+$/.test(id)) return warn('no valid data-key or data-widget-id')
    const api = (ds.api || new URL(script.src, location.href).origin).replace(/\/+$/, '')
    base = `${api}/v1/widgets/${encodeURIComponent(id)}`
    if (document.querySelector(`[data-gatehouse-widget="${id}"]`)) return // loaded twice

    fetch(base + '/config')
      .then(async (res) => {
        if (!res.ok) throw await apiError(res)
        const cfg = (await res.json()).data
        const draw = () => { try { mount(cfg) } catch (e) { warn('could not draw', e) } }
        document.body ? draw() : document.addEventListener('DOMContentLoaded', draw)
      })
      .catch((e) => refused(api, e))
  }

  // Says in the console why the widget is not shown. A not-allowed origin gets a 403 without
  // CORS headers, which the browser reports as a network error: if the server itself answers
  // (an opaque no-cors request to /healthz succeeds), the origin was refused.
  async function refused(api, e) {
    const setting = `${api}/dashboard/#/widgets/${encodeURIComponent(id)}`
    if (e instanceof ApiError) {
      if (e.status === 404) return warn(`not loaded: there is no widget ${id} on ${api}. Check data-key or data-widget-id against ${api}/dashboard/#/widgets`)
      return warn(`not loaded: ${api} answered ${e.status} (${e.code || 'error'}): ${e.message}`)
    }
    let reachable = false
    try { await fetch(`${api}/healthz`, { mode: 'no-cors', cache: 'no-store' }); reachable = true } catch (_) {}
    if (!reachable) return warn(`not loaded: ${api} could not be reached (${e && e.message}).`)
    warn(`not loaded: this page's origin ${location.origin} is not allowed for widget ${id}. ` +
      `Add ${location.origin} to the widget's allowed origins: ${setting}`)
  }

  function mount(cfg) {
    if (document.querySelector(`[data-gatehouse-widget="${id}"]`)) return // a second tag won the race
    const s = cfg.settings || {}
    const title = s.title || cfg.name || 'Chat'
    const accent = /^#[0-9a-f]{6}$/i.test(s.accent_color || '') ? s.accent_color : '#2563eb'
    const left = (ds.position || s.position) === 'bottom-left'
    // Black or white text on the accent colour, whichever reads better.
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(accent.slice(i, i + 2), 16))
    const onAccent = 0.299 * r + 0.587 * g + 0.114 * b > 160 ? '#111' : '#fff'
    const ring = onAccent === '#fff' ? accent : '#1f2328' // focus outline that shows on white
    const storeKey = `gatehouse:visitor:${id}`
    const store = {
      get() { try { return localStorage.getItem(storeKey) } catch (_) { return null } },
      set(v) { try { localStorage.setItem(storeKey, v) } catch (_) {} },
      del() { try { localStorage.removeItem(storeKey) } catch (_) {} },
    }

    // ---- DOM, all inside the shadow root
    const host = document.createElement('div')
    host.setAttribute('data-gatehouse-widget', id)
    const root = host.attachShadow({ mode: 'open' })
    const side = left ? 'left' : 'right'
    root.innerHTML = `<style>
:host{all:initial;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328}
*{box-sizing:border-box;font:inherit}
[hidden]{display:none!important}
button{cursor:pointer;border:0}
:focus-visible{outline:3px solid ${ring};outline-offset:2px}
.launcher{position:fixed;bottom:20px;${side}:20px;z-index:2147483000;width:56px;height:56px;border-radius:50%;
 background:${accent};color:${onAccent};box-shadow:0 4px 14px rgba(0,0,0,.25);display:grid;place-items:center}
.launcher:focus-visible{outline-color:#1f2328;outline-offset:3px}
.launcher svg{width:26px;height:26px;fill:currentColor}
.panel{position:fixed;bottom:88px;${side}:20px;z-index:2147483000;width:370px;height:min(560px,calc(100vh - 110px));
 display:flex;flex-direction:column;background:#fff;border-radius:14px;overflow:hidden;
 box-shadow:0 10px 40px rgba(0,0,0,.25);border:1px solid #d0d7de}
header{display:flex;align-items:center;gap:8px;padding:12px 14px;background:${accent};color:${onAccent}}
h2{margin:0;flex:1;font-size:16px;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.close{background:transparent;color:inherit;width:32px;height:32px;border-radius:8px;font-size:22px;line-height:1}
.close:focus-visible{outline-color:${onAccent};outline-offset:-3px}
.log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:8px;background:#f6f8fa}
.msg{max-width:85%;padding:8px 12px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere}
.assistant{align-self:flex-start;background:#fff;border:1px solid #d0d7de}
.user{align-self:flex-end;background:${accent};color:${onAccent}}
.msg.pending:empty::after{content:"\\2026"}
.note{margin:0;padding:8px 14px;background:#fff8c5;color:#4d2d00;font-size:14px;border-top:1px solid #d4a72c}
form{display:flex;gap:8px;padding:10px;border-top:1px solid #d0d7de;background:#fff}
textarea{flex:1;resize:none;min-height:42px;max-height:120px;padding:10px;border:1px solid #8c959f;border-radius:10px;
 font-size:16px;color:#1f2328;background:#fff}
textarea:focus-visible{outline-offset:0}
.send{padding:0 14px;border-radius:10px;background:${accent};color:${onAccent};font-weight:600}
.send:disabled{opacity:.55;cursor:default}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:480px){.panel{inset:0;width:100%;height:100%;border-radius:0;border:0}}
</style>
<button class="launcher" id="gatehouse-launcher" type="button" aria-expanded="false" aria-controls="gatehouse-panel">
 <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/></svg></button>
<div class="panel" id="gatehouse-panel" role="dialog" hidden>
 <header><h2 id="gatehouse-title"></h2><button class="close" type="button" aria-label="Close chat">&times;</button></header>
 <div class="log" role="log" aria-live="polite" aria-label="Conversation"></div>
 <p class="note" role="status" hidden></p>
 <form><label class="sr" for="gatehouse-input">Message</label>
<textarea id="gatehouse-input" rows="1" placeholder="Type a message&hellip;"></textarea>
<button class="send" type="submit">Send</button></form>
</div>`
    const $ = (q) => root.querySelector(q)
    const launcher = $('.launcher'), panel = $('.panel'), log = $('.log'), note = $('.note')
    const input = $('textarea'), sendBtn = $('.send')
    $('h2').textContent = title
    panel.setAttribute('aria-label', title)
    launcher.setAttribute('aria-label', 'Open chat: ' + title)
    document.body.appendChild(host)

    const bubble = (role, text) => {
      const el = document.createElement('div')
      el.className = 'msg ' + role
      el.textContent = text || ''
      log.appendChild(el)
      log.scrollTop = log.scrollHeight
      return el
    }
    const showNote = (text) => { note.textContent = text || ''; note.hidden = !text }
    const explain = (e) => {
      if (e && (e.status === 429 || e.code === 'rate_limited')) {
        return 'The assistant is unavailable right now. Please try again in ' +
          (e.retryAfter ? `${e.retryAfter} second${e.retryAfter === 1 ? '' : 's'}.` : 'a moment.')
      }
      if (e instanceof ApiError) {
        if (e.status === 401 || e.status === 403) return 'This chat cannot be used on this page right now.'
        if (e.status < 500) return 'That message could not be sent. Please try again.'
        return 'The assistant is unavailable right now. Please try again shortly.'
      }
      return 'Cannot reach the assistant. Please check your connection and try again.'
    }

    // ---- session: opened lazily, renewed at 80% of its lifetime
    let session = null, opening = null, renewTimer = 0, threadId = null

    async function adopt(d) {
      const k = await crypto.subtle.importKey('raw', enc.encode(d.signing_secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
      session = { token: d.session_token, key: k, expires: d.expires_at }
      if (d.visitor_id) store.set(d.visitor_id)
      clearTimeout(renewTimer)
      const life = d.expires_at - Date.now()
      if (life > 0) renewTimer = setTimeout(renew, Math.min(2 ** 31 - 1, Math.max(1000, life * 0.8)))
    }
    async function openSession(withVisitor = true) {
      const body = {}
      if (key) body.token = key
      const vid = withVisitor && store.get()
      if (vid) body.visitor_id = vid
      if (ds.userId) { body.user_id = ds.userId; body.user_hash = ds.userHash || '' }
      const res = await fetch(base + '/session', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
      })
      if (!res.ok) {
        const e = await apiError(res)
        // A remembered visitor the server no longer accepts: start over as a new visitor.
        if (vid && (e.status === 400 || e.status === 404 || e.status === 422)) { store.del(); return openSession(false) }
        throw e
      }
      await adopt((await res.json()).data)
    }
    const ensureSession = () => session ? Promise.resolve() :
      (opening = opening || openSession().finally(() => { opening = null }))
    async function renew() {
      try {
        const res = await signed('POST', '/session/renew', '{}')
        if (!res.ok) throw await apiError(res)
        await adopt((await res.json()).data)
      } catch (e) {
        session = null // the next call opens a new one
        warn('session renewal failed:', e && e.message)
      }
    }

    // Signed call: HMAC-SHA256(signing_secret, "{ts}.{nonce}.{METHOD}.{path}.{body}").
    async function signed(method, sub, body) {
      const url = base + sub
      const ts = String(Math.floor(Date.now() / 1000))
      const nonce = b64url(crypto.getRandomValues(new Uint8Array(18)))
      const msg = `${ts}.${nonce}.${method}.${new URL(url).pathname}.${body}`
      const sig = hex(await crypto.subtle.sign('HMAC', session.key, enc.encode(msg)))
      const headers = {
        authorization: 'Bearer ' + session.token,
        'x-gatehouse-timestamp': ts, 'x-gatehouse-nonce': nonce, 'x-gatehouse-signature': 'v1=' + sig,
      }
      if (method !== 'GET') headers['content-type'] = 'application/json'
      return fetch(url, { method, headers, body: method === 'GET' ? undefined : body })
    }
    // A signed call that re-opens the session once when the server says it expired.
    async function call(method, sub, body) {
      await ensureSession()
      let res = await signed(method, sub, body)
      if (res.status === 401) {
        const e = await apiError(res.clone())
        if (e.reason !== 'session_expired') throw e
        session = null
        await ensureSession()
        res = await signed(method, sub, body)
      }
      if (!res.ok) throw await apiError(res)
      return res
    }

    // ---- conversation
    let loaded = null, busy = false
    // Greeting, then the visitor's latest conversation (once; retried after a failure).
    const begin = () => (loaded = loaded || (async () => {
      showNote('Connecting\u2026')
      try {
        const h = (await (await call('GET', '/history', '')).json()).data || {}
        threadId = h.thread_id || null
        log.textContent = ''
        if (s.greeting) bubble('assistant', s.greeting)
        for (const m of h.messages || []) bubble(m.role === 'user' ? 'user' : 'assistant', m.content)
        showNote('')
      } catch (e) {
        loaded = null
        showNote(explain(e))
        warn(e && e.message)
        throw e
      }
    })())

    // Reads a text/event-stream body and calls onEvent(name, data) per event.
    async function readSse(res, onEvent) {
      const reader = res.body.getReader(), dec = new TextDecoder()
      let buf = ''
      for (;;) {
        const { value, done } = await reader.read()
        buf += dec.decode(value || new Uint8Array(), { stream: !done })
        let i
        while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
          const block = buf.slice(0, i)
          buf = buf.slice(i).replace(/^\r?\n\r?\n/, '')
          let name = 'message', data = []
          for (const line of block.split(/\r?\n/)) {
            if (line.startsWith('event:')) name = line.slice(6).trim()
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''))
          }
          if (data.length) { let d; try { d = JSON.parse(data.join('\n')) } catch (_) { d = {} } onEvent(name, d) }
        }
        if (done) return
      }
    }

    async function send() {
      const text = input.value.trim()
      if (!text || busy) return
      busy = true
      sendBtn.disabled = true
      let mine = null, out = null
      try {
        await begin()
        showNote('')
        input.value = ''
        input.style.height = ''
        mine = bubble('user', text)
        out = bubble('assistant pending', '')
        const body = JSON.stringify(threadId ? { message: text, stream: true, thread_id: threadId } : { message: text, stream: true })
        const res = await call('POST', '/chat', body)
        if ((res.headers.get('content-type') || '').includes('text/event-stream')) {
          await readSse(res, (ev, d) => {
            if (ev === 'delta' && typeof d.content === 'string') {
              out.textContent += d.content
              log.scrollTop = log.scrollHeight
            } else if (ev === 'done') {
              if (d.thread_id) threadId = d.thread_id
            } else if (ev === 'error') {
              showNote(d.code === 'rate_limited' ? explain(d) : 'The assistant could not finish that answer. Please try again.')
            }
          })
        } else {
          const d = (await res.json()).data || {}
          out.textContent = d.response || ''
          if (d.thread_id) threadId = d.thread_id
        }
      } catch (e) {
        if (loaded) showNote(explain(e)) // (a failed history load has shown its own note)
        warn(e && e.message)
        if (mine && !out.textContent) { mine.remove(); input.value = input.value || text } // give the text back
      } finally {
        if (out) {
          out.classList.remove('pending')
          if (!out.textContent) out.remove()
        }
        busy = false
        sendBtn.disabled = false
        if (!panel.hidden) input.focus()
      }
    }

    // ---- open / close, keyboard
    const setOpen = (open) => {
      panel.hidden = !open
      launcher.setAttribute('aria-expanded', String(open))
      if (open) {
        input.focus()
        begin().catch(() => {})
      } else launcher.focus()
    }
    launcher.addEventListener('click', () => setOpen(panel.hidden))
    $('.close').addEventListener('click', () => setOpen(false))
    root.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !panel.hidden) { e.stopPropagation(); setOpen(false) }
    })
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send() }
    })
    input.addEventListener('input', () => {
      input.style.height = 'auto'
      input.style.height = Math.min(input.scrollHeight, 120) + 'px'
    })
    $('form').addEventListener('submit', (e) => { e.preventDefault(); send() })
  }

  try { start() } catch (e) { warn('failed to start', e) }
})()
