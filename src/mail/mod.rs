//! Email: templates, the durable queue's worker, SMTP or the development outbox, and the
//! flows that send one-time links and codes (confirmation, magic link, recovery, email change).

pub mod flows;
pub mod outbox;
pub mod pkce;
pub mod redirect;
pub mod smtp;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use tokio::sync::{watch, Notify};

use crate::clock::Clock;
use crate::config::Config;
use crate::store::{QueuedMail, Store};

/// The longest one delivery may take, SMTP dialogue included; a slower one counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a worker owns the mail it leased: one delivery and recording its outcome. A
/// worker that dies holding a lease (`kill -9` mid-send) delays that mail by at most this.
const LEASE_MS: i64 = 30_000;
/// How often the queue is read when nothing wakes the worker.
const POLL: Duration = Duration::from_secs(1);
/// Mails leased at once. One: mails are sent one after another, so a lease taken for a
/// batch would run out before its last mails were tried, and another instance would send
/// them again; a lease per mail costs one UPDATE, little beside an SMTP dialogue.
const BATCH: i64 = 1;

/// `serve` needs a way to deliver mail: SMTP, or a development setting that makes the
/// confirmation mail unnecessary (and then mails go to the log and the outbox folder).
pub fn check_serve(c: &Config) -> anyhow::Result<()> {
    if c.smtp_url.is_none() && !(c.autoconfirm || c.dev) {
        anyhow::bail!(
            "no smtp_url: set GATEHOUSE_SMTP_URL (e.g. smtps://user:pass@smtp.example.com:465) so \
             confirmation and sign-in mails can be sent, or run `serve --dev` \
             (or GATEHOUSE_AUTOCONFIRM=true) to write mails to the log and {} instead",
            c.mail_outbox_dir
        );
    }
    Ok(())
}

/// How mails leave.
enum Transport {
    Smtp(smtp::Smtp),
    Outbox(outbox::Outbox),
}

/// Templates, redirects and delivery; cheap to clone.
#[derive(Clone)]
pub struct Mailer(Arc<MailerInner>);

struct MailerInner {
    transport: Transport,
    from: Mailbox,
    templates: templates::Templates,
    redirects: redirect::Redirects,
    wake: Notify,
    owner: String,
    /// A mail is retried while the link or code in it is still good (`otp_expiry_seconds`).
    retry_for_ms: i64,
}

/// `redirect_allowlist` and the dashboard's own page (this server), where the dashboard's
/// sign-up, sign-in and recovery mails land even when `site_url` is another site.
fn with_dashboard(c: &Config) -> Vec<String> {
    let mut allowed = c.redirect_allowlist.clone();
    allowed.push(format!("{}/dashboard/", c.public_base()));
    allowed
}

impl Mailer {
    /// From the configuration: SMTP when `smtp_url` is set, else the development outbox.
    pub fn new(c: &Config) -> anyhow::Result<Self> {
        let transport = match &c.smtp_url {
            Some(url) => Transport::Smtp(smtp::Smtp::new(url, c.smtp_ca_file.as_deref())?),
            None => Transport::Outbox(outbox::Outbox::new(&c.mail_outbox_dir)),
        };
        let from = c
            .mail_from
            .parse::<Mailbox>()
            .map_err(|_| anyhow::anyhow!("mail_from must be an address"))?;
        Ok(Mailer(Arc::new(MailerInner {
            transport,
            from,
            templates: templates::Templates::load(c.mail_templates_dir.as_deref())?,
            redirects: redirect::Redirects::new(c.site(), &with_dashboard(c)),
            wake: Notify::new(),
            owner: uuid::Uuid::new_v4().to_string(),
            retry_for_ms: c.otp_expiry_seconds.saturating_mul(1000),
        })))
    }

    /// The templates.
    pub fn templates(&self) -> &templates::Templates {
        &self.0.templates
    }

    /// The redirect allowlist.
    pub fn redirects(&self) -> &redirect::Redirects {
        &self.0.redirects
    }

    /// Tells the worker a mail was queued.
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    async fn deliver(&self, m: &QueuedMail) -> Result<(), String> {
        let send = async {
            match &self.0.transport {
                Transport::Smtp(s) => s.send(&self.0.from, m).await,
                Transport::Outbox(o) => o.write(m).await,
            }
        };
        tokio::time::timeout(SEND_TIMEOUT, send)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", SEND_TIMEOUT.as_secs())))
    }

    /// Sends what is due, until the queue has nothing due; returns how many were sent.
    pub async fn drain(&self, store: &Store, clock: &Clock) -> usize {
        let mut sent = 0;
        loop {
            let now = clock.now_ms();
            let batch = match store
                .lease_due_mail(&self.0.owner, now, now + LEASE_MS, BATCH)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the mail queue");
                    return sent;
                }
            };
            let full = batch.len() as i64 == BATCH;
            for m in batch {
                let outcome = self.deliver(&m).await;
                let now = clock.now_ms();
                let written = match outcome {
                    Ok(()) => {
                        sent += 1;
                        // The outbox logged its own line ("… not sent"): saying "sent"
                        // after it would contradict it.
                        if matches!(self.0.transport, Transport::Smtp(_)) {
                            tracing::info!(mail_id = %m.id, "mail sent");
                        }
                        store.mail_sent(&m.id, &self.0.owner, now).await
                    }
                    Err(error) => {
                        let attempts = m.attempts + 1;
                        let retry_at = now + backoff_ms(attempts);
                        // Past its token's expiry a mail could only confuse its reader.
                        let give_up = (retry_at
                            >= m.created_at.saturating_add(self.0.retry_for_ms))
                        .then_some(now);
                        tracing::warn!(mail_id = %m.id, attempts, %error, given_up = give_up.is_some(), "mail not sent");
                        store
                            .mail_failed(&m.id, &self.0.owner, &error, retry_at, give_up)
                            .await
                    }
                };
                if let Err(e) = written {
                    tracing::warn!(error = %e, mail_id = %m.id, "cannot record the mail's outcome");
                }
            }
            if !full {
                return sent;
            }
        }
    }
}

/// 1 s, 2 s, 4 s … up to 5 minutes between attempts.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 20) - 1;
    (1000_i64 << exp).min(300_000)
}

/// The delivery worker: turns the stored mail requests into mails, then drains the queue,
/// when woken and every second, until `stop` flips. Several instances may run it on one
/// database; leases keep them off each other's requests and mails.
pub async fn worker(
    flows: flows::EmailFlows,
    store: Store,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mailer = flows.mailer.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        flows.handle_requests().await;
        mailer.drain(&store, &clock).await;
        tokio::select! {
            _ = stop.changed() => return,
            _ = mailer.0.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(30), 300_000);
    }

    #[test]
    fn serve_needs_smtp_or_development_mode() {
        let c = Config::default();
        assert!(check_serve(&c).is_err());
        assert!(check_serve(&Config {
            autoconfirm: true,
            ..Config::default()
        })
        .is_ok());
        assert!(check_serve(&Config {
            dev: true,
            ..Config::default()
        })
        .is_ok());
        let smtp = Config {
            smtp_url: Some(crate::config::SecretString::from("smtp://127.0.0.1:2525")),
            ..Config::default()
        };
        assert!(check_serve(&smtp).is_ok());
        let bad = Config {
            smtp_url: Some(crate::config::SecretString::from("http://x")),
            ..Config::default()
        };
        assert!(bad.check_mail().is_err());
    }
}
