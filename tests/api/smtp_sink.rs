//! A real SMTP server for the tests (tokio): accepts every mail, with or without AUTH, and
//! keeps what it received. It can refuse the next mails with scripted 4xx/5xx replies, and
//! speak STARTTLS (rustls) with a certificate from a CA made for the test (rcgen).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A connection, before or after STARTTLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What the sink's sessions share.
#[derive(Clone)]
struct Shared {
    mails: Arc<Mutex<Vec<Received>>>,
    /// Replies given at the end of the next DATA commands instead of accepting the mail.
    failures: Arc<Mutex<VecDeque<u16>>>,
    refused: Arc<AtomicUsize>,
    /// Set: STARTTLS is offered, and required before MAIL FROM.
    tls: Option<TlsAcceptor>,
}

/// One received mail.
#[derive(Clone, Debug)]
pub struct Received {
    pub to: Vec<String>,
    pub data: String,
    /// The credentials the client authenticated with, if it did.
    pub auth: Option<String>,
    /// Whether it came over TLS (after STARTTLS).
    pub tls: bool,
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
    shared: Shared,
}

impl SmtpSink {
    /// Listens on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Listens on `port` (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        Self::listen(port, None).await
    }

    /// Listens on a free port and requires STARTTLS, with a certificate for 127.0.0.1 signed
    /// by a CA made here; returns the sink and that CA's certificate (PEM) for the client.
    pub async fn start_tls() -> (Self, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Gatehouse test SMTP CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], der_key)
        .unwrap();
        let sink = Self::listen(0, Some(TlsAcceptor::from(Arc::new(config)))).await;
        (sink, ca.pem())
    }

    async fn listen(port: u16, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Shared {
            mails: Arc::default(),
            failures: Arc::default(),
            refused: Arc::default(),
            tls,
        };
        let stop = Arc::new(tokio::sync::Notify::new());
        let sink = SmtpSink {
            port,
            mails: shared.mails.clone(),
            stop: stop.clone(),
            shared: shared.clone(),
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.notified() => return,
                    accepted = listener.accept() => {
                        let Ok((sock, _)) = accepted else { return };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            session(Box::new(sock), shared, false, true).await;
                        });
                    }
                }
            }
        });
        sink
    }

    /// Refuses the next mails, one per code (e.g. 451, then 554), at the end of DATA.
    pub fn refuse_next(&self, codes: &[u16]) {
        self.shared.failures.lock().unwrap().extend(codes);
    }

    /// Mails refused so far by [`SmtpSink::refuse_next`].
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
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

/// One SMTP conversation; after STARTTLS it goes on in a new call over the TLS stream
/// (boxed: the future would otherwise contain itself).
fn session(
    sock: Box<dyn Stream>,
    shared: Shared,
    tls: bool,
    greet: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(converse(sock, shared, tls, greet))
}

async fn converse(sock: Box<dyn Stream>, shared: Shared, tls: bool, greet: bool) {
    let mails = shared.mails.clone();
    let (r, mut w) = tokio::io::split(sock);
    let mut r = BufReader::new(r);
    let mut to = Vec::new();
    let mut auth = None;
    if greet && w.write_all(b"220 sink ESMTP ready\r\n").await.is_err() {
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
        let offers_tls = shared.tls.is_some() && !tls;
        let reply: String = if upper.starts_with("EHLO") {
            let starttls = if offers_tls { "250-STARTTLS\r\n" } else { "" };
            format!(
                "250-sink\r\n{starttls}250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            )
        } else if upper == "STARTTLS" && offers_tls {
            if w.write_all(b"220 2.0.0 Ready to start TLS\r\n")
                .await
                .is_err()
            {
                return;
            }
            // The client sends nothing more before its handshake, so nothing is buffered.
            let plain = r.into_inner().unsplit(w);
            let Ok(secure) = shared.tls.clone().unwrap().accept(plain).await else {
                return;
            };
            return session(Box::new(secure), shared, true, false).await;
        } else if upper.starts_with("MAIL FROM") && offers_tls {
            "530 5.7.0 Must issue a STARTTLS command first\r\n".into()
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
            let refusal = shared.failures.lock().unwrap().pop_front();
            if let Some(code) = refusal {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                format!("{code} scripted refusal\r\n")
            } else {
                mails.lock().unwrap().push(Received {
                    to: to.clone(),
                    data,
                    auth: auth.clone(),
                    tls,
                });
                "250 OK queued\r\n".into()
            }
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
