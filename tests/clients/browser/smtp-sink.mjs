// A tiny SMTP server for the browser suites: accepts every mail (no TLS, no AUTH) and keeps
// it, so a server with `smtp_url` (mail confirmation on, unlike `--dev`) can be tested.
// Node built-ins only; just enough SMTP for lettre's plain `smtp://` transport.

import net from 'node:net'

import { sleep } from '../harness.mjs'

export function startSmtpSink() {
  const mails = []
  const srv = net.createServer((sock) => {
    let buf = ''
    let data = null
    let to = []
    const say = (line) => sock.write(`${line}\r\n`)
    say('220 sink ESMTP')
    sock.on('data', (chunk) => {
      buf += chunk.toString('utf8')
      for (;;) {
        if (data !== null) {
          const end = buf.indexOf('\r\n.\r\n')
          if (end < 0) return
          data += buf.slice(0, end)
          buf = buf.slice(end + 5)
          mails.push({ to, text: decode(data) })
          data = null
          to = []
          say('250 queued')
          continue
        }
        const nl = buf.indexOf('\r\n')
        if (nl < 0) return
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 2)
        const verb = line.slice(0, 4).toUpperCase()
        if (verb === 'EHLO' || verb === 'HELO') say('250 sink')
        else if (verb === 'RCPT') { to.push(line.match(/<([^>]*)>/)?.[1] || ''); say('250 ok') }
        else if (verb === 'DATA') { data = ''; say('354 go on') }
        else if (verb === 'QUIT') { say('221 bye'); sock.end() }
        else say('250 ok')
      }
    })
    sock.on('error', () => {})
  })
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({
    url: `smtp://127.0.0.1:${srv.address().port}`,
    mails,
    // Waits for a mail to `address` whose text matches `re`; returns the text.
    async waitFor(address, re = /./) {
      const deadline = Date.now() + 15_000
      for (;;) {
        const m = mails.find((x) => x.to.includes(address) && re.test(x.text))
        if (m) return m.text
        if (Date.now() > deadline) throw new Error(`no mail to ${address} matching ${re}: ${JSON.stringify(mails.map((x) => x.to))}`)
        await sleep(100)
      }
    },
    close: () => new Promise((r) => srv.close(r)),
  })))
}

// Quoted-printable soft breaks and escapes undone.
function decode(text) {
  return text.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_, x) => String.fromCharCode(parseInt(x, 16)))
}

// The six-digit code and the verify link of a Gatehouse mail.
export const codeOf = (text) => text.match(/enter this code:\s*(?:<strong>)?(\d{6})/)[1]
export const linkOf = (text) => text.match(/https?:\/\/[^\s"<>]+\/auth\/v1\/verify\?[^\s"<>]+/)[0].replace(/&amp;/g, '&')
