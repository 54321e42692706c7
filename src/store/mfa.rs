//! Multi-factor authentication: factors, their challenges, and a session's second factor.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Ended, Store, StoreError, StoreResult};

/// An enrolled factor. The TOTP secret is only ever here sealed.
#[derive(Clone)]
pub struct Factor {
    /// UUID.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// `totp` (WebAuthn later).
    pub factor_type: String,
    /// The name the user gave it (unique per user).
    pub friendly_name: Option<String>,
    /// `unverified` until a code was verified once, then `verified`.
    pub status: String,
    /// The TOTP secret, sealed (`auth::sealed`), bound to the factor id.
    pub secret_sealed: Option<String>,
    /// The last TOTP step accepted (replay guard).
    pub last_step: Option<i64>,
    /// The last challenge (unix ms).
    pub last_challenged_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl std::fmt::Debug for Factor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factor")
            .field("id", &self.id)
            .field("factor_type", &self.factor_type)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A challenge opened on a factor.
#[derive(Clone, Debug)]
pub struct Challenge {
    /// UUID.
    pub id: String,
    /// Its factor.
    pub factor_id: String,
    /// The address that opened it.
    pub ip: String,
    /// Wrong codes given against it so far.
    pub failed_attempts: i64,
    /// Unix ms.
    pub created_at: i64,
    /// When a code was accepted against it.
    pub verified_at: Option<i64>,
}

/// What a verification changed, or why it changed nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// The session is now aal2; these other token sessions of the user (still aal1) were
    /// ended (dashboard sessions are not: the dashboard enrols with its cookie).
    Done(Ended),
    /// The step was already used for this factor (or a later one was).
    Replayed,
    /// The challenge was used meanwhile.
    ChallengeUsed,
}

/// How a session was authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assurance {
    /// The sign-in method (`password`, `otp`, …).
    pub method: String,
    /// When the session began (unix ms).
    pub started_at: i64,
    /// The second factor's method and when it was verified (unix ms): the session is aal2.
    pub second: Option<(String, i64)>,
}

pub(super) const FACTOR_COLUMNS: &str =
    "id, user_id, factor_type, friendly_name, status, secret_sealed, \
     last_step, last_challenged_at, created_at, updated_at";

pub(super) fn factor_from_row(r: &AnyRow) -> StoreResult<Factor> {
    Ok(Factor {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        factor_type: r.try_get("factor_type")?,
        friendly_name: r.try_get("friendly_name")?,
        status: r.try_get("status")?,
        secret_sealed: r.try_get("secret_sealed")?,
        last_step: r.try_get("last_step")?,
        last_challenged_at: r.try_get("last_challenged_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// A user's factors, oldest first.
    #[tracing::instrument(name = "Store::mfa_factors", level = "debug", skip_all)]
    pub async fn mfa_factors(&self, user_id: &str) -> StoreResult<Vec<Factor>> {
        let rows = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM mfa_factors WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(user_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(factor_from_row).collect()
    }

    /// One of a user's factors.
    #[tracing::instrument(name = "Store::mfa_factor", level = "debug", skip_all)]
    pub async fn mfa_factor(&self, user_id: &str, factor_id: &str) -> StoreResult<Option<Factor>> {
        let row = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM mfa_factors WHERE id = $1 AND user_id = $2"
        ))
        .bind(factor_id)
        .bind(user_id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    /// Stores a new (unverified) factor; a name the user already gave another factor is a
    /// `Conflict`.
    #[tracing::instrument(name = "Store::create_mfa_factor", level = "debug", skip_all)]
    pub async fn create_mfa_factor(&self, f: &Factor) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO mfa_factors (id, user_id, factor_type, friendly_name, status, secret_sealed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&f.id)
        .bind(&f.user_id)
        .bind(&f.factor_type)
        .bind(f.friendly_name.as_deref())
        .bind(&f.status)
        .bind(f.secret_sealed.as_deref())
        .bind(f.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Opens a challenge on a factor.
    #[tracing::instrument(name = "Store::create_mfa_challenge", level = "debug", skip_all)]
    pub async fn create_mfa_challenge(&self, c: &Challenge) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("UPDATE mfa_factors SET last_challenged_at = $1 WHERE id = $2")
            .bind(c.created_at)
            .bind(&c.factor_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO mfa_challenges (id, factor_id, ip, failed_attempts, created_at) VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(&c.id)
        .bind(&c.factor_id)
        .bind(&c.ip)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A challenge of a factor.
    #[tracing::instrument(name = "Store::mfa_challenge", level = "debug", skip_all)]
    pub async fn mfa_challenge(
        &self,
        factor_id: &str,
        challenge_id: &str,
    ) -> StoreResult<Option<Challenge>> {
        let row = sqlx::query(
            "SELECT id, factor_id, ip, failed_attempts, created_at, verified_at FROM mfa_challenges WHERE id = $1 AND factor_id = $2",
        )
        .bind(challenge_id)
        .bind(factor_id)
        .fetch_optional(self.db())
        .await?;
        row.map(|r| {
            Ok(Challenge {
                id: r.try_get("id")?,
                factor_id: r.try_get("factor_id")?,
                ip: r.try_get("ip")?,
                failed_attempts: r.try_get("failed_attempts")?,
                created_at: r.try_get("created_at")?,
                verified_at: r.try_get("verified_at")?,
            })
        })
        .transpose()
    }

    /// Counts a wrong code against a challenge; returns the count now.
    #[tracing::instrument(name = "Store::fail_mfa_challenge", level = "debug", skip_all)]
    pub async fn fail_mfa_challenge(&self, challenge_id: &str) -> StoreResult<i64> {
        let n: Option<i64> = sqlx::query_scalar(
            "UPDATE mfa_challenges SET failed_attempts = failed_attempts + 1 WHERE id = $1 RETURNING failed_attempts",
        )
        .bind(challenge_id)
        .fetch_optional(self.db())
        .await?;
        n.ok_or(StoreError::NotFound)
    }

    /// Deletes a challenge (expired or out of attempts).
    #[tracing::instrument(name = "Store::delete_mfa_challenge", level = "debug", skip_all)]
    pub async fn delete_mfa_challenge(&self, challenge_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM mfa_challenges WHERE id = $1")
            .bind(challenge_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Records an accepted code, in one transaction: the factor's step moves forward only (a
    /// step already used is [`Verified::Replayed`], even from two racing requests), the
    /// challenge is used once, the factor becomes verified, the session becomes aal2 with
    /// `refresh_hash` as its only refresh token, the
    /// user's other unverified factors of the type go, and the user's other aal1 token sessions
    /// end (as GoTrue does once a second factor is proven).
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(name = "Store::verify_mfa", level = "debug", skip_all)]
    pub async fn verify_mfa(
        &self,
        factor: &Factor,
        challenge_id: &str,
        step: i64,
        session_id: &str,
        method: &str,
        refresh_hash: &str,
        now: i64,
    ) -> StoreResult<Verified> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE mfa_factors SET last_step = $1, status = 'verified', updated_at = $2 \
             WHERE id = $3 AND (last_step IS NULL OR last_step < $1)",
        )
        .bind(step)
        .bind(now)
        .bind(&factor.id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Verified::Replayed);
        }
        let used = sqlx::query(
            "UPDATE mfa_challenges SET verified_at = $1 WHERE id = $2 AND verified_at IS NULL",
        )
        .bind(now)
        .bind(challenge_id)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Verified::ChallengeUsed);
        }
        let session = sqlx::query(
            "UPDATE sessions SET mfa_verified_at = $1, mfa_factor_id = $2, mfa_method = $3 WHERE id = $4 AND user_id = $5",
        )
        .bind(now)
        .bind(&factor.id)
        .bind(method)
        .bind(session_id)
        .bind(&factor.user_id)
        .execute(&mut *tx)
        .await?;
        if session.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // The session's refresh tokens were issued at aal1: only the new one goes on.
        sqlx::query("DELETE FROM refresh_tokens WHERE session_id = $1")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (id, token_hash, session_id, user_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(refresh_hash)
        .bind(session_id)
        .bind(&factor.user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM mfa_factors WHERE user_id = $1 AND factor_type = $2 AND status = 'unverified' AND id <> $3",
        )
        .bind(&factor.user_id)
        .bind(&factor.factor_type)
        .bind(&factor.id)
        .execute(&mut *tx)
        .await?;
        let ended: Vec<(String,)> = sqlx::query_as(
            "DELETE FROM sessions WHERE user_id = $1 AND id <> $2 AND mfa_verified_at IS NULL RETURNING id",
        )
        .bind(&factor.user_id)
        .bind(session_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Verified::Done(Ended {
            sessions: ended.into_iter().map(|r| r.0).collect(),
            web_sessions: Vec::new(),
        }))
    }

    /// Deletes a factor (with its challenges); sessions made aal2 by it go back to aal1.
    #[tracing::instrument(name = "Store::delete_mfa_factor", level = "debug", skip_all)]
    pub async fn delete_mfa_factor(&self, user_id: &str, factor_id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("DELETE FROM mfa_factors WHERE id = $1 AND user_id = $2")
            .bind(factor_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE sessions SET mfa_verified_at = NULL, mfa_factor_id = NULL, mfa_method = NULL WHERE mfa_factor_id = $1",
        )
        .bind(factor_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How a session was authenticated: its first method and start (unix ms), and its second
    /// factor's method and verification time, if any; `None` when the session is gone.
    #[tracing::instrument(name = "Store::session_assurance", level = "debug", skip_all)]
    pub async fn session_assurance(&self, session_id: &str) -> StoreResult<Option<Assurance>> {
        let row: Option<(String, i64, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT amr_method, created_at, mfa_method, mfa_verified_at FROM sessions WHERE id = $1",
        )
        .bind(session_id)
        .fetch_optional(self.db())
        .await?;
        Ok(row.map(|(method, started_at, mfa, at)| Assurance {
            method,
            started_at,
            second: mfa.zip(at),
        }))
    }
}
