use serde::Serialize;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{record, Audit};
use super::webhooks::enqueue;
use super::{Store, StoreError, StoreResult};
use crate::ratelimit::Rates;

/// An organization (tenant).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Org {
    /// `org_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// The organization's own rate limits across all its keys; `null`: the default.
    pub rate_limits: Option<Vec<crate::ratelimit::RateLimitSpec>>,
    /// Whether members must have verified a second factor (`aal2`) to act in it.
    pub require_mfa: bool,
}

/// An organization with its head counts, as the operator's listing shows it.
#[derive(Clone, Debug, Serialize)]
pub struct OrgSummary {
    /// The organization.
    #[serde(flatten)]
    pub org: Org,
    /// Its members.
    pub members: i64,
    /// Its API keys that are not revoked.
    pub keys: i64,
}

/// A member of an organization.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Member {
    /// User id.
    pub user_id: String,
    /// Email.
    pub email: String,
    /// Role name.
    pub role: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A custom role.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Role {
    /// Name.
    pub name: String,
    /// Permissions.
    pub permissions: Vec<String>,
    /// Whether it is one of owner/admin/member.
    pub builtin: bool,
}

fn org_from_row(r: &AnyRow) -> StoreResult<Org> {
    Ok(Org {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        rate_limits: crate::store::api_keys::parse_rates(r.try_get("rate_limits")?)?
            .map(|r| r.specs()),
        require_mfa: r.try_get::<i64, _>("require_mfa")? != 0,
    })
}

/// Locks the organization row for the rest of the transaction, so membership changes of one
/// organization are serialised (the last-owner rule depends on it). Fails if it is gone.
pub(super) async fn lock_org(
    conn: &mut super::exec::Conn,
    org_id: &str,
    now: i64,
) -> StoreResult<()> {
    let r = sqlx::query("UPDATE organizations SET updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(org_id)
        .execute(conn)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn owner_count(conn: &mut super::exec::Conn, org_id: &str) -> StoreResult<i64> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'")
            .bind(org_id)
            .fetch_one(conn)
            .await?;
    Ok(n)
}

/// Starts a change of one member (new role, or removal when `new_role` is `None`): locks the
/// organization, reads the member's current role, and refuses to leave it without an owner.
async fn begin_member_change(
    conn: &mut super::exec::Conn,
    org_id: &str,
    user_id: &str,
    new_role: Option<&str>,
    now: i64,
) -> StoreResult<String> {
    lock_org(conn, org_id, now).await?;
    let current = role_of(conn, org_id, user_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let loses_owner = current == "owner" && new_role != Some("owner");
    if loses_owner && owner_count(conn, org_id).await? <= 1 {
        let what = if new_role.is_some() {
            "demoted"
        } else {
            "removed"
        };
        return Err(StoreError::Conflict(format!(
            "the last owner cannot be {what}"
        )));
    }
    Ok(current)
}

async fn role_of(
    conn: &mut super::exec::Conn,
    org_id: &str,
    user_id: &str,
) -> StoreResult<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|r| r.0))
}

impl Store {
    /// Creates organization `id` with its creator as owner.
    #[tracing::instrument(name = "Store::create_org", level = "debug", skip_all)]
    pub async fn create_org(
        &self,
        id: &str,
        name: &str,
        owner_id: &str,
        audit: &Audit,
    ) -> StoreResult<Org> {
        let id = id.to_string();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO organizations (id, name, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(&id)
            .bind(name)
            .bind(owner_id)
            .bind(audit.now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
            .bind(&id)
            .bind(owner_id)
            .bind(audit.now)
            .execute(&mut *tx)
            .await?;
        record(
            &mut tx,
            &id,
            audit,
            "organization.created",
            Some(&id),
            json!({ "name": name }),
        )
        .await?;
        tx.commit().await?;
        Ok(Org {
            id,
            name: name.to_string(),
            created_at: audit.now,
            updated_at: audit.now,
            rate_limits: None,
            require_mfa: false,
        })
    }

    /// An organization by id.
    #[tracing::instrument(name = "Store::org", level = "debug", skip_all)]
    pub async fn org(&self, org_id: &str) -> StoreResult<Option<Org>> {
        let row = sqlx::query(
            "SELECT id, name, created_at, updated_at, rate_limits, require_mfa FROM organizations WHERE id = $1",
        )
        .bind(org_id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(org_from_row).transpose()
    }

    /// Up to `limit` organizations of the deployment in the order they were created, after
    /// the organization `after` (the operator's listing; a cursor that names no
    /// organization gives an empty page).
    #[tracing::instrument(name = "Store::orgs_page", level = "debug", skip_all)]
    pub async fn orgs_page(&self, after: Option<&str>, limit: i64) -> StoreResult<Vec<OrgSummary>> {
        const SELECT: &str =
            "SELECT o.id, o.name, o.created_at, o.updated_at, o.rate_limits, o.require_mfa, \
             (SELECT COUNT(*) FROM memberships m WHERE m.org_id = o.id) AS member_count, \
             (SELECT COUNT(*) FROM api_keys k WHERE k.org_id = o.id AND k.revoked_at IS NULL) \
             AS key_count FROM organizations o";
        let rows = match after {
            None => {
                sqlx::query(&format!("{SELECT} ORDER BY o.created_at, o.id LIMIT $1"))
                    .bind(limit)
                    .fetch_all(self.db())
                    .await?
            }
            Some(after) => {
                sqlx::query(&format!(
                    "{SELECT} WHERE (o.created_at, o.id) > \
                     (SELECT c.created_at, c.id FROM organizations c WHERE c.id = $1) \
                     ORDER BY o.created_at, o.id LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(self.db())
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(OrgSummary {
                    org: org_from_row(r)?,
                    members: r.try_get("member_count")?,
                    keys: r.try_get("key_count")?,
                })
            })
            .collect()
    }

    /// The organizations a user belongs to, with the user's role in each.
    #[tracing::instrument(name = "Store::orgs_of_user", level = "debug", skip_all)]
    pub async fn orgs_of_user(&self, user_id: &str) -> StoreResult<Vec<(Org, String)>> {
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.created_at, o.updated_at, o.rate_limits, o.require_mfa, m.role FROM organizations o \
             JOIN memberships m ON m.org_id = o.id WHERE m.user_id = $1 ORDER BY o.created_at, o.id",
        )
        .bind(user_id)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| Ok((org_from_row(r)?, r.try_get("role")?)))
            .collect()
    }

    /// Changes an organization's name and/or its own rate limits (`Some(None)` restores the
    /// default) in one transaction, each change audited.
    #[tracing::instrument(name = "Store::update_org", level = "debug", skip_all)]
    pub async fn update_org(
        &self,
        org_id: &str,
        name: Option<&str>,
        rates: Option<Option<&Rates>>,
        require_mfa: Option<bool>,
        audit: &Audit,
    ) -> StoreResult<Org> {
        let mut tx = self.begin_write().await?;
        // Fails with NotFound when the organization is gone; sets updated_at.
        lock_org(&mut tx, org_id, audit.now).await?;
        if let Some(name) = name {
            sqlx::query("UPDATE organizations SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
            let details = json!({ "name": name });
            record(
                &mut tx,
                org_id,
                audit,
                "organization.renamed",
                Some(org_id),
                details,
            )
            .await?;
        }
        if let Some(rates) = rates {
            let text = rates.map(|r| r.to_string());
            sqlx::query("UPDATE organizations SET rate_limits = $1 WHERE id = $2")
                .bind(text.as_deref())
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
            let details = json!({ "rate_limits": text });
            let action = "organization.rate_limits_changed";
            record(&mut tx, org_id, audit, action, Some(org_id), details).await?;
        }
        if let Some(require) = require_mfa {
            sqlx::query("UPDATE organizations SET require_mfa = $1 WHERE id = $2")
                .bind(i64::from(require))
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
            let details = json!({ "require_mfa": require });
            let action = "organization.mfa_requirement_changed";
            record(&mut tx, org_id, audit, action, Some(org_id), details).await?;
        }
        tx.commit().await?;
        self.org(org_id).await?.ok_or(StoreError::NotFound)
    }

    /// Whether an organization requires its members to be at `aal2` (false when it is gone).
    #[tracing::instrument(name = "Store::org_requires_mfa", level = "debug", skip_all)]
    pub async fn org_requires_mfa(&self, org_id: &str) -> StoreResult<bool> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT require_mfa FROM organizations WHERE id = $1")
                .bind(org_id)
                .fetch_optional(self.db())
                .await?;
        Ok(v.unwrap_or(0) != 0)
    }

    /// An organization's own rate limits (`None`: the configured default).
    #[tracing::instrument(name = "Store::org_rate_limits", level = "debug", skip_all)]
    pub async fn org_rate_limits(&self, org_id: &str) -> StoreResult<Option<Rates>> {
        let stored: Option<Option<String>> =
            sqlx::query_scalar("SELECT rate_limits FROM organizations WHERE id = $1")
                .bind(org_id)
                .fetch_optional(self.db())
                .await?;
        crate::store::api_keys::parse_rates(stored.flatten())
    }

    /// An organization's chat limits (`NotFound` when it is gone).
    pub async fn org_chat_limits(&self, org_id: &str) -> StoreResult<crate::domain::ChatLimits> {
        let row = sqlx::query(
            "SELECT allowed_models, token_limits, max_parallel FROM organizations WHERE id = $1",
        )
        .bind(org_id)
        .fetch_optional(self.db())
        .await?
        .ok_or(StoreError::NotFound)?;
        crate::store::api_keys::chat_limits_from_row(&row)
    }

    /// Changes an organization's chat limits, audited as `organization.chat_limits_changed`;
    /// answers them as changed.
    pub async fn update_org_chat_limits(
        &self,
        org_id: &str,
        change: &crate::domain::ChatLimitsChange,
        audit: &Audit,
    ) -> StoreResult<crate::domain::ChatLimits> {
        let mut tx = self.begin_write().await?;
        lock_org(&mut tx, org_id, audit.now).await?;
        let row = sqlx::query(
            "SELECT allowed_models, token_limits, max_parallel FROM organizations WHERE id = $1",
        )
        .bind(org_id)
        .fetch_one(&mut *tx)
        .await?;
        let mut limits = crate::store::api_keys::chat_limits_from_row(&row)?;
        change.apply(&mut limits);
        let (models, tokens, parallel) = crate::store::api_keys::chat_limits_columns(&limits);
        sqlx::query(
            "UPDATE organizations SET allowed_models = $1, token_limits = $2, max_parallel = $3 \
             WHERE id = $4",
        )
        .bind(models)
        .bind(tokens)
        .bind(parallel)
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
        let details = crate::store::api_keys::chat_limits_audit(&limits);
        let action = "organization.chat_limits_changed";
        record(&mut tx, org_id, audit, action, Some(org_id), details).await?;
        tx.commit().await?;
        Ok(limits)
    }

    /// Deletes an organization and everything it owns; returns the hashes of its keys.
    #[tracing::instrument(name = "Store::delete_org", level = "debug", skip_all)]
    pub async fn delete_org(&self, org_id: &str) -> StoreResult<Vec<String>> {
        let mut tx = self.begin_write().await?;
        let hashes: Vec<(String,)> =
            sqlx::query_as("SELECT key_hash FROM api_keys WHERE org_id = $1")
                .bind(org_id)
                .fetch_all(&mut *tx)
                .await?;
        let r = sqlx::query("DELETE FROM organizations WHERE id = $1")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(hashes.into_iter().map(|h| h.0).collect())
    }

    /// A user's role in an organization.
    #[tracing::instrument(name = "Store::membership", level = "debug", skip_all)]
    pub async fn membership(&self, org_id: &str, user_id: &str) -> StoreResult<Option<String>> {
        let mut conn = self.read_conn().await?;
        role_of(&mut conn, org_id, user_id).await
    }

    /// The members of an organization.
    #[tracing::instrument(name = "Store::members", level = "debug", skip_all)]
    pub async fn members(&self, org_id: &str) -> StoreResult<Vec<Member>> {
        Ok(sqlx::query_as(
            "SELECT m.user_id, COALESCE(u.email, '') AS email, m.role, m.created_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY m.created_at, u.email",
        )
        .bind(org_id)
        .fetch_all(self.db())
        .await?)
    }

    /// Adds a user; `Conflict` if already a member.
    #[tracing::instrument(name = "Store::add_member", level = "debug", skip_all)]
    pub async fn add_member(
        &self,
        org_id: &str,
        user_id: &str,
        email: &str,
        role: &str,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lock_org(&mut tx, org_id, audit.now).await?;
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org_id)
        .bind(user_id)
        .bind(role)
        .bind(audit.now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict("the user is already a member".into()),
            other => other,
        })?;
        record(
            &mut tx,
            org_id,
            audit,
            "member.added",
            Some(user_id),
            json!({ "email": email, "role": role }),
        )
        .await?;
        let data = json!({ "org_id": org_id, "user_id": user_id, "role": role });
        enqueue(&mut tx, org_id, "member.added", data, audit.now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(())
    }

    /// Changes a member's role; refuses to demote the last owner.
    #[tracing::instrument(name = "Store::set_member_role", level = "debug", skip_all)]
    pub async fn set_member_role(
        &self,
        org_id: &str,
        user_id: &str,
        role: &str,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let current = begin_member_change(&mut tx, org_id, user_id, Some(role), audit.now).await?;
        sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
            .bind(role)
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        record(
            &mut tx,
            org_id,
            audit,
            "member.role_changed",
            Some(user_id),
            json!({ "from": current, "to": role }),
        )
        .await?;
        let data = json!({ "org_id": org_id, "user_id": user_id, "from": current, "to": role });
        enqueue(&mut tx, org_id, "member.role_changed", data, audit.now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(())
    }

    /// Removes a member; refuses to remove the last owner.
    #[tracing::instrument(name = "Store::remove_member", level = "debug", skip_all)]
    pub async fn remove_member(
        &self,
        org_id: &str,
        user_id: &str,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let current = begin_member_change(&mut tx, org_id, user_id, None, audit.now).await?;
        sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        record(
            &mut tx,
            org_id,
            audit,
            "member.removed",
            Some(user_id),
            json!({ "role": current }),
        )
        .await?;
        let data = json!({ "org_id": org_id, "user_id": user_id, "role": current });
        enqueue(&mut tx, org_id, "member.removed", data, audit.now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(())
    }

    /// The custom roles of an organization.
    #[tracing::instrument(name = "Store::custom_roles", level = "debug", skip_all)]
    pub async fn custom_roles(&self, org_id: &str) -> StoreResult<Vec<Role>> {
        let rows =
            sqlx::query("SELECT name, permissions FROM roles WHERE org_id = $1 ORDER BY name")
                .bind(org_id)
                .fetch_all(self.db())
                .await?;
        rows.iter()
            .map(|r| {
                let perms: String = r.try_get("permissions")?;
                Ok(Role {
                    name: r.try_get("name")?,
                    permissions: serde_json::from_str(&perms).unwrap_or_default(),
                    builtin: false,
                })
            })
            .collect()
    }

    /// One custom role.
    #[tracing::instrument(name = "Store::custom_role", level = "debug", skip_all)]
    pub async fn custom_role(&self, org_id: &str, name: &str) -> StoreResult<Option<Role>> {
        Ok(self
            .custom_roles(org_id)
            .await?
            .into_iter()
            .find(|r| r.name == name))
    }

    /// Creates a custom role; `Conflict` if the name is taken.
    #[tracing::instrument(name = "Store::create_role", level = "debug", skip_all)]
    pub async fn create_role(
        &self,
        org_id: &str,
        name: &str,
        permissions: &[String],
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lock_org(&mut tx, org_id, audit.now).await?;
        sqlx::query(
            "INSERT INTO roles (org_id, name, permissions, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org_id)
        .bind(name)
        .bind(serde_json::to_string(permissions).unwrap_or_else(|_| "[]".into()))
        .bind(audit.now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict("a role with this name already exists".into())
            }
            other => other,
        })?;
        record(
            &mut tx,
            org_id,
            audit,
            "role.created",
            Some(name),
            json!({ "permissions": permissions }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a custom role; `Conflict` while members hold it.
    #[tracing::instrument(name = "Store::delete_role", level = "debug", skip_all)]
    pub async fn delete_role(&self, org_id: &str, name: &str, audit: &Audit) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lock_org(&mut tx, org_id, audit.now).await?;
        let (holders,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = $2")
                .bind(org_id)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        if holders > 0 {
            return Err(StoreError::Conflict(format!(
                "{holders} member(s) still hold this role"
            )));
        }
        let r = sqlx::query("DELETE FROM roles WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        record(
            &mut tx,
            org_id,
            audit,
            "role.deleted",
            Some(name),
            json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
