//! The durable mail queue and the per-address sending limit.

use super::{Engine, Store, StoreResult};

/// A mail waiting in the queue (or being sent).
#[derive(Clone, sqlx::FromRow)]
pub struct QueuedMail {
    /// Row id.
    pub id: String,
    /// The address it goes to.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body (carries the link and code: never logged outside the dev outbox).
    pub text_body: String,
    /// HTML body.
    pub html_body: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When it was queued (unix ms).
    pub created_at: i64,
}

impl std::fmt::Debug for QueuedMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedMail")
            .field("id", &self.id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Takes a slot for a mail to `address_hash`: false when one went out less than
    /// `interval_ms` ago. One conditional upsert, so racing requests cannot both win.
    #[tracing::instrument(name = "Store::take_address_slot", level = "debug", skip_all)]
    pub async fn take_address_slot(
        &self,
        address_hash: &str,
        now: i64,
        interval_ms: i64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "INSERT INTO mail_address_sends (address_hash, last_sent_at) VALUES ($1, $2) \
             ON CONFLICT (address_hash) DO UPDATE SET last_sent_at = excluded.last_sent_at \
             WHERE mail_address_sends.last_sent_at <= $3",
        )
        .bind(address_hash)
        .bind(now)
        .bind(now - interval_ms)
        .execute(self.db())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// When the last mail to `address_hash` was sent, if any.
    #[tracing::instrument(name = "Store::address_last_sent", level = "debug", skip_all)]
    pub async fn address_last_sent(&self, address_hash: &str) -> StoreResult<Option<i64>> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT last_sent_at FROM mail_address_sends WHERE address_hash = $1")
                .bind(address_hash)
                .fetch_optional(self.db())
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// Leases up to `limit` due mails to `owner` until `lease_until`. Several instances may
    /// run this at once: on PostgreSQL `FOR UPDATE SKIP LOCKED` hands each row to one of
    /// them; SQLite has one writer, so the UPDATE is already exclusive.
    #[tracing::instrument(name = "Store::lease_due_mail", level = "debug", skip_all)]
    pub async fn lease_due_mail(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<QueuedMail>> {
        let lock = match self.engine {
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let sql = format!(
            "UPDATE mail_outbox SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
               AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
               ORDER BY created_at LIMIT $4{lock}) \
             RETURNING id, recipient, subject, text_body, html_body, attempts, created_at"
        );
        Ok(sqlx::query_as(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(self.db())
            .await?)
    }

    /// Marks a leased mail sent and forgets its bodies (they carry the token).
    #[tracing::instrument(name = "Store::mail_sent", level = "debug", skip_all)]
    pub async fn mail_sent(&self, id: &str, owner: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE mail_outbox SET sent_at = $1, text_body = '', html_body = '', lease_owner = NULL, \
             lease_until = NULL WHERE id = $2 AND lease_owner = $3",
        )
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or given up when `give_up`
    /// (and then its bodies, which carry the token, are forgotten as a sent mail's are).
    #[tracing::instrument(name = "Store::mail_failed", level = "debug", skip_all)]
    pub async fn mail_failed(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        next_attempt_at: i64,
        give_up: Option<i64>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
             failed_at = $3, lease_owner = NULL, lease_until = NULL, \
             text_body = CASE WHEN $3 IS NULL THEN text_body ELSE '' END, \
             html_body = CASE WHEN $3 IS NULL THEN html_body ELSE '' END \
             WHERE id = $4 AND lease_owner = $5",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(give_up)
        .bind(id)
        .bind(owner)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Mails still waiting to be sent (not sent, not given up).
    #[tracing::instrument(name = "Store::pending_mail_count", level = "debug", skip_all)]
    pub async fn pending_mail_count(&self) -> StoreResult<i64> {
        let row: (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL",
        )
        .fetch_one(self.db())
        .await?;
        Ok(row.0)
    }
}
