use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{Store, StoreResult};

/// Who did what, recorded in the same transaction as the change.
#[derive(Clone, Debug)]
pub struct Audit {
    /// `user:{id}`, `api_key:{id}` or `cli`.
    pub actor: String,
    /// The client address, when over HTTP.
    pub ip: Option<String>,
    /// Unix ms.
    pub now: i64,
}

/// One audit-log entry as listed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Entry id.
    pub id: String,
    /// Position in the log; pass it as `before` to read older entries.
    pub seq: i64,
    /// `organization.created`, `api_key.revoked`, …
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// What it was done to (an id or email).
    pub target: Option<String>,
    /// From where.
    pub ip: Option<String>,
    /// Non-secret details.
    #[schema(value_type = Object)]
    pub details: Value,
    /// Unix ms.
    pub created_at: i64,
}

/// Which entries of an audit log to read, newest first.
#[derive(Clone, Copy, Debug)]
pub struct AuditFilter<'a> {
    /// At most this many.
    pub limit: i64,
    /// Older than this position.
    pub before: Option<i64>,
    /// Only this action.
    pub action: Option<&'a str>,
    /// Only this actor.
    pub actor: Option<&'a str>,
}

const INSERT_AUDIT: &str = "INSERT INTO audit_log (id, org_id, actor, action, target, ip, \
     details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// [`record`] on the SQLite writer's transaction (`sqlite_writer.rs`).
pub(super) fn record_sqlite(
    tx: &rusqlite::Transaction<'_>,
    org_id: &str,
    audit: &Audit,
    action: &str,
    target: Option<&str>,
    details: &Value,
) -> StoreResult<()> {
    tx.prepare_cached(&super::sqlite_writer::sql(INSERT_AUDIT))?
        .execute(rusqlite::params![
            crate::ids::AuditId::new().into_string(),
            org_id,
            audit.actor,
            action,
            target,
            audit.ip,
            details.to_string(),
            audit.now
        ])?;
    Ok(())
}

/// Writes an entry on the given connection (inside the caller's transaction).
pub(super) async fn record(
    conn: &mut super::exec::Conn,
    org_id: &str,
    audit: &Audit,
    action: &str,
    target: Option<&str>,
    details: Value,
) -> StoreResult<()> {
    sqlx::query(INSERT_AUDIT)
        .bind(crate::ids::AuditId::new().into_string())
        .bind(org_id)
        .bind(&audit.actor)
        .bind(action)
        .bind(target)
        .bind(audit.ip.as_deref())
        .bind(details.to_string())
        .bind(audit.now)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// The newest entries of an organization's audit log, older than position `before` if
    /// given, with exactly this `action` and this `actor` if given.
    #[tracing::instrument(name = "Store::audit_log", level = "debug", skip_all)]
    pub async fn audit_log(
        &self,
        org_id: &str,
        filter: &AuditFilter<'_>,
    ) -> StoreResult<Vec<AuditEntry>> {
        // One text for both engines: an absent filter binds NULL and matches every row.
        let rows = sqlx::query(
            "SELECT seq, id, action, actor, target, ip, details, created_at FROM audit_log \
             WHERE org_id = $1 AND seq < $2 AND ($3 IS NULL OR action = $3) \
             AND ($4 IS NULL OR actor = $4) ORDER BY seq DESC LIMIT $5",
        )
        .bind(org_id)
        .bind(filter.before.unwrap_or(i64::MAX))
        .bind(filter.action)
        .bind(filter.actor)
        .bind(filter.limit)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get("details")?;
                Ok(AuditEntry {
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
