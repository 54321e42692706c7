//! One-time tokens for the email flows, stored hashed, and the changes verifying one makes.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError, StoreResult, User};

/// A live one-time token (hashes only).
#[derive(Clone, Debug)]
pub struct OtpRow {
    /// Row id (also salts the code hash).
    pub id: String,
    /// Whose it is.
    pub user_id: String,
    /// `signup`, `magiclink`, `recovery` or `email_change`.
    pub kind: String,
    /// The address the mail went to.
    pub email: String,
    /// SHA-256 of the link token.
    pub token_hash: String,
    /// SHA-256 of `{id}:{code}`.
    pub code_hash: String,
    /// Unix ms after which it is refused.
    pub expires_at: i64,
}

/// A mail to queue with its token.
pub struct NewMail {
    /// Recipient address.
    pub recipient: String,
    /// Subject.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// HTML.
    pub html: String,
}

fn otp_from_row(r: &AnyRow) -> StoreResult<OtpRow> {
    Ok(OtpRow {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        kind: r.try_get("kind")?,
        email: r.try_get("email")?,
        token_hash: r.try_get("token_hash")?,
        code_hash: r.try_get("code_hash")?,
        expires_at: r.try_get("expires_at")?,
    })
}

const OTP_COLUMNS: &str = "id, user_id, kind, email, token_hash, code_hash, expires_at";

impl Store {
    /// Replaces the user's token of this kind and queues its mail, in one transaction.
    pub async fn issue_otp(&self, otp: &OtpRow, mail: &NewMail, now: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM one_time_tokens WHERE user_id = $1 AND kind = $2")
            .bind(&otp.user_id)
            .bind(&otp.kind)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO one_time_tokens (id, user_id, kind, email, token_hash, code_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&otp.id)
        .bind(&otp.user_id)
        .bind(&otp.kind)
        .bind(&otp.email)
        .bind(&otp.token_hash)
        .bind(&otp.code_hash)
        .bind(now)
        .bind(otp.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO mail_outbox (id, recipient, subject, text_body, html_body, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&mail.recipient)
        .bind(&mail.subject)
        .bind(&mail.text)
        .bind(&mail.html)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if otp.kind == "signup" {
            sqlx::query("UPDATE users SET confirmation_sent_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&otp.user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The token whose link hash is `token_hash`.
    pub async fn otp_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<OtpRow>> {
        let row = sqlx::query(&format!(
            "SELECT {OTP_COLUMNS} FROM one_time_tokens WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(otp_from_row).transpose()
    }

    /// The live tokens sent to `email`.
    pub async fn otps_for_email(&self, email: &str, now: i64) -> StoreResult<Vec<OtpRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OTP_COLUMNS} FROM one_time_tokens WHERE email = $1 AND expires_at > $2"
        ))
        .bind(email)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(otp_from_row).collect()
    }

    /// Uses a token up: true for the one caller that deleted it.
    pub async fn consume_otp(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM one_time_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Spends one of a token's `max` code attempts: false when none is left. Taken before the
    /// code is compared, so guesses sent in parallel cannot try more than `max` codes.
    pub async fn take_code_attempt(&self, id: &str, max: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE one_time_tokens SET attempts = attempts + 1 WHERE id = $1 AND attempts < $2",
        )
        .bind(id)
        .bind(max)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes those of these tokens that have no code attempt left.
    pub async fn drop_spent_otps(&self, ids: &[String], max: i64) -> StoreResult<()> {
        for id in ids {
            sqlx::query("DELETE FROM one_time_tokens WHERE id = $1 AND attempts >= $2")
                .bind(id)
                .bind(max)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Confirms the user's email (a no-op when it already is). With `forget_password`, a
    /// password set while the address was unconfirmed is dropped: whoever chose it never
    /// proved they own the address.
    pub async fn confirm_email(
        &self,
        user_id: &str,
        now: i64,
        forget_password: bool,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE users SET \
               password_hash = CASE WHEN $3 AND email_confirmed_at IS NULL THEN NULL ELSE password_hash END, \
               email_confirmed_at = COALESCE(email_confirmed_at, $1), updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(user_id)
        .bind(forget_password)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves the user to a verified new address; `Conflict` when another user has it.
    pub async fn change_email(&self, user_id: &str, email: &str, now: i64) -> StoreResult<()> {
        let r = sqlx::query(
            "UPDATE users SET email = $1, email_confirmed_at = $2, updated_at = $2 WHERE id = $3",
        )
        .bind(email)
        .bind(now)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Creates an unconfirmed user without a password (a magic-link sign-up); an existing
    /// user with this address is returned instead.
    pub async fn create_passwordless_user(
        &self,
        email: &str,
        user_metadata: &serde_json::Value,
        now: i64,
    ) -> StoreResult<User> {
        let id = uuid::Uuid::new_v4().to_string();
        let app_metadata = serde_json::json!({"provider": "email", "providers": ["email"]});
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, user_metadata, app_metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&id)
        .bind(email)
        .bind(user_metadata.to_string())
        .bind(app_metadata.to_string())
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted.map_err(StoreError::from) {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.user_by_email(email).await?.ok_or(StoreError::NotFound)
    }
}
