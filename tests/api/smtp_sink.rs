//! A real SMTP server for the tests (tokio): accepts every mail, with or without AUTH, and
//! keeps what it received. No TLS: the conversation itself is what is tested.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One received mail.
#[derive(Clone, Debug)]
pub struct Received {
    pub to: Vec<String>,
    pub data: String,
    /// The credentials the client authenticated with, if it did.
    pub auth: Option<String>,
}

impl Received {
    /// The message with quoted-printable soft breaks and `=3D` undone.
    pub fn decoded(&self) -> String {
        self.data.replace("=\r\n", "").replace("=3D", "=")
    }

    /// The first `…/auth/v1/verify?…` link in the mail.
    pub fn link(&self) -> String {
        let d = self.decoded();
        let mut pos = 0;
        while let Some(i) = d[pos..].find("http") {
            let s = &d[pos + i..];
            let end = s
                .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
                .unwrap_or(s.len());
            let candidate = &s[..end];
            if candidate.contains("/auth/v1/verify?") {
                return candidate.replace("&amp;", "&");
            }
            pos += i + 4;
        }
        panic!("no verify link in the mail:\n{d}")
    }

    /// The six-digit code (the line "Or enter this code: NNNNNN").
    pub fn code(&self) -> String {
        let d = self.decoded();
        let i = d.find("code: ").expect("no code in the mail");
        d[i + 6..i + 12].to_string()
    }

    /// A query parameter of the link.
    pub fn link_param(&self, name: &str) -> String {
        let link = self.link();
        let q = link.split_once('?').unwrap().1;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }
}

/// The sink: its port and what it received.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    pub mails: Arc<Mutex<Vec<Received>>>,
    stop: Arc<tokio::sync::Notify>,
}

impl SmtpSink {
    /// Listens on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Listens on `port` (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let sink = SmtpSink {
            port,
            mails: mails.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.notified() => return,
                    accepted = listener.accept() => {
                        let Ok((sock, _)) = accepted else { return };
                        tokio::spawn(session(sock, mails.clone()));
                    }
                }
            }
        });
        sink
    }

    /// `smtp://127.0.0.1:PORT`, with credentials when given.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!("smtp://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("smtp://127.0.0.1:{}", self.port),
        }
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// Mails received for `to`.
    pub fn to(&self, to: &str) -> Vec<Received> {
        self.mails
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .cloned()
            .collect()
    }

    /// Waits until `n` mails for `to` arrived (up to `secs`); returns them.
    pub async fn wait_for(&self, to: &str, n: usize, secs: u64) -> Vec<Received> {
        for _ in 0..secs * 20 {
            let got = self.to(to);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "expected {n} mail(s) for {to} within {secs} s, got {}",
            self.to(to).len()
        )
    }
}

async fn session(sock: tokio::net::TcpStream, mails: Arc<Mutex<Vec<Received>>>) {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let mut to = Vec::new();
    let mut auth = None;
    if w.write_all(b"220 sink ESMTP ready\r\n").await.is_err() {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 sink\r\n".into()
        } else if upper.starts_with("AUTH PLAIN") {
            auth = cmd.get(11..).map(str::to_string);
            "235 2.7.0 Authentication successful\r\n".into()
        } else if upper.starts_with("AUTH LOGIN") {
            let mut parts = Vec::new();
            for prompt in ["334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n"] {
                if w.write_all(prompt.as_bytes()).await.is_err() {
                    return;
                }
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                parts.push(line.trim_end().to_string());
            }
            auth = Some(parts.join(":"));
            "235 2.7.0 Authentication successful\r\n".into()
        } else if upper.starts_with("MAIL FROM") {
            to.clear();
            "250 OK\r\n".into()
        } else if upper.starts_with("RCPT TO") {
            let addr = cmd[8..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string();
            to.push(addr);
            "250 OK\r\n".into()
        } else if upper == "DATA" {
            if w.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            mails.lock().unwrap().push(Received {
                to: to.clone(),
                data,
                auth: auth.clone(),
            });
            "250 OK queued\r\n".into()
        } else if upper == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n").await;
            return;
        } else {
            // RSET, NOOP and anything else.
            "250 OK\r\n".into()
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
