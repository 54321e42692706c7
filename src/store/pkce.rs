//! PKCE auth codes: minted when a PKCE flow's link is followed, exchanged once.

use super::{Store, StoreResult};

/// A PKCE auth code, taken out of storage by its exchange.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PkceCode {
    /// Whose session it opens.
    pub user_id: String,
    /// The S256 form of the flow's challenge.
    pub code_challenge: String,
    /// What the link proved (the session's sign-in method).
    pub method: String,
    /// Unix ms after which it is refused.
    pub expires_at: i64,
}

impl Store {
    /// Stores a new auth code (its SHA-256) and drops the expired ones.
    #[tracing::instrument(name = "Store::add_pkce_code", level = "debug", skip_all)]
    pub async fn add_pkce_code(
        &self,
        code_hash: &str,
        code: &PkceCode,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM pkce_codes WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO pkce_codes (code_hash, user_id, code_challenge, method, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(code_hash)
        .bind(&code.user_id)
        .bind(&code.code_challenge)
        .bind(&code.method)
        .bind(now)
        .bind(code.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes an auth code out of storage: only the one caller that deletes it gets it, so a
    /// code is used at most once, whatever the outcome of that use.
    #[tracing::instrument(name = "Store::take_pkce_code", level = "debug", skip_all)]
    pub async fn take_pkce_code(&self, code_hash: &str) -> StoreResult<Option<PkceCode>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query_as(
            "DELETE FROM pkce_codes WHERE code_hash = $1 \
             RETURNING user_id, code_challenge, method, expires_at",
        )
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }
}
