//! One-time tokens for the email flows, stored hashed, and the changes verifying one makes.

use super::sessions::{end_sessions_in, EndedBy};
use super::{Ended, Store, StoreError, StoreResult, User};

/// A live one-time token (hashes only).
#[derive(Clone, Debug, sqlx::FromRow)]
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
    /// A sign-up's argon2 hash of the password given with it, set when its link is followed.
    pub password_hash: Option<String>,
    /// The PKCE challenge of the flow (S256 form): following the link mints an auth code.
    pub code_challenge: Option<String>,
}

/// Live sign-up tokens kept per user; older ones are dropped when another sign-up comes.
const SIGNUP_TOKENS_KEPT: i64 = 5;

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

const OTP_COLUMNS: &str =
    "id, user_id, kind, email, token_hash, code_hash, expires_at, password_hash, code_challenge";

async fn insert_mail(tx: &mut super::exec::Conn, mail: &NewMail, now: i64) -> StoreResult<()> {
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
    Ok(())
}

/// What confirming one side of an email change did.
#[derive(Debug, PartialEq, Eq)]
pub enum EmailChangeStep {
    /// Every required side has confirmed: the account has the new address.
    Applied,
    /// This side is confirmed; the other has yet to be.
    Pending,
}

impl Store {
    /// Queues a mail that carries no token (a notice).
    #[tracing::instrument(name = "Store::queue_mail", level = "debug", skip_all)]
    pub async fn queue_mail(&self, mail: &NewMail, now: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_mail(&mut tx, mail, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts an email change to `new`: it replaces any pending one (its links die with it)
    /// and no side has confirmed it yet.
    #[tracing::instrument(name = "Store::begin_email_change", level = "debug", skip_all)]
    pub async fn begin_email_change(&self, user_id: &str, new: &str, now: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE users SET email_change = $1, email_change_confirmed = 0, updated_at = $2 WHERE id = $3",
        )
        .bind(new)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM one_time_tokens WHERE user_id = $1 AND kind IN ('email_change', 'email_change_current')",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts an email change to `new` unless that very change is already pending (the admin
    /// API makes its two links one after the other).
    #[tracing::instrument(
        name = "Store::begin_email_change_unless_pending",
        level = "debug",
        skip_all
    )]
    pub async fn begin_email_change_unless_pending(
        &self,
        user_id: &str,
        new: &str,
        now: i64,
    ) -> StoreResult<()> {
        let pending: Option<(Option<String>,)> =
            sqlx::query_as("SELECT email_change FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(self.db())
                .await?;
        if matches!(&pending, Some((Some(p),)) if p == new) {
            return Ok(());
        }
        self.begin_email_change(user_id, new, now).await
    }

    /// Records that one side of the pending email change confirmed it (`side`: 1 the new
    /// address, 2 the current one; `to`: the address that side's mail went to, checked for
    /// the new side). Once every side in `required` has, the account moves to the new address
    /// (`Conflict` when another account took it meanwhile). `NotFound` when no change is
    /// pending (or a newer one replaced it).
    #[tracing::instrument(name = "Store::confirm_email_change", level = "debug", skip_all)]
    pub async fn confirm_email_change(
        &self,
        user_id: &str,
        side: i64,
        new_side_address: Option<&str>,
        required: i64,
        now: i64,
    ) -> StoreResult<EmailChangeStep> {
        let mut tx = self.begin_write().await?;
        let row: Option<(i64,)> = match new_side_address {
            Some(addr) => {
                sqlx::query_as(
                    "UPDATE users SET email_change_confirmed = email_change_confirmed | $1 \
                     WHERE id = $2 AND email_change = $3 RETURNING email_change_confirmed",
                )
                .bind(side)
                .bind(user_id)
                .bind(addr)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => {
                sqlx::query_as(
                    "UPDATE users SET email_change_confirmed = email_change_confirmed | $1 \
                     WHERE id = $2 AND email_change IS NOT NULL RETURNING email_change_confirmed",
                )
                .bind(side)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        let Some((confirmed,)) = row else {
            return Err(StoreError::NotFound);
        };
        if confirmed & required != required {
            tx.commit().await?;
            return Ok(EmailChangeStep::Pending);
        }
        let moved = sqlx::query(
            // A confirmed address makes an anonymous account a permanent one, with an email
            // identity (GoTrue's conversion).
            "UPDATE users SET email = email_change, email_confirmed_at = $1, email_change = NULL, \
               email_change_confirmed = 0, updated_at = $1, \
               app_metadata = CASE WHEN is_anonymous = 1 AND app_metadata = '{}' \
                 THEN '{\"provider\":\"email\",\"providers\":[\"email\"]}' ELSE app_metadata END, \
               is_anonymous = 0 WHERE id = $2",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await;
        match moved.map_err(StoreError::from) {
            Ok(_) => {}
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        }
        sqlx::query(
            "DELETE FROM one_time_tokens WHERE user_id = $1 AND kind IN ('email_change', 'email_change_current')",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(EmailChangeStep::Applied)
    }

    /// Replaces the user's token of this kind and queues its mail, in one transaction.
    /// Sign-up tokens are not replaced: each sign-up keeps its own link (and password) until
    /// one of them is followed, up to the newest [`SIGNUP_TOKENS_KEPT`].
    #[tracing::instrument(name = "Store::issue_otp", level = "debug", skip_all)]
    pub async fn issue_otp(
        &self,
        otp: &OtpRow,
        mail: Option<&NewMail>,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        if otp.kind == "signup" {
            sqlx::query(
                "DELETE FROM one_time_tokens WHERE user_id = $1 AND kind = 'signup' AND id NOT IN \
                 (SELECT id FROM one_time_tokens WHERE user_id = $1 AND kind = 'signup' \
                  ORDER BY created_at DESC, id DESC LIMIT $2)",
            )
            .bind(&otp.user_id)
            .bind(SIGNUP_TOKENS_KEPT - 1)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("DELETE FROM one_time_tokens WHERE user_id = $1 AND kind = $2")
                .bind(&otp.user_id)
                .bind(&otp.kind)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO one_time_tokens (id, user_id, kind, email, token_hash, code_hash, created_at, expires_at, password_hash, code_challenge) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&otp.id)
        .bind(&otp.user_id)
        .bind(&otp.kind)
        .bind(&otp.email)
        .bind(&otp.token_hash)
        .bind(&otp.code_hash)
        .bind(now)
        .bind(otp.expires_at)
        .bind(&otp.password_hash)
        .bind(&otp.code_challenge)
        .execute(&mut *tx)
        .await?;
        if let Some(mail) = mail {
            insert_mail(&mut tx, mail, now).await?;
        }
        if otp.kind == "signup" || otp.kind == "invite" {
            // The newest sign-up's password answers `email_not_confirmed` at sign-in until
            // one of the links is followed (an unconfirmed account never signs in).
            sqlx::query(
                "UPDATE users SET confirmation_sent_at = $1, \
                   password_hash = COALESCE($3, password_hash) \
                 WHERE id = $2 AND email_confirmed_at IS NULL",
            )
            .bind(now)
            .bind(&otp.user_id)
            .bind(&otp.password_hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The token whose link hash is `token_hash`.
    #[tracing::instrument(name = "Store::otp_by_token_hash", level = "debug", skip_all)]
    pub async fn otp_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<OtpRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {OTP_COLUMNS} FROM one_time_tokens WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.db())
        .await?)
    }

    /// The user's token of `kind` (one of the kinds that keep one live token per user).
    #[tracing::instrument(name = "Store::otp_for_user", level = "debug", skip_all)]
    pub async fn otp_for_user(&self, user_id: &str, kind: &str) -> StoreResult<Option<OtpRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {OTP_COLUMNS} FROM one_time_tokens WHERE user_id = $1 AND kind = $2"
        ))
        .bind(user_id)
        .bind(kind)
        .fetch_optional(self.db())
        .await?)
    }

    /// The address a pending email change of the user moves to, if one is pending.
    #[tracing::instrument(name = "Store::pending_email_change", level = "debug", skip_all)]
    pub async fn pending_email_change(&self, user_id: &str) -> StoreResult<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT email_change FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(self.db())
                .await?;
        Ok(row.and_then(|r| r.0))
    }

    /// The live tokens sent to `email`.
    #[tracing::instrument(name = "Store::otps_for_email", level = "debug", skip_all)]
    pub async fn otps_for_email(&self, email: &str, now: i64) -> StoreResult<Vec<OtpRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {OTP_COLUMNS} FROM one_time_tokens WHERE email = $1 AND expires_at > $2"
        ))
        .bind(email)
        .bind(now)
        .fetch_all(self.db())
        .await?)
    }

    /// Uses a token up: true for the one caller that deleted it.
    #[tracing::instrument(name = "Store::consume_otp", level = "debug", skip_all)]
    pub async fn consume_otp(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM one_time_tokens WHERE id = $1")
            .bind(id)
            .execute(self.db())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Spends one of a token's `max` code attempts: false when none is left. Taken before the
    /// code is compared, so guesses sent in parallel cannot try more than `max` codes.
    #[tracing::instrument(name = "Store::take_code_attempt", level = "debug", skip_all)]
    pub async fn take_code_attempt(&self, id: &str, max: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE one_time_tokens SET attempts = attempts + 1 WHERE id = $1 AND attempts < $2",
        )
        .bind(id)
        .bind(max)
        .execute(self.db())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes those of these tokens that have no code attempt left.
    #[tracing::instrument(name = "Store::drop_spent_otps", level = "debug", skip_all)]
    pub async fn drop_spent_otps(&self, ids: &[String], max: i64) -> StoreResult<()> {
        for id in ids {
            sqlx::query("DELETE FROM one_time_tokens WHERE id = $1 AND attempts >= $2")
                .bind(id)
                .bind(max)
                .execute(self.db())
                .await?;
        }
        Ok(())
    }

    /// Confirms the user's address through a link or code sent to it (a no-op when it
    /// already is confirmed). `password_hash` is what the confirming link vouches for: the
    /// password given with that sign-up, or `None` for a magic link or a recovery, which
    /// vouch for no password, so one set while the address was unconfirmed is dropped
    /// (whoever chose it never proved they own the address). When this confirms the address,
    /// every pending link of the user and every session that existed before end with it.
    #[tracing::instrument(name = "Store::confirm_email", level = "debug", skip_all)]
    pub async fn confirm_email(
        &self,
        user_id: &str,
        password_hash: Option<&str>,
        now: i64,
    ) -> StoreResult<Ended> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE users SET password_hash = $1, email_confirmed_at = $2, updated_at = $2 \
             WHERE id = $3 AND email_confirmed_at IS NULL",
        )
        .bind(password_hash)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Ended::default());
        }
        sqlx::query("DELETE FROM one_time_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let actor = format!("user:{user_id}");
        let ended =
            end_sessions_in(&mut tx, user_id, None, (&actor, EndedBy::Password), now).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Creates an unconfirmed user without a password (a magic-link sign-up); an existing
    /// user with this address is returned instead.
    #[tracing::instrument(name = "Store::create_passwordless_user", level = "debug", skip_all)]
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
        .execute(self.db())
        .await;
        match inserted.map_err(StoreError::from) {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.user_by_email(email).await?.ok_or(StoreError::NotFound)
    }
}
