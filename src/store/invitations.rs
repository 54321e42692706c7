//! Invitations to join an organization: created with their mail, accepted once.

use serde::Serialize;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{record, Audit};
use super::orgs::lock_org;
use super::webhooks::enqueue;
use super::{NewMail, Store, StoreError, StoreResult};

/// An invitation as listed (never its token).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Invitation {
    /// `inv_…`.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// The organization's name.
    pub org_name: String,
    /// The invited address.
    pub email: String,
    /// The role the invitee gets.
    pub role: String,
    /// Who invited (`user` id, or `cli`).
    pub inviter_id: String,
    /// The inviter's address (or `operator`).
    pub inviter_email: String,
    /// `pending`, `accepted`, `declined`, `revoked` or `expired`.
    pub status: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; a pending invitation past it is `expired`.
    pub expires_at: i64,
    /// When it was accepted, declined or revoked (unix ms).
    pub decided_at: Option<i64>,
}

/// What creating an invitation stores.
pub struct NewInvitation {
    /// `inv_…`.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// Normalised address.
    pub email: String,
    /// Role offered.
    pub role: String,
    /// `user` id or `cli`.
    pub inviter_id: String,
    /// The inviter's address.
    pub inviter_email: String,
    /// SHA-256 of the emailed token.
    pub token_hash: String,
    /// Unix ms.
    pub expires_at: i64,
}

const COLUMNS: &str = "i.id, i.org_id, o.name AS org_name, i.email, i.role, i.inviter_id, \
     i.inviter_email, i.status, i.created_at, i.expires_at, i.decided_at";

fn from_row(r: &AnyRow, now: i64) -> StoreResult<Invitation> {
    let status: String = r.try_get("status")?;
    let expires_at: i64 = r.try_get("expires_at")?;
    Ok(Invitation {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        org_name: r.try_get("org_name")?,
        email: r.try_get("email")?,
        role: r.try_get("role")?,
        inviter_id: r.try_get("inviter_id")?,
        inviter_email: r.try_get("inviter_email")?,
        status: if status == "pending" && expires_at <= now {
            "expired".into()
        } else {
            status
        },
        created_at: r.try_get("created_at")?,
        expires_at,
        decided_at: r.try_get("decided_at")?,
    })
}

/// Queues a mail inside the caller's transaction.
pub(super) async fn queue_mail(
    conn: &mut super::exec::Conn,
    mail: &NewMail,
    now: i64,
) -> StoreResult<()> {
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
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a pending, unexpired invitation `status`; `Conflict` when it is not pending.
async fn decide(
    conn: &mut super::exec::Conn,
    id: &str,
    status: &str,
    accepted_by: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE invitations SET status = $1, decided_at = $2, accepted_by = $3 \
         WHERE id = $4 AND status = 'pending' AND expires_at > $2",
    )
    .bind(status)
    .bind(now)
    .bind(accepted_by)
    .bind(id)
    .execute(conn)
    .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::Conflict(
            "the invitation is no longer pending".into(),
        ));
    }
    Ok(())
}

impl Store {
    /// Stores an invitation, replacing the pending one to the same address, with its audit
    /// entry, its webhook event and (when given) its mail, in one transaction.
    #[tracing::instrument(name = "Store::create_invitation", level = "debug", skip_all)]
    pub async fn create_invitation(
        &self,
        inv: &NewInvitation,
        mail: Option<&NewMail>,
        audit: &Audit,
    ) -> StoreResult<Invitation> {
        let mut tx = self.begin_write().await?;
        lock_org(&mut tx, &inv.org_id, audit.now).await?;
        let replaced = sqlx::query(
            "DELETE FROM invitations WHERE org_id = $1 AND email = $2 AND status = 'pending'",
        )
        .bind(&inv.org_id)
        .bind(&inv.email)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        sqlx::query(
            "INSERT INTO invitations (id, org_id, email, role, inviter_id, inviter_email, token_hash, \
             status, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)",
        )
        .bind(&inv.id)
        .bind(&inv.org_id)
        .bind(&inv.email)
        .bind(&inv.role)
        .bind(&inv.inviter_id)
        .bind(&inv.inviter_email)
        .bind(&inv.token_hash)
        .bind(audit.now)
        .bind(inv.expires_at)
        .execute(&mut *tx)
        .await?;
        let details = json!({ "email": inv.email, "role": inv.role, "replaced": replaced });
        record(
            &mut tx,
            &inv.org_id,
            audit,
            "invitation.created",
            Some(&inv.id),
            details,
        )
        .await?;
        let data = json!({ "org_id": inv.org_id, "invitation_id": inv.id, "email": inv.email,
            "role": inv.role, "inviter_id": inv.inviter_id, "expires_at": inv.expires_at });
        enqueue(&mut tx, &inv.org_id, "invitation.created", data, audit.now).await?;
        if let Some(m) = mail {
            queue_mail(&mut tx, m, audit.now).await?;
        }
        tx.commit().await?;
        self.webhook_events_committed();
        self.invitation(&inv.id, audit.now)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Whether a member of `org_id` has the address `email`.
    #[tracing::instrument(name = "Store::has_member_with_email", level = "debug", skip_all)]
    pub async fn has_member_with_email(&self, org_id: &str, email: &str) -> StoreResult<bool> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.org_id = $1 AND u.email = $2",
        )
        .bind(org_id)
        .bind(email)
        .fetch_one(self.db())
        .await?;
        Ok(n > 0)
    }

    /// One invitation.
    #[tracing::instrument(name = "Store::invitation", level = "debug", skip_all)]
    pub async fn invitation(&self, id: &str, now: i64) -> StoreResult<Option<Invitation>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations i JOIN organizations o ON o.id = i.org_id WHERE i.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(|r| from_row(r, now)).transpose()
    }

    /// The invitation whose emailed token hashes to `token_hash`.
    #[tracing::instrument(name = "Store::invitation_by_token", level = "debug", skip_all)]
    pub async fn invitation_by_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<Invitation>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations i JOIN organizations o ON o.id = i.org_id \
             WHERE i.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(|r| from_row(r, now)).transpose()
    }

    /// An organization's invitations, newest first.
    #[tracing::instrument(name = "Store::invitations_of_org", level = "debug", skip_all)]
    pub async fn invitations_of_org(&self, org_id: &str, now: i64) -> StoreResult<Vec<Invitation>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations i JOIN organizations o ON o.id = i.org_id \
             WHERE i.org_id = $1 ORDER BY i.created_at DESC, i.id"
        ))
        .bind(org_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(|r| from_row(r, now)).collect()
    }

    /// The pending, unexpired invitations to `email`, newest first.
    #[tracing::instrument(name = "Store::invitations_to", level = "debug", skip_all)]
    pub async fn invitations_to(&self, email: &str, now: i64) -> StoreResult<Vec<Invitation>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations i JOIN organizations o ON o.id = i.org_id \
             WHERE i.email = $1 AND i.status = 'pending' AND i.expires_at > $2 \
             ORDER BY i.created_at DESC, i.id"
        ))
        .bind(email)
        .bind(now)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(|r| from_row(r, now)).collect()
    }

    /// Revokes a pending invitation of `org_id`: `NotFound` when it is not the
    /// organization's, `Conflict` when it is no longer pending.
    #[tracing::instrument(name = "Store::revoke_invitation", level = "debug", skip_all)]
    pub async fn revoke_invitation(
        &self,
        org_id: &str,
        id: &str,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lock_org(&mut tx, org_id, audit.now).await?;
        let email: Option<(String,)> =
            sqlx::query_as("SELECT email FROM invitations WHERE id = $1 AND org_id = $2")
                .bind(id)
                .bind(org_id)
                .fetch_optional(&mut *tx)
                .await?;
        let (email,) = email.ok_or(StoreError::NotFound)?;
        decide(&mut tx, id, "revoked", None, audit.now).await?;
        record(
            &mut tx,
            org_id,
            audit,
            "invitation.revoked",
            Some(id),
            json!({ "email": email }),
        )
        .await?;
        let data = json!({ "org_id": org_id, "invitation_id": id, "email": email });
        enqueue(&mut tx, org_id, "invitation.revoked", data, audit.now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(())
    }

    /// Accepts a pending invitation for `user_id`: the membership, the audit entries and the
    /// `invitation.accepted` and `member.added` events in one transaction. `Conflict` when it
    /// is no longer pending or the user is already a member.
    #[tracing::instrument(name = "Store::accept_invitation", level = "debug", skip_all)]
    pub async fn accept_invitation(
        &self,
        inv: &Invitation,
        user_id: &str,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lock_org(&mut tx, &inv.org_id, audit.now).await?;
        decide(&mut tx, &inv.id, "accepted", Some(user_id), audit.now).await?;
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&inv.org_id)
        .bind(user_id)
        .bind(&inv.role)
        .bind(audit.now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict("you are already a member".into()),
            other => other,
        })?;
        let org = inv.org_id.as_str();
        let details = json!({ "email": inv.email, "role": inv.role, "user_id": user_id });
        record(
            &mut tx,
            org,
            audit,
            "invitation.accepted",
            Some(&inv.id),
            details,
        )
        .await?;
        let details = json!({ "email": inv.email, "role": inv.role, "invitation_id": inv.id });
        record(&mut tx, org, audit, "member.added", Some(user_id), details).await?;
        let data = json!({ "org_id": org, "invitation_id": inv.id, "email": inv.email,
            "role": inv.role, "user_id": user_id });
        enqueue(&mut tx, org, "invitation.accepted", data, audit.now).await?;
        let data = json!({ "org_id": org, "user_id": user_id, "role": inv.role });
        enqueue(&mut tx, org, "member.added", data, audit.now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(())
    }

    /// Declines a pending invitation (audited); `Conflict` when it is no longer pending.
    #[tracing::instrument(name = "Store::decline_invitation", level = "debug", skip_all)]
    pub async fn decline_invitation(&self, inv: &Invitation, audit: &Audit) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        decide(&mut tx, &inv.id, "declined", None, audit.now).await?;
        let details = json!({ "email": inv.email });
        record(
            &mut tx,
            &inv.org_id,
            audit,
            "invitation.declined",
            Some(&inv.id),
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
