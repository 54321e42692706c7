// A real SMTP server for the client suites (node:net): accepts every mail, keeps it, and
// lets a test wait for the mail to an address. No TLS; AUTH PLAIN/LOGIN accepted.

import net from 'node:net'

import { sleep } from '../harness.mjs'

export async function startSmtpSink() {
  const mails = []
  const server = net.createServer((sock) => {
    let buf = ''
    let inData = false
    let data = ''
    let to = []
    let loginSteps = 0
    const reply = (s) => sock.write(s + '\r\n')
    reply('220 sink ESMTP ready')
    sock.on('data', (chunk) => {
      buf += chunk.toString('utf8')
      let i
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 2)
        if (inData) {
          if (line === '.') {
            inData = false
            mails.push({ to: [...to], data })
            reply('250 OK queued')
          } else {
            data += (line.startsWith('.') ? line.slice(1) : line) + '\r\n'
          }
          continue
        }
        if (loginSteps > 0) {
          loginSteps -= 1
          reply(loginSteps > 0 ? '334 UGFzc3dvcmQ6' : '235 2.7.0 Authentication successful')
          continue
        }
        const up = line.toUpperCase()
        if (up.startsWith('EHLO')) sock.write('250-sink\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n')
        else if (up.startsWith('HELO')) reply('250 sink')
        else if (up.startsWith('AUTH PLAIN')) reply('235 2.7.0 Authentication successful')
        else if (up.startsWith('AUTH LOGIN')) {
          loginSteps = 2
          reply('334 VXNlcm5hbWU6')
        } else if (up.startsWith('MAIL FROM')) {
          to = []
          reply('250 OK')
        } else if (up.startsWith('RCPT TO')) {
          to.push(line.slice(8).trim().replace(/^</, '').replace(/>.*$/, ''))
          reply('250 OK')
        } else if (up === 'DATA') {
          inData = true
          data = ''
          reply('354 go ahead')
        } else if (up === 'QUIT') {
          reply('221 bye')
          sock.end()
        } else reply('250 OK')
      }
    })
    sock.on('error', () => {})
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address()
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    mails,
    close: () => new Promise((r) => server.close(r)),
    async waitFor(address, n = 1, ms = 10_000) {
      const deadline = Date.now() + ms
      for (;;) {
        const got = mails.filter((m) => m.to.includes(address))
        if (got.length >= n) return got.map(parsed)
        if (Date.now() > deadline) throw new Error(`no mail #${n} for ${address} within ${ms} ms`)
        await sleep(50)
      }
    },
  }
}

// The link and the code of a received mail (quoted-printable soft breaks undone).
function parsed(m) {
  const text = m.data.replace(/=\r\n/g, '').replace(/=3D/g, '=')
  const link = (text.match(/https?:\/\/[^\s"<]*\/auth\/v1\/verify\?[^\s"<]*/) || [])[0]?.replace(/&amp;/g, '&')
  const code = (text.match(/code: (\d{6})/) || [])[1]
  const subject = (text.match(/^Subject: (.*)$/m) || [])[1]
  return { ...m, text, link, code, subject }
}
