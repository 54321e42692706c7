//! Requests for mail whose sending depends on who has an account, handled by the worker.

use super::{Engine, Store, StoreResult};

/// A stored mail request.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MailRequestRow {
    /// Row id.
    pub id: String,
    /// `magiclink`, `magiclink_existing`, `recovery`, `signup` or `email_change`.
    pub kind: String,
    /// The address asked about (the new address of an email change).
    pub email: String,
    /// The account an email change is for.
    pub user_id: Option<String>,
    /// Where the link lands (checked against the allowlist when the mail is made).
    pub redirect_to: Option<String>,
    /// User metadata for an account a sign-in link creates (JSON).
    pub data: String,
    /// A sign-up's argon2 password hash.
    pub password_hash: Option<String>,
    /// The PKCE challenge of the flow (S256 form), if the client started one.
    pub code_challenge: Option<String>,
    /// Unix ms when it was asked for.
    pub created_at: i64,
}

impl Store {
    /// Stores a request (its `id` and `created_at` as given).
    #[tracing::instrument(name = "Store::add_mail_request", level = "debug", skip_all)]
    pub async fn add_mail_request(&self, r: &MailRequestRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO mail_requests (id, kind, email, user_id, redirect_to, data, password_hash, code_challenge, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.id)
        .bind(&r.kind)
        .bind(&r.email)
        .bind(&r.user_id)
        .bind(&r.redirect_to)
        .bind(&r.data)
        .bind(&r.password_hash)
        .bind(&r.code_challenge)
        .bind(r.created_at)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Leases the oldest request nobody holds to `owner` until `lease_until`.
    #[tracing::instrument(name = "Store::lease_mail_request", level = "debug", skip_all)]
    pub async fn lease_mail_request(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Option<MailRequestRow>> {
        let lock = match self.engine {
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let sql = format!(
            "UPDATE mail_requests SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT id FROM mail_requests WHERE lease_until IS NULL OR lease_until < $3 \
               ORDER BY created_at LIMIT 1{lock}) \
             RETURNING id, kind, email, user_id, redirect_to, data, password_hash, code_challenge, created_at"
        );
        Ok(sqlx::query_as(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .fetch_optional(self.db())
            .await?)
    }

    /// Forgets a handled (or given-up) request.
    #[tracing::instrument(name = "Store::delete_mail_request", level = "debug", skip_all)]
    pub async fn delete_mail_request(&self, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM mail_requests WHERE id = $1")
            .bind(id)
            .execute(self.db())
            .await?;
        Ok(())
    }
}
