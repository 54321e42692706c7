//! External identities (a person's account at an OpenID Connect or OAuth 2 provider, linked
//! to one user) and the sign-in flows waiting for a provider's callback. Each change that
//! links, unlinks or signs in writes its entry in the deployment-wide log (`admin_audit_log`)
//! in the same transaction.

use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::admin::{record, AdminAction, AdminAudit};
use super::users::{user_from_row, USER_COLUMNS};
use super::{Store, StoreError, StoreResult, User};

/// One external identity.
#[derive(Clone, Debug)]
pub struct Identity {
    /// UUID.
    pub id: String,
    /// The provider's configured name.
    pub provider: String,
    /// The provider's stable id of the person (`sub`).
    pub provider_id: String,
    /// The user it is linked to.
    pub user_id: String,
    /// What the provider said of the person at the last sign-in.
    pub identity_data: Value,
    /// The address the provider gave.
    pub email: Option<String>,
    /// The last sign-in through it (unix ms).
    pub last_sign_in_at: Option<i64>,
    /// Creation (unix ms).
    pub created_at: i64,
    /// Last update (unix ms).
    pub updated_at: i64,
}

const IDENTITY_COLUMNS: &str = "id, provider, provider_id, user_id, identity_data, email, \
     last_sign_in_at, created_at, updated_at";

fn identity_from_row(row: &AnyRow) -> StoreResult<Identity> {
    let data: String = row.try_get("identity_data")?;
    Ok(Identity {
        id: row.try_get("id")?,
        provider: row.try_get("provider")?,
        provider_id: row.try_get("provider_id")?,
        user_id: row.try_get("user_id")?,
        identity_data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Other(format!("identity_data: {e}")))?,
        email: row.try_get("email")?,
        last_sign_in_at: row.try_get("last_sign_in_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A sign-in waiting for the provider's callback.
#[derive(Clone, Debug)]
pub struct ExternalFlow {
    /// The provider's name.
    pub provider: String,
    /// Where the browser lands afterwards (already checked against the allow-list).
    pub redirect_to: String,
    /// The nonce and the provider PKCE verifier, sealed under a key derived from the state.
    pub secrets_sealed: String,
    /// The client's PKCE challenge (stored form), for a PKCE flow.
    pub code_challenge: Option<String>,
    /// linkIdentity: the user to link to.
    pub link_user_id: Option<String>,
    /// Unix ms after which the callback is refused.
    pub expires_at: i64,
}

/// How an unlink ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Unlinked {
    /// Unlinked (the identity, for the caller's answer).
    Done,
    /// The user has no such external identity.
    NotFound,
    /// It is the user's only identity.
    LastIdentity,
}

/// What a sign-in through an external provider changes.
pub struct ExternalSignIn<'a> {
    /// The provider's name.
    pub provider: &'a str,
    /// The person's id there.
    pub provider_id: &'a str,
    /// What the provider said.
    pub identity_data: &'a Value,
    /// The address it gave.
    pub email: Option<&'a str>,
    /// Who and when (actor `user:{id}` once known).
    pub ip: Option<String>,
    /// Unix ms.
    pub now: i64,
}

fn audit_for(user_id: &str, s: &ExternalSignIn<'_>) -> AdminAudit {
    AdminAudit {
        actor: format!("user:{user_id}"),
        ip: s.ip.clone(),
        now: s.now,
    }
}

/// `app_metadata.providers` after a change: `email` first when the user had it, then each
/// provider of the user's identities once.
async fn refresh_providers(
    conn: &mut super::exec::Conn,
    user_id: &str,
    now: i64,
) -> StoreResult<()> {
    let row = sqlx::query("SELECT app_metadata FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    let raw: String = row.try_get("app_metadata")?;
    let mut meta: Value = serde_json::from_str(&raw).unwrap_or_else(|_| json!({}));
    let had_email = has_email_identity(&meta);
    let rows = sqlx::query(
        "SELECT provider FROM identities WHERE user_id = $1 ORDER BY created_at, provider",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut providers: Vec<String> = Vec::new();
    if had_email {
        providers.push("email".into());
    }
    for r in &rows {
        let p: String = r.try_get("provider")?;
        if !providers.contains(&p) {
            providers.push(p);
        }
    }
    if let Value::Object(m) = &mut meta {
        if !m.contains_key("provider") {
            if let Some(first) = providers.first() {
                m.insert("provider".into(), json!(first));
            }
        }
        m.insert("providers".into(), json!(providers));
    }
    sqlx::query("UPDATE users SET app_metadata = $1, updated_at = $2 WHERE id = $3")
        .bind(meta.to_string())
        .bind(now)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Whether a user's `app_metadata` says they have the `email` identity (a password or an
/// emailed-link account): `providers` lists it, or there is no `providers` list (accounts
/// made before identities).
pub fn has_email_identity(app_metadata: &Value) -> bool {
    match app_metadata.get("providers").and_then(Value::as_array) {
        Some(list) => list.iter().any(|p| p.as_str() == Some("email")),
        None => true,
    }
}

async fn insert_identity(
    conn: &mut super::exec::Conn,
    user_id: &str,
    s: &ExternalSignIn<'_>,
) -> StoreResult<String> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO identities (id, provider, provider_id, user_id, identity_data, email, \
         last_sign_in_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7)",
    )
    .bind(&id)
    .bind(s.provider)
    .bind(s.provider_id)
    .bind(user_id)
    .bind(s.identity_data.to_string())
    .bind(s.email)
    .bind(s.now)
    .execute(&mut *conn)
    .await
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict("the identity is linked already".into()),
        other => other,
    })?;
    Ok(id)
}

impl Store {
    /// The identity of `provider_id` at `provider`, if linked.
    #[tracing::instrument(name = "Store::identity", level = "debug", skip_all)]
    pub async fn identity(
        &self,
        provider: &str,
        provider_id: &str,
    ) -> StoreResult<Option<Identity>> {
        let row = sqlx::query(&format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE provider = $1 AND provider_id = $2"
        ))
        .bind(provider)
        .bind(provider_id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(identity_from_row).transpose()
    }

    /// A user's external identities, oldest first.
    #[tracing::instrument(name = "Store::identities_of", level = "debug", skip_all)]
    pub async fn identities_of(&self, user_id: &str) -> StoreResult<Vec<Identity>> {
        let rows = sqlx::query(&format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(user_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(identity_from_row).collect()
    }

    /// A sign-in through a linked identity: its data and times are updated.
    #[tracing::instrument(name = "Store::external_sign_in", level = "debug", skip_all)]
    pub async fn external_sign_in(
        &self,
        identity_id: &str,
        user_id: &str,
        s: &ExternalSignIn<'_>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE identities SET identity_data = $1, email = $2, last_sign_in_at = $3, \
             updated_at = $3 WHERE id = $4",
        )
        .bind(s.identity_data.to_string())
        .bind(s.email)
        .bind(s.now)
        .bind(identity_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE id = $2")
            .bind(s.now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        record(
            &mut tx,
            &audit_for(user_id, s),
            AdminAction::ExternalSignIn,
            Some(user_id),
            json!({"provider": s.provider, "identity_id": identity_id}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A new user from a provider's verified address, with its identity; `Conflict` when the
    /// address or the identity was taken meanwhile.
    #[tracing::instrument(name = "Store::create_external_user", level = "debug", skip_all)]
    pub async fn create_external_user(
        &self,
        email: &str,
        user_metadata: &Value,
        s: &ExternalSignIn<'_>,
    ) -> StoreResult<User> {
        let id = uuid::Uuid::new_v4().to_string();
        let app_metadata = json!({"provider": s.provider, "providers": [s.provider]});
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, email_confirmed_at, last_sign_in_at, \
             user_metadata, app_metadata, created_at, updated_at) \
             VALUES ($1, $2, NULL, $3, $3, $4, $5, $3, $3)",
        )
        .bind(&id)
        .bind(email)
        .bind(s.now)
        .bind(user_metadata.to_string())
        .bind(app_metadata.to_string())
        .execute(&mut *tx)
        .await?;
        let identity_id = insert_identity(&mut tx, &id, s).await?;
        record(
            &mut tx,
            &audit_for(&id, s),
            AdminAction::ExternalSignUp,
            Some(&id),
            json!({"provider": s.provider, "identity_id": identity_id, "email": email}),
        )
        .await?;
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&row)?;
        tx.commit().await?;
        Ok(user)
    }

    /// Links an identity to an existing user; `Conflict` when it is linked already. With
    /// `proven_email` (the provider verified the user's own address), an unconfirmed user is
    /// confirmed and loses the password nobody proved the address for: whoever signed up with
    /// somebody else's address never signs in with that password.
    #[tracing::instrument(name = "Store::link_identity", level = "debug", skip_all)]
    pub async fn link_identity(
        &self,
        user_id: &str,
        proven_email: bool,
        s: &ExternalSignIn<'_>,
    ) -> StoreResult<User> {
        let mut tx = self.begin_write().await?;
        let identity_id = insert_identity(&mut tx, user_id, s).await?;
        if proven_email {
            sqlx::query(
                "UPDATE users SET password_hash = CASE WHEN email_confirmed_at IS NULL THEN NULL \
                 ELSE password_hash END, email_confirmed_at = COALESCE(email_confirmed_at, $1) \
                 WHERE id = $2",
            )
            .bind(s.now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE id = $2")
            .bind(s.now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        refresh_providers(&mut tx, user_id, s.now).await?;
        record(
            &mut tx,
            &audit_for(user_id, s),
            AdminAction::IdentityLinked,
            Some(user_id),
            json!({"provider": s.provider, "identity_id": identity_id, "provider_id": s.provider_id}),
        )
        .await?;
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&row)?;
        tx.commit().await?;
        Ok(user)
    }

    /// Unlinks one of a user's external identities, unless it is the user's last identity
    /// (the `email` identity counts when `app_metadata` lists it).
    #[tracing::instrument(name = "Store::unlink_identity", level = "debug", skip_all)]
    pub async fn unlink_identity(
        &self,
        user_id: &str,
        identity_id: &str,
        audit: &AdminAudit,
    ) -> StoreResult<Unlinked> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        let identities = rows
            .iter()
            .map(identity_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let row = sqlx::query("SELECT app_metadata FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        let raw: String = row.try_get("app_metadata")?;
        let meta: Value = serde_json::from_str(&raw).unwrap_or_else(|_| json!({}));
        if identities.len() + usize::from(has_email_identity(&meta)) <= 1 {
            return Ok(Unlinked::LastIdentity);
        }
        let Some(target) = identities.iter().find(|i| i.id == identity_id) else {
            return Ok(Unlinked::NotFound);
        };
        sqlx::query("DELETE FROM identities WHERE id = $1")
            .bind(identity_id)
            .execute(&mut *tx)
            .await?;
        refresh_providers(&mut tx, user_id, audit.now).await?;
        record(
            &mut tx,
            audit,
            AdminAction::IdentityUnlinked,
            Some(user_id),
            json!({"provider": target.provider, "identity_id": target.id, "provider_id": target.provider_id}),
        )
        .await?;
        tx.commit().await?;
        Ok(Unlinked::Done)
    }

    /// Stores a flow waiting for its callback (found by the SHA-256 of its state) and drops
    /// the expired ones.
    #[tracing::instrument(name = "Store::add_external_flow", level = "debug", skip_all)]
    pub async fn add_external_flow(
        &self,
        state_hash: &str,
        flow: &ExternalFlow,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM external_flows WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO external_flows (state_hash, provider, redirect_to, secrets_sealed, \
             code_challenge, link_user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(state_hash)
        .bind(&flow.provider)
        .bind(&flow.redirect_to)
        .bind(&flow.secrets_sealed)
        .bind(flow.code_challenge.as_deref())
        .bind(flow.link_user_id.as_deref())
        .bind(now)
        .bind(flow.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a flow out of storage: only the one callback that deletes it gets it, so a state
    /// is used at most once.
    #[tracing::instrument(name = "Store::take_external_flow", level = "debug", skip_all)]
    pub async fn take_external_flow(&self, state_hash: &str) -> StoreResult<Option<ExternalFlow>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "DELETE FROM external_flows WHERE state_hash = $1 RETURNING provider, redirect_to, \
             secrets_sealed, code_challenge, link_user_id, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ExternalFlow {
            provider: row.try_get("provider")?,
            redirect_to: row.try_get("redirect_to")?,
            secrets_sealed: row.try_get("secrets_sealed")?,
            code_challenge: row.try_get("code_challenge")?,
            link_user_id: row.try_get("link_user_id")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }
}
