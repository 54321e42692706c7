//! Development delivery without SMTP: each mail is logged and written to a file in
//! `mail_outbox_dir`, where a developer reads the link and the code.

use std::path::PathBuf;

use crate::store::QueuedMail;

/// The outbox folder.
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// Mails go to `dir` (created on first use).
    pub fn new(dir: &str) -> Self {
        Outbox { dir: dir.into() }
    }

    /// Writes `{created_at}-{id}.txt` and logs the mail (this is the development mode:
    /// the link and code are meant to be read here).
    pub async fn write(&self, m: &QueuedMail) -> Result<(), String> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.dir.join(format!("{}-{}.txt", m.created_at, m.id));
        let content = format!(
            "To: {}\nSubject: {}\n\n{}\n\n--- HTML ---\n{}\n",
            m.recipient, m.subject, m.text_body, m.html_body
        );
        tokio::fs::write(&path, content)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        tracing::info!(
            to = %m.recipient,
            subject = %m.subject,
            file = %path.display(),
            body = %m.text_body,
            "mail written to the development outbox (no smtp_url: not sent)"
        );
        Ok(())
    }
}
