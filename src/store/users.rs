use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError, StoreResult};

/// A person who can sign in.
#[derive(Clone)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Normalised email; empty for a user who has none (an anonymous sign-in, until an
    /// address is confirmed).
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    /// When the email was confirmed (unix ms).
    pub email_confirmed_at: Option<i64>,
    /// When a confirmation mail was last sent.
    pub confirmation_sent_at: Option<i64>,
    /// Last successful sign-in.
    pub last_sign_in_at: Option<i64>,
    /// User-editable metadata.
    pub user_metadata: Value,
    /// Provider metadata.
    pub app_metadata: Value,
    /// Creation time.
    pub created_at: i64,
    /// Last update.
    pub updated_at: i64,
    /// Banned until then (unix ms; the admin API's `ban_duration`).
    pub banned_until: Option<i64>,
    /// Made by an anonymous sign-in and not yet given a confirmed address.
    pub is_anonymous: bool,
}

impl User {
    /// Whether a ban holds at `now` (unix ms).
    pub fn banned_at(&self, now: i64) -> bool {
        self.banned_until.is_some_and(|until| until > now)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// What sign-up stores.
pub struct NewUser {
    /// UUID.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Confirmed at creation (autoconfirm).
    pub confirmed: bool,
    /// Initial user metadata.
    pub user_metadata: Value,
    /// Unix ms.
    pub now: i64,
}

pub(super) const USER_COLUMNS: &str =
    "id, email, password_hash, email_confirmed_at, confirmation_sent_at, last_sign_in_at, \
     user_metadata, app_metadata, created_at, updated_at, banned_until, is_anonymous";

fn json_col(row: &AnyRow, col: &str) -> StoreResult<Value> {
    let raw: String = row.try_get(col)?;
    serde_json::from_str(&raw).map_err(|e| StoreError::Other(format!("column {col}: {e}")))
}

pub(super) fn user_from_row(row: &AnyRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        // NULL for a user without an address; the rest of the code knows it as "".
        email: row
            .try_get::<Option<String>, _>("email")?
            .unwrap_or_default(),
        password_hash: row.try_get("password_hash")?,
        email_confirmed_at: row.try_get("email_confirmed_at")?,
        confirmation_sent_at: row.try_get("confirmation_sent_at")?,
        last_sign_in_at: row.try_get("last_sign_in_at")?,
        user_metadata: json_col(row, "user_metadata")?,
        app_metadata: json_col(row, "app_metadata")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        banned_until: row.try_get("banned_until")?,
        is_anonymous: row.try_get::<i64, _>("is_anonymous")? != 0,
    })
}

impl Store {
    /// Creates a user; `Conflict` when the email is taken.
    #[tracing::instrument(name = "Store::create_user", level = "debug", skip_all)]
    pub async fn create_user(&self, u: NewUser) -> StoreResult<User> {
        let app_metadata = serde_json::json!({"provider": "email", "providers": ["email"]});
        let confirmed_at = u.confirmed.then_some(u.now);
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, email_confirmed_at, user_metadata, app_metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(confirmed_at)
        .bind(u.user_metadata.to_string())
        .bind(app_metadata.to_string())
        .bind(u.now)
        .execute(self.db())
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict("a user with this email already exists".into()),
            other => other,
        })?;
        self.user_by_id(&u.id).await?.ok_or(StoreError::NotFound)
    }

    /// Creates an anonymous user: no address, no password, the given metadata.
    #[tracing::instrument(name = "Store::create_anonymous_user", level = "debug", skip_all)]
    pub async fn create_anonymous_user(
        &self,
        id: &str,
        user_metadata: &Value,
        now: i64,
    ) -> StoreResult<User> {
        sqlx::query(
            "INSERT INTO users (id, email, user_metadata, app_metadata, is_anonymous, created_at, updated_at) \
             VALUES ($1, NULL, $2, '{}', 1, $3, $3)",
        )
        .bind(id)
        .bind(user_metadata.to_string())
        .bind(now)
        .execute(self.db())
        .await?;
        self.user_by_id(id).await?.ok_or(StoreError::NotFound)
    }

    /// Finds a user by normalised email.
    #[tracing::instrument(name = "Store::user_by_email", level = "debug", skip_all)]
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Finds a user by id.
    #[tracing::instrument(name = "Store::user_by_id", level = "debug", skip_all)]
    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Replaces the user metadata.
    #[tracing::instrument(name = "Store::set_user_metadata", level = "debug", skip_all)]
    pub async fn set_user_metadata(
        &self,
        user_id: &str,
        data: &Value,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE users SET user_metadata = $1, updated_at = $2 WHERE id = $3")
            .bind(data.to_string())
            .bind(now)
            .bind(user_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Up to `limit` users in the order they were created, after the user `after` (the
    /// operator's listing; a cursor that names no user gives an empty page).
    #[tracing::instrument(name = "Store::users_page", level = "debug", skip_all)]
    pub async fn users_page(&self, after: Option<&str>, limit: i64) -> StoreResult<Vec<User>> {
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(self.db())
                .await?
            }
            Some(after) => {
                sqlx::query(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE (created_at, id) > \
                     (SELECT c.created_at, c.id FROM users c WHERE c.id = $1) \
                     ORDER BY created_at, id LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(self.db())
                .await?
            }
        };
        rows.iter().map(user_from_row).collect()
    }

    /// Replaces the password hash `old` by `new` (a hash upgrade at sign-in), unless it changed
    /// meanwhile: a password change that raced the sign-in wins.
    pub async fn replace_password_hash(
        &self,
        user_id: &str,
        old: &str,
        new: &str,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4",
        )
        .bind(new)
        .bind(now)
        .bind(user_id)
        .bind(old)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Records a successful sign-in.
    #[tracing::instrument(name = "Store::touch_sign_in", level = "debug", skip_all)]
    pub async fn touch_sign_in(&self, user_id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user_id)
            .execute(self.db())
            .await?;
        Ok(())
    }
}
