//! Sending through SMTP with lettre (tokio + rustls): `smtp://` (plain, or STARTTLS with
//! `?tls=required`), `smtps://` (TLS), credentials in the URL.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::SecretString;
use crate::store::QueuedMail;

/// An SMTP connection pool.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smtp {
    /// From `smtp_url`, trusting the CAs in `ca_file` (`smtp_ca_file`) too. Errors never
    /// repeat the URL: it may hold a password.
    pub fn new(url: &SecretString, ca_file: Option<&str>) -> anyhow::Result<Self> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|_| anyhow::anyhow!("smtp_url is not a valid smtp:// or smtps:// URL"))?
            // Per SMTP command; the worker bounds the whole delivery (`SEND_TIMEOUT`).
            .timeout(Some(Duration::from_secs(10)));
        if let Some(path) = ca_file {
            builder = builder.tls(tls_with_ca(url, path)?);
        }
        Ok(Smtp {
            transport: builder.build(),
        })
    }

    /// Sends one mail; the error is safe to store and log.
    pub async fn send(&self, from: &Mailbox, m: &QueuedMail) -> Result<(), String> {
        let msg = message(from, m)?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Connects, greets and authenticates as a delivery would, and sends nothing
    /// (`gatehouse config check --connect`). The error is safe to print.
    pub async fn check(&self) -> Result<(), String> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the server did not accept the connection".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The TLS mode `smtp_url` asks for (`smtps://`: TLS from the start; `?tls=required` or
/// `?tls=opportunistic`: STARTTLS), with the public roots and the certificates of `ca_file`.
/// lettre's URL parser sets the mode but has no place for extra roots, so the mode is read
/// again here, the way it reads it.
fn tls_with_ca(url: &SecretString, ca_file: &str) -> anyhow::Result<Tls> {
    let u = url::Url::parse(url.expose_secret())
        .map_err(|_| anyhow::anyhow!("smtp_url is not a valid smtp:// or smtps:// URL"))?;
    let host = u.host_str().unwrap_or_default().to_string();
    let pem = std::fs::read(ca_file)
        .map_err(|e| anyhow::anyhow!("smtp_ca_file {ca_file}: cannot read it ({e})"))?;
    // Every certificate in the file (lettre reads them all).
    let cert = Certificate::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("smtp_ca_file {ca_file}: not PEM certificates ({e})"))?;
    let params = TlsParameters::builder(host)
        .add_root_certificate(cert)
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("smtp_ca_file {ca_file}: {e}"))?;
    let mode = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match (u.scheme(), mode.as_deref()) {
        ("smtps", _) => Ok(Tls::Wrapper(params)),
        ("smtp", Some("required")) => Ok(Tls::Required(params)),
        ("smtp", Some("opportunistic")) => Ok(Tls::Opportunistic(params)),
        _ => anyhow::bail!(
            "smtp_ca_file is set, but smtp_url uses no TLS (use smtps:// or ?tls=required)"
        ),
    }
}

/// The MIME message: plain text and HTML alternatives.
pub fn message(from: &Mailbox, m: &QueuedMail) -> Result<Message, String> {
    let to: Mailbox = m
        .recipient
        .parse()
        .map_err(|_| "the recipient address cannot be used".to_string())?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(m.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            m.text_body.clone(),
            m.html_body.clone(),
        ))
        .map_err(|e| format!("cannot build the message: {e}"))
}
