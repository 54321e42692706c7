use super::{Store, StoreError, StoreResult};

/// A stored refresh token (its hash, never the token).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RefreshRow {
    /// Row id.
    pub id: String,
    /// The session it belongs to.
    pub session_id: String,
    /// The user.
    pub user_id: String,
    /// When it was rotated (used), if it was.
    pub revoked_at: Option<i64>,
    /// The successor, sealed under this token.
    pub successor_sealed: Option<String>,
}

/// Sessions that a change ended: their caches must forget them on every instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// Token sessions, by id.
    pub sessions: Vec<String>,
    /// Dashboard sessions, by the SHA-256 of their cookie.
    pub web_sessions: Vec<String>,
}

/// A token session's owner and its two times, for the session bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The user.
    pub user_id: String,
    /// Unix ms when it began (sign-in).
    pub created_at: i64,
    /// Unix ms of its last refresh (or its start).
    pub refreshed_at: i64,
}

/// Ends every token session of `user_id` but `keep`, and every dashboard session, inside `tx`.
pub(crate) async fn end_sessions_in(
    tx: &mut super::exec::Conn,
    user_id: &str,
    keep: Option<&str>,
) -> StoreResult<Ended> {
    let sessions: Vec<(String,)> =
        sqlx::query_as("DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .fetch_all(&mut *tx)
            .await?;
    let web: Vec<(String,)> =
        sqlx::query_as("DELETE FROM web_sessions WHERE user_id = $1 RETURNING id_hash")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
    Ok(Ended {
        sessions: sessions.into_iter().map(|r| r.0).collect(),
        web_sessions: web.into_iter().map(|r| r.0).collect(),
    })
}

/// The outcome of trying to rotate a refresh token.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// This request rotated it; the successor is stored.
    Rotated,
    /// Another request rotated it first.
    AlreadyRotated,
}

impl Store {
    /// Starts a session with its first refresh token (hash).
    #[tracing::instrument(name = "Store::create_session", level = "debug", skip_all)]
    pub async fn create_session(
        &self,
        user_id: &str,
        method: &str,
        refresh_hash: &str,
        now: i64,
    ) -> StoreResult<String> {
        let session_id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO sessions (id, user_id, amr_method, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(&session_id)
            .bind(user_id)
            .bind(method)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (id, token_hash, session_id, user_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(refresh_hash)
        .bind(&session_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(session_id)
    }

    /// Finds a refresh token by hash.
    #[tracing::instrument(name = "Store::refresh_token", level = "debug", skip_all)]
    pub async fn refresh_token(&self, hash: &str) -> StoreResult<Option<RefreshRow>> {
        Ok(sqlx::query_as(
            "SELECT id, session_id, user_id, revoked_at, successor_sealed FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.db())
        .await?)
    }

    /// Whether a refresh token with this hash exists.
    #[tracing::instrument(name = "Store::refresh_token_exists", level = "debug", skip_all)]
    pub async fn refresh_token_exists(&self, hash: &str) -> StoreResult<bool> {
        Ok(self.refresh_token(hash).await?.is_some())
    }

    /// Rotates `parent` to a successor atomically: the first caller wins, later callers see
    /// `AlreadyRotated`. The conditional UPDATE is the first statement, so PostgreSQL's row
    /// lock orders racing requests (SQLite's write transactions are serialized from BEGIN).
    #[tracing::instrument(name = "Store::rotate_refresh", level = "debug", skip_all)]
    pub async fn rotate_refresh(
        &self,
        parent: &RefreshRow,
        successor_hash: &str,
        successor_sealed: &str,
        now: i64,
    ) -> StoreResult<Rotation> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1, successor_sealed = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(successor_sealed)
        .bind(&parent.id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Rotation::AlreadyRotated);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (id, token_hash, session_id, user_id, parent_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(successor_hash)
        .bind(&parent.session_id)
        .bind(&parent.user_id)
        .bind(&parent.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sessions SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&parent.session_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated)
    }

    /// Whether a session exists: whose it is, when it began and when it was last refreshed.
    #[tracing::instrument(name = "Store::session_info", level = "debug", skip_all)]
    pub async fn session_info(&self, session_id: &str) -> StoreResult<Option<SessionInfo>> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT user_id, created_at, updated_at FROM sessions WHERE id = $1")
                .bind(session_id)
                .fetch_optional(self.db())
                .await?;
        Ok(row.map(|(user_id, created_at, refreshed_at)| SessionInfo {
            user_id,
            created_at,
            refreshed_at,
        }))
    }

    /// Replaces the password and ends every other session of the user (token sessions but
    /// `keep`, and all dashboard sessions), in one transaction.
    #[tracing::instrument(
        name = "Store::set_password_ending_sessions",
        level = "debug",
        skip_all
    )]
    pub async fn set_password_ending_sessions(
        &self,
        user_id: &str,
        hash: &str,
        keep: Option<&str>,
        now: i64,
    ) -> StoreResult<Ended> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let ended = end_sessions_in(&mut tx, user_id, keep).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Ends one session (its refresh tokens go with it).
    #[tracing::instrument(name = "Store::delete_session", level = "debug", skip_all)]
    pub async fn delete_session(&self, session_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(session_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Ends every session of a user, or every one but `keep`; returns the ended ids.
    #[tracing::instrument(name = "Store::delete_user_sessions", level = "debug", skip_all)]
    pub async fn delete_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id")
                .bind(user_id)
                .bind(keep.unwrap_or(""))
                .fetch_all(self.db())
                .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Starts a dashboard session (the cookie's hash is stored).
    #[tracing::instrument(name = "Store::create_web_session", level = "debug", skip_all)]
    pub async fn create_web_session(
        &self,
        id_hash: &str,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO web_sessions (id_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id_hash)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// The user of a live dashboard session, with its expiry.
    #[tracing::instrument(name = "Store::web_session", level = "debug", skip_all)]
    pub async fn web_session(&self, id_hash: &str, now: i64) -> StoreResult<Option<(String, i64)>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT user_id, expires_at FROM web_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(self.db())
        .await?;
        Ok(row)
    }

    /// Ends a dashboard session.
    #[tracing::instrument(name = "Store::delete_web_session", level = "debug", skip_all)]
    pub async fn delete_web_session(&self, id_hash: &str) -> StoreResult<()> {
        let r = sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.db())
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
