use sqlx::Row;

use super::{Store, StoreResult};
use crate::auth::jwt::StoredKey;

impl Store {
    /// Keys still needed: the active one and retired ones whose tokens may not have expired.
    #[tracing::instrument(name = "Store::jwt_keys", level = "debug", skip_all)]
    pub async fn jwt_keys(&self, now: i64, token_ttl_ms: i64) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, private_pem, created_at FROM jwt_keys WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at",
        )
        .bind(now - token_ttl_ms)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get("kid")?,
                    private_pem: r.try_get("private_pem")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Adds a signing key and retires the previous ones (they keep verifying until their tokens expire).
    #[tracing::instrument(name = "Store::add_jwt_key", level = "debug", skip_all)]
    pub async fn add_jwt_key(&self, key: &StoredKey) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE jwt_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO jwt_keys (kid, private_pem, created_at) VALUES ($1, $2, $3)")
            .bind(&key.kid)
            .bind(&key.private_pem)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds `key` only if no active key exists (first start, safe against racing instances).
    #[tracing::instrument(name = "Store::ensure_jwt_key", level = "debug", skip_all)]
    pub async fn ensure_jwt_key(&self, key: &StoredKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO jwt_keys (kid, private_pem, created_at) SELECT $1, $2, $3 \
             WHERE NOT EXISTS (SELECT 1 FROM jwt_keys WHERE retired_at IS NULL)",
        )
        .bind(&key.kid)
        .bind(&key.private_pem)
        .bind(key.created_at)
        .execute(self.db())
        .await?;
        Ok(())
    }
}
