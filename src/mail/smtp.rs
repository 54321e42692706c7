//! Sending through SMTP with lettre (tokio + rustls): `smtp://` (plain, or STARTTLS with
//! `?tls=required`), `smtps://` (TLS), credentials in the URL.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::SecretString;
use crate::store::QueuedMail;

/// An SMTP connection pool.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smtp {
    /// From `smtp_url`. Errors never repeat the URL: it may hold a password.
    pub fn new(url: &SecretString) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|_| anyhow::anyhow!("smtp_url is not a valid smtp:// or smtps:// URL"))?
            // Per SMTP command; the worker bounds the whole delivery (`SEND_TIMEOUT`).
            .timeout(Some(Duration::from_secs(10)))
            .build();
        Ok(Smtp { transport })
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
