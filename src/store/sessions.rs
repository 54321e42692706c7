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

/// Why a person's sessions end, as the audit entries of the OAuth grants ending with them
/// say (`details.why`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// A new password (a change, a reset, or one set when an address is confirmed).
    Password,
    /// A ban.
    Ban,
    /// The account's deletion.
    Deletion,
}

impl EndedBy {
    /// The `why` of the audit entries and of the revoked grants.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Password => "password_changed",
            EndedBy::Ban => "banned",
            EndedBy::Deletion => "user_deleted",
        }
    }
}

/// Ends every token session of `user_id` but `keep`, every dashboard session and every OAuth
/// grant, inside `tx`. Each grant ended gets an `oauth_grant.revoked` entry in its
/// organization's audit log, by `actor`.
pub(crate) async fn end_sessions_in(
    tx: &mut super::exec::Conn,
    user_id: &str,
    keep: Option<&str>,
    (actor, why): (&str, EndedBy),
    now: i64,
) -> StoreResult<Ended> {
    // What ends a person's sessions (a new password, a reset, a ban) ends what they delegated
    // too: their OAuth grants are revoked and the refresh tokens deleted, so a client approved
    // by them (or by whoever had their password) cannot keep acting. Access tokens already out
    // stop at their next use once the grant cache (`oauth::GRANT_CACHE_TTL`) has let go.
    sqlx::query(
        "DELETE FROM oauth_refresh_tokens WHERE grant_id IN \
         (SELECT id FROM oauth_grants WHERE user_id = $1 AND revoked_at IS NULL)",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    let grants: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, org_id, client_id FROM oauth_grants WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE oauth_grants SET revoked_at = $1, revoked_why = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(why.as_str())
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    let audit = super::Audit {
        actor: actor.to_string(),
        ip: None,
        now,
    };
    for (grant_id, org_id, client_id) in &grants {
        super::audit::record(
            tx,
            org_id,
            &audit,
            "oauth_grant.revoked",
            Some(grant_id),
            serde_json::json!({ "client_id": client_id, "why": why.as_str() }),
        )
        .await?;
    }
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

/// A token session as its owner's session list shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeviceSession {
    /// The session id (the `session_id` claim of its access tokens).
    pub id: String,
    /// How it signed in (`password`, `otp`, `recovery`, …).
    pub amr_method: String,
    /// The user agent that signed in.
    pub user_agent: Option<String>,
    /// The address that signed in.
    pub ip: Option<String>,
    /// Unix ms of the sign-in.
    pub created_at: i64,
    /// Unix ms of the last refresh (the sign-in, until one).
    pub updated_at: i64,
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
        user_agent: Option<&str>,
        ip: Option<&str>,
    ) -> StoreResult<String> {
        let session_id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, amr_method, created_at, updated_at, user_agent, ip) \
             VALUES ($1, $2, $3, $4, $4, $5, $6)",
        )
        .bind(&session_id)
        .bind(user_id)
        .bind(method)
        .bind(now)
        .bind(user_agent)
        .bind(ip)
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

    /// A user's token sessions, the most recently refreshed first (at most `limit`).
    #[tracing::instrument(name = "Store::user_sessions", level = "debug", skip_all)]
    pub async fn user_sessions(
        &self,
        user_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<DeviceSession>> {
        Ok(sqlx::query_as(
            "SELECT id, amr_method, user_agent, ip, created_at, updated_at FROM sessions \
             WHERE user_id = $1 ORDER BY updated_at DESC, id LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(self.db())
        .await?)
    }

    /// Ends one of a user's sessions (its refresh tokens go with it); false when the user
    /// has no session with this id.
    #[tracing::instrument(name = "Store::delete_user_session", level = "debug", skip_all)]
    pub async fn delete_user_session(&self, user_id: &str, session_id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
            .bind(session_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
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
        let actor = format!("user:{user_id}");
        let ended =
            end_sessions_in(&mut tx, user_id, keep, (&actor, EndedBy::Password), now).await?;
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
        aal: &str,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO web_sessions (id_hash, user_id, created_at, expires_at, aal) VALUES ($1, $2, $3, $4, $5)")
            .bind(id_hash)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .bind(aal)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// The user of a live dashboard session, with its expiry and whether it is aal2.
    #[tracing::instrument(name = "Store::web_session", level = "debug", skip_all)]
    pub async fn web_session(
        &self,
        id_hash: &str,
        now: i64,
    ) -> StoreResult<Option<(String, i64, bool)>> {
        let row: Option<(String, i64, String)> = sqlx::query_as(
            "SELECT user_id, expires_at, aal FROM web_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(self.db())
        .await?;
        Ok(row.map(|(u, exp, aal)| (u, exp, aal == "aal2")))
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
