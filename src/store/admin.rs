//! The admin API's storage: users listed by page, created, changed and deleted by an
//! operator's service key, each call with its entry in the deployment-wide admin log
//! (`admin_audit_log`), written in the same transaction as the change.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::mfa::{factor_from_row, FACTOR_COLUMNS};
use super::sessions::{end_sessions_in, EndedBy};
use super::users::{user_from_row, USER_COLUMNS};
use super::{Ended, Factor, Store, StoreError, StoreResult, User};

/// Who made an admin call: the kind of service key, and from where.
#[derive(Clone, Debug)]
pub struct AdminAudit {
    /// `service_key:jwt` (a minted `service_role` token) or `service_key:secret` (the
    /// configured `service_key`).
    pub actor: String,
    /// The client address.
    pub ip: Option<String>,
    /// Unix ms.
    pub now: i64,
}

/// What an admin call did, as the admin log names it (docs/audit-log.md lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAction {
    /// `listUsers`.
    UsersListed,
    /// `getUserById`.
    UserViewed,
    /// `createUser`.
    UserCreated,
    /// `inviteUserByEmail` (or `generateLink` of an invite for a new address).
    UserInvited,
    /// `updateUserById`.
    UserUpdated,
    /// `deleteUser`.
    UserDeleted,
    /// `generateLink`.
    LinkGenerated,
    /// `signOut(jwt)` with the service key.
    UserSignedOut,
    /// The admin log itself was read.
    LogRead,
    /// `mfa.listFactors`.
    FactorsListed,
    /// `mfa.deleteFactor`.
    FactorDeleted,
    /// A person signed up through an external provider (actor `user:{id}`).
    ExternalSignUp,
    /// A person signed in through an external provider (actor `user:{id}`).
    ExternalSignIn,
    /// An external identity was linked to a user (actor `user:{id}`).
    IdentityLinked,
    /// An external identity was unlinked from its user (actor `user:{id}`).
    IdentityUnlinked,
}

impl AdminAction {
    /// The `action` string.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::UsersListed => "users.listed",
            AdminAction::UserViewed => "user.viewed",
            AdminAction::UserCreated => "user.created",
            AdminAction::UserInvited => "user.invited",
            AdminAction::UserUpdated => "user.updated",
            AdminAction::UserDeleted => "user.deleted",
            AdminAction::LinkGenerated => "user.link_generated",
            AdminAction::UserSignedOut => "user.signed_out",
            AdminAction::LogRead => "admin_log.read",
            AdminAction::FactorsListed => "user.factors_listed",
            AdminAction::FactorDeleted => "user.factor_deleted",
            AdminAction::ExternalSignUp => "user.signed_up_external",
            AdminAction::ExternalSignIn => "user.signed_in_external",
            AdminAction::IdentityLinked => "identity.linked",
            AdminAction::IdentityUnlinked => "identity.unlinked",
        }
    }
}

/// One entry of the admin log, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct AdminAuditEntry {
    /// Entry id (a UUID).
    pub id: String,
    /// Position in the log.
    pub seq: i64,
    /// `user.created`, `user.deleted`, …
    pub action: String,
    /// Which key made the call.
    pub actor: String,
    /// The user's id, when the call names one.
    pub target: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// Non-secret details.
    pub details: Value,
    /// Unix ms.
    pub created_at: i64,
}

/// A user as the admin API creates one.
pub struct AdminNewUser {
    /// UUID.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// argon2id hash; `None`: the user has no password (an invitation, a link).
    pub password_hash: Option<String>,
    /// Confirmed at creation (`email_confirm`).
    pub confirmed: bool,
    /// `user_metadata`.
    pub user_metadata: Value,
    /// `app_metadata`, with the provider keys.
    pub app_metadata: Value,
    /// A ban from the start, if asked for.
    pub banned_until: Option<i64>,
}

/// What an admin update changes; `None` leaves a field as it is.
#[derive(Default)]
pub struct UserPatch {
    /// A new normalised address (applied at once, confirmed or not as `confirm` says).
    pub email: Option<String>,
    /// Confirm the address now.
    pub confirm: bool,
    /// A new argon2id hash; every session of the user ends.
    pub password_hash: Option<String>,
    /// The whole new `user_metadata` (merged by the caller).
    pub user_metadata: Option<Value>,
    /// The whole new `app_metadata` (merged by the caller).
    pub app_metadata: Option<Value>,
    /// `Some(Some(t))`: banned until `t`, and every session ends; `Some(None)`: unbanned.
    pub banned_until: Option<Option<i64>>,
}

pub(super) async fn record(
    conn: &mut super::exec::Conn,
    audit: &AdminAudit,
    action: AdminAction,
    target: Option<&str>,
    details: Value,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO admin_audit_log (id, actor, action, target, ip, details, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&audit.actor)
    .bind(action.as_str())
    .bind(target)
    .bind(audit.ip.as_deref())
    .bind(details.to_string())
    .bind(audit.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// What an admin deletion of a user did.
pub enum UserDeletion {
    /// Deleted; the sessions that ended.
    Deleted(Ended),
    /// Nothing was deleted: the user is the only owner of this organization.
    SoleOwner {
        /// The organization's id.
        org_id: String,
        /// Its name.
        org_name: String,
    },
}

impl Store {
    /// How many users there are.
    #[tracing::instrument(name = "Store::count_users", level = "debug", skip_all)]
    pub async fn count_users(&self) -> StoreResult<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(self.db())
            .await?;
        Ok(n)
    }

    /// A page of users, newest first (GoTrue's order for `listUsers`).
    #[tracing::instrument(name = "Store::users_newest_first", level = "debug", skip_all)]
    pub async fn users_newest_first(&self, offset: i64, limit: i64) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Records an admin call that changes nothing here (a listing, a lookup, a link).
    #[tracing::instrument(name = "Store::record_admin_call", level = "debug", skip_all)]
    pub async fn record_admin_call(
        &self,
        audit: &AdminAudit,
        action: AdminAction,
        target: Option<&str>,
        details: Value,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        record(&mut tx, audit, action, target, details).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a user for the admin API; `Conflict` when the address is taken.
    #[tracing::instrument(name = "Store::admin_create_user", level = "debug", skip_all)]
    pub async fn admin_create_user(
        &self,
        u: &AdminNewUser,
        audit: &AdminAudit,
        action: AdminAction,
    ) -> StoreResult<User> {
        let mut tx = self.begin_write().await?;
        let confirmed_at = u.confirmed.then_some(audit.now);
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, email_confirmed_at, user_metadata, \
             app_metadata, created_at, updated_at, banned_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(u.password_hash.as_deref())
        .bind(confirmed_at)
        .bind(u.user_metadata.to_string())
        .bind(u.app_metadata.to_string())
        .bind(audit.now)
        .bind(u.banned_until)
        .execute(&mut *tx)
        .await?;
        record(
            &mut tx,
            audit,
            action,
            Some(&u.id),
            serde_json::json!({ "email": u.email, "email_confirmed": u.confirmed }),
        )
        .await?;
        tx.commit().await?;
        self.user_by_id(&u.id).await?.ok_or(StoreError::NotFound)
    }

    /// Applies an admin update; `NotFound` for an unknown user, `Conflict` when the new
    /// address is another user's. A new password or a ban ends every session of the user
    /// (returned, for the caches).
    #[tracing::instrument(name = "Store::admin_update_user", level = "debug", skip_all)]
    pub async fn admin_update_user(
        &self,
        id: &str,
        patch: &UserPatch,
        audit: &AdminAudit,
    ) -> StoreResult<(User, Ended)> {
        let mut tx = self.begin_write().await?;
        let now = audit.now;
        let touched = sqlx::query("UPDATE users SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if touched.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::NotFound);
        }
        let mut changed = Vec::new();
        if let Some(email) = &patch.email {
            sqlx::query(
                "UPDATE users SET email = $1, email_change = NULL, email_change_confirmed = 0 \
                 WHERE id = $2",
            )
            .bind(email)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            // Links sent to the old address must not act on the new one.
            sqlx::query("DELETE FROM one_time_tokens WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            changed.push("email");
        }
        if patch.confirm {
            sqlx::query(
                "UPDATE users SET email_confirmed_at = $1 WHERE id = $2 AND email_confirmed_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            // An anonymous user given a confirmed address is a permanent one (GoTrue's rule).
            sqlx::query("UPDATE users SET is_anonymous = 0 WHERE id = $1 AND email IS NOT NULL")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            changed.push("email_confirm");
        }
        if let Some(hash) = &patch.password_hash {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            changed.push("password");
        }
        if let Some(m) = &patch.user_metadata {
            sqlx::query("UPDATE users SET user_metadata = $1 WHERE id = $2")
                .bind(m.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            changed.push("user_metadata");
        }
        if let Some(m) = &patch.app_metadata {
            sqlx::query("UPDATE users SET app_metadata = $1 WHERE id = $2")
                .bind(m.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            changed.push("app_metadata");
        }
        if let Some(until) = patch.banned_until {
            sqlx::query("UPDATE users SET banned_until = $1 WHERE id = $2")
                .bind(until)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            changed.push("ban");
        }
        let banned = matches!(patch.banned_until, Some(Some(_)));
        let ended = if patch.password_hash.is_some() || banned {
            let why = if banned {
                EndedBy::Ban
            } else {
                EndedBy::Password
            };
            end_sessions_in(&mut tx, id, None, (&audit.actor, why), audit.now).await?
        } else {
            Ended::default()
        };
        let mut details = serde_json::json!({ "changed": changed });
        if let Some(Some(until)) = patch.banned_until {
            details["banned_until"] = serde_json::json!(until);
        }
        record(&mut tx, audit, AdminAction::UserUpdated, Some(id), details).await?;
        tx.commit().await?;
        let user = self.user_by_id(id).await?.ok_or(StoreError::NotFound)?;
        Ok((user, ended))
    }

    /// Deletes a user with everything that hangs off it (sessions, tokens, memberships);
    /// `NotFound` for an unknown user. Returns the sessions that ended, for the caches, or,
    /// deleting nothing, an organization the user is the only owner of (deleting them would
    /// leave it without one).
    #[tracing::instrument(name = "Store::admin_delete_user", level = "debug", skip_all)]
    pub async fn admin_delete_user(
        &self,
        id: &str,
        audit: &AdminAudit,
    ) -> StoreResult<UserDeletion> {
        let mut tx = self.begin_write().await?;
        let email: Option<(Option<String>,)> =
            sqlx::query_as("SELECT email FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((email,)) = email else {
            tx.rollback().await?;
            return Err(StoreError::NotFound);
        };
        // In the write transaction, so no owner can leave between the check and the delete.
        let sole: Option<(String, String)> = sqlx::query_as(
            "SELECT o.id, o.name FROM memberships m JOIN organizations o ON o.id = m.org_id \
             WHERE m.user_id = $1 AND m.role = 'owner' AND NOT EXISTS (SELECT 1 FROM memberships x \
             WHERE x.org_id = m.org_id AND x.role = 'owner' AND x.user_id <> $1) \
             ORDER BY o.created_at, o.id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((org_id, org_name)) = sole {
            tx.rollback().await?;
            return Ok(UserDeletion::SoleOwner { org_id, org_name });
        }
        let ended = end_sessions_in(
            &mut tx,
            id,
            None,
            (&audit.actor, EndedBy::Deletion),
            audit.now,
        )
        .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        record(
            &mut tx,
            audit,
            AdminAction::UserDeleted,
            Some(id),
            serde_json::json!({ "email": email }),
        )
        .await?;
        tx.commit().await?;
        Ok(UserDeletion::Deleted(ended))
    }

    /// `mfa.deleteFactor`: removes one of a user's factors, returns the sessions it made aal2
    /// to aal1 (as the user's own unenrolment does), and logs the call, in one transaction.
    /// `Ok(None)`: the user has no such factor.
    #[tracing::instrument(name = "Store::admin_delete_mfa_factor", level = "debug", skip_all)]
    pub async fn admin_delete_mfa_factor(
        &self,
        user_id: &str,
        factor_id: &str,
        audit: &AdminAudit,
    ) -> StoreResult<Option<Factor>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM mfa_factors WHERE id = $1 AND user_id = $2"
        ))
        .bind(factor_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(factor) = row.as_ref().map(factor_from_row).transpose()? else {
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query("DELETE FROM mfa_factors WHERE id = $1 AND user_id = $2")
            .bind(factor_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE sessions SET mfa_verified_at = NULL, mfa_factor_id = NULL, mfa_method = NULL \
             WHERE mfa_factor_id = $1",
        )
        .bind(factor_id)
        .execute(&mut *tx)
        .await?;
        record(
            &mut tx,
            audit,
            AdminAction::FactorDeleted,
            Some(user_id),
            serde_json::json!({
                "factor_id": factor.id,
                "factor_type": factor.factor_type,
                "status": factor.status,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(factor))
    }

    /// How many entries the admin log holds.
    #[tracing::instrument(name = "Store::count_admin_audit", level = "debug", skip_all)]
    pub async fn count_admin_audit(&self) -> StoreResult<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM admin_audit_log")
            .fetch_one(self.db())
            .await?;
        Ok(n)
    }

    /// The newest entries of the admin log, older than position `before` if given, skipping
    /// the first `offset`.
    #[tracing::instrument(name = "Store::admin_audit_log", level = "debug", skip_all)]
    pub async fn admin_audit_log(
        &self,
        before: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<AdminAuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, seq, action, actor, target, ip, details, created_at FROM admin_audit_log \
             WHERE seq < $1 ORDER BY seq DESC LIMIT $2 OFFSET $3",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get("details")?;
                Ok(AdminAuditEntry {
                    id: r.try_get("id")?,
                    seq: r.try_get("seq")?,
                    action: r.try_get("action")?,
                    actor: r.try_get("actor")?,
                    target: r.try_get("target")?,
                    ip: r.try_get("ip")?,
                    details: serde_json::from_str(&details).unwrap_or(Value::Null),
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}
