//! Users brought in from another auth server (`gatehouse import supabase`), with their ids,
//! timestamps, metadata and password hashes as they were.

use serde_json::Value;

use super::{Store, StoreError, StoreResult};

/// A user as another server had them.
pub struct ImportedUser {
    /// UUID, kept as it was (tokens and the application's own tables refer to it).
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// bcrypt or argon2 hash, as it was; none for users without a password.
    pub password_hash: Option<String>,
    /// Unix ms.
    pub email_confirmed_at: Option<i64>,
    /// Unix ms.
    pub last_sign_in_at: Option<i64>,
    /// User-editable metadata.
    pub user_metadata: Value,
    /// Provider metadata.
    pub app_metadata: Value,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// What became of one imported user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Created (or, in a dry run, would be).
    Created,
    /// A user with this id is already here (an earlier run): left as it is.
    AlreadyThere,
    /// Another user here has this email: left out.
    EmailTaken,
}

impl Store {
    /// Creates `u` unless its id or its email is already here; a dry run only looks.
    pub async fn import_user(&self, u: &ImportedUser, dry_run: bool) -> StoreResult<ImportOutcome> {
        if let Some(outcome) = self.import_clash(u).await? {
            return Ok(outcome);
        }
        if dry_run {
            return Ok(ImportOutcome::Created);
        }
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, email_confirmed_at, last_sign_in_at, \
             user_metadata, app_metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(u.email_confirmed_at)
        .bind(u.last_sign_in_at)
        .bind(u.user_metadata.to_string())
        .bind(u.app_metadata.to_string())
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(self.db())
        .await;
        match inserted.map_err(StoreError::from) {
            Ok(_) => Ok(ImportOutcome::Created),
            // Someone else created it meanwhile: say which clash it was.
            Err(StoreError::Conflict(_)) => Ok(self
                .import_clash(u)
                .await?
                .unwrap_or(ImportOutcome::EmailTaken)),
            Err(e) => Err(e),
        }
    }

    async fn import_clash(&self, u: &ImportedUser) -> StoreResult<Option<ImportOutcome>> {
        if self.user_by_id(&u.id).await?.is_some() {
            return Ok(Some(ImportOutcome::AlreadyThere));
        }
        if self.user_by_email(&u.email).await?.is_some() {
            return Ok(Some(ImportOutcome::EmailTaken));
        }
        Ok(None)
    }
}
