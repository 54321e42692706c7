//! Widgets: allowed origins, public settings and the signing secret.

use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{record, Audit};
use super::webhooks::enqueue;
use super::{Store, StoreError, StoreResult};
use crate::domain::WidgetTokenLimits;

/// A stored widget, secret included (never serialised: see `http::widgets::WidgetView`).
#[derive(Clone, PartialEq)]
pub struct WidgetRecord {
    /// `wgt_…`.
    pub id: String,
    /// The owning organization.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Normalised allowlist entries.
    pub allowed_origins: Vec<String>,
    /// Public settings (title, greeting, position, accent colour).
    pub settings: Value,
    /// Whether opening a session needs a widget token.
    pub require_token: bool,
    /// The signing secret (`wsec_…`): widget tokens and identified-visitor hashes.
    pub secret: String,
    /// Unix ms of the last secret rotation (or creation).
    pub secret_rotated_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// The model its chat asks for (`None`: the deployment's `upstream_model`).
    pub model: Option<String>,
    /// Its daily token budgets (`None` fields: the configured defaults).
    pub token_limits: Option<WidgetTokenLimits>,
}

impl std::fmt::Debug for WidgetRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WidgetRecord")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("allowed_origins", &self.allowed_origins)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// A change to a widget: each `Some` replaces the field.
#[derive(Debug, Default)]
pub struct WidgetChange {
    /// New name.
    pub name: Option<String>,
    /// New allowlist.
    pub allowed_origins: Option<Vec<String>>,
    /// New settings (already merged with the old ones).
    pub settings: Option<Value>,
    /// New token requirement.
    pub require_token: Option<bool>,
    /// New model (`Some(None)`: the deployment's default).
    pub model: Option<Option<String>>,
    /// New token budgets (`Some(None)`: the defaults).
    pub token_limits: Option<Option<WidgetTokenLimits>>,
}

const COLUMNS: &str = "id, org_id, name, allowed_origins, settings, require_token, secret, \
     secret_rotated_at, created_by, created_at, updated_at, model, token_limits";

fn from_row(r: &AnyRow) -> StoreResult<WidgetRecord> {
    let origins: String = r.try_get("allowed_origins")?;
    let settings: String = r.try_get("settings")?;
    let require: i64 = r.try_get("require_token")?;
    Ok(WidgetRecord {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        allowed_origins: serde_json::from_str(&origins)
            .map_err(|e| StoreError::Other(format!("allowed_origins: {e}")))?,
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::Other(format!("settings: {e}")))?,
        require_token: require != 0,
        secret: r.try_get("secret")?,
        secret_rotated_at: r.try_get("secret_rotated_at")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        model: r.try_get("model")?,
        token_limits: widget_tokens(r.try_get("token_limits")?)?,
    })
}

fn widget_tokens(stored: Option<String>) -> StoreResult<Option<WidgetTokenLimits>> {
    stored
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Other(format!("token_limits: {e}")))
}

fn widget_tokens_text(t: Option<&WidgetTokenLimits>) -> Option<String> {
    t.map(|t| serde_json::to_value(t).unwrap_or_default().to_string())
}

fn audit_details(w: &WidgetRecord) -> Value {
    json!({ "name": w.name, "allowed_origins": w.allowed_origins, "require_token": w.require_token,
            "model": w.model, "token_limits": w.token_limits })
}

/// A webhook event's data: ids and public settings, never the secret.
fn event_data(w: &WidgetRecord) -> Value {
    json!({ "id": w.id, "org_id": w.org_id, "name": w.name,
            "allowed_origins": w.allowed_origins, "require_token": w.require_token })
}

impl Store {
    /// Stores a new widget.
    #[tracing::instrument(name = "Store::create_widget", level = "debug", skip_all)]
    pub async fn create_widget(&self, w: &WidgetRecord, audit: &Audit) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO widgets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&w.id)
        .bind(&w.org_id)
        .bind(&w.name)
        .bind(json!(w.allowed_origins).to_string())
        .bind(w.settings.to_string())
        .bind(i64::from(w.require_token))
        .bind(&w.secret)
        .bind(w.secret_rotated_at)
        .bind(&w.created_by)
        .bind(w.created_at)
        .bind(w.updated_at)
        .bind(w.model.as_deref())
        .bind(widget_tokens_text(w.token_limits.as_ref()))
        .execute(&mut *tx)
        .await?;
        self.commit_change(tx, w, "widget.created", audit_details(w), audit, true)
            .await
    }

    /// The widgets of an organization, oldest first.
    #[tracing::instrument(name = "Store::widgets", level = "debug", skip_all)]
    pub async fn widgets(&self, org_id: &str) -> StoreResult<Vec<WidgetRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM widgets WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// One widget of an organization.
    #[tracing::instrument(name = "Store::widget", level = "debug", skip_all)]
    pub async fn widget(&self, org_id: &str, id: &str) -> StoreResult<Option<WidgetRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM widgets WHERE org_id = $1 AND id = $2"
        ))
        .bind(org_id)
        .bind(id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A widget by id alone: the public flow, where the organization is not yet known.
    #[tracing::instrument(name = "Store::widget_by_id", level = "debug", skip_all)]
    pub async fn widget_by_id(&self, id: &str) -> StoreResult<Option<WidgetRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM widgets WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Applies a change; `NotFound` if the widget is not this organization's.
    #[tracing::instrument(name = "Store::update_widget", level = "debug", skip_all)]
    pub async fn update_widget(
        &self,
        org_id: &str,
        id: &str,
        change: &WidgetChange,
        audit: &Audit,
    ) -> StoreResult<WidgetRecord> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE widgets SET name = COALESCE($1, name), \
             allowed_origins = COALESCE($2, allowed_origins), settings = COALESCE($3, settings), \
             require_token = COALESCE($4, require_token), updated_at = $5 \
             WHERE org_id = $6 AND id = $7",
        )
        .bind(change.name.as_deref())
        .bind(
            change
                .allowed_origins
                .as_ref()
                .map(|o| json!(o).to_string()),
        )
        .bind(change.settings.as_ref().map(Value::to_string))
        .bind(change.require_token.map(i64::from))
        .bind(audit.now)
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(model) = &change.model {
            sqlx::query("UPDATE widgets SET model = $1 WHERE org_id = $2 AND id = $3")
                .bind(model.as_deref())
                .bind(org_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(tokens) = &change.token_limits {
            sqlx::query("UPDATE widgets SET token_limits = $1 WHERE org_id = $2 AND id = $3")
                .bind(widget_tokens_text(tokens.as_ref()))
                .bind(org_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let w = updated(&mut tx, r.rows_affected(), org_id, id).await?;
        let details = audit_details(&w);
        self.commit_change(tx, &w, "widget.updated", details, audit, true)
            .await?;
        Ok(w)
    }

    /// Replaces the signing secret: every widget token and session of the widget stops working.
    #[tracing::instrument(name = "Store::rotate_widget_secret", level = "debug", skip_all)]
    pub async fn rotate_widget_secret(
        &self,
        org_id: &str,
        id: &str,
        secret: &str,
        audit: &Audit,
    ) -> StoreResult<WidgetRecord> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE widgets SET secret = $1, secret_rotated_at = $2, updated_at = $2 \
             WHERE org_id = $3 AND id = $4",
        )
        .bind(secret)
        .bind(audit.now)
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let w = updated(&mut tx, r.rows_affected(), org_id, id).await?;
        // Not a webhook event: nothing a receiver is shown has changed.
        self.commit_change(tx, &w, "widget.secret_rotated", json!({}), audit, false)
            .await?;
        Ok(w)
    }

    /// Deletes a widget; its visitors' threads stay with the organization.
    #[tracing::instrument(name = "Store::delete_widget", level = "debug", skip_all)]
    pub async fn delete_widget(
        &self,
        org_id: &str,
        id: &str,
        audit: &Audit,
    ) -> StoreResult<WidgetRecord> {
        let mut tx = self.begin_write().await?;
        // Write first: on PostgreSQL the UPDATE locks the row, so the widget read next is
        // the one deleted (SQLite's write transactions already hold the lock from BEGIN).
        let touched =
            sqlx::query("UPDATE widgets SET updated_at = updated_at WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        let w = updated(&mut tx, touched.rows_affected(), org_id, id).await?;
        sqlx::query("DELETE FROM widgets WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let details = json!({ "name": w.name });
        self.commit_change(tx, &w, "widget.deleted", details, audit, true)
            .await?;
        Ok(w)
    }

    /// Records a change in the audit log and, with `event`, as a webhook event of the same
    /// name, then commits (and wakes the delivery worker once the event exists).
    async fn commit_change(
        &self,
        mut tx: super::write_tx::WriteTx,
        w: &WidgetRecord,
        action: &str,
        details: Value,
        audit: &Audit,
        event: bool,
    ) -> StoreResult<()> {
        record(&mut tx, &w.org_id, audit, action, Some(&w.id), details).await?;
        if event {
            enqueue(&mut tx, &w.org_id, action, event_data(w), audit.now).await?;
        }
        tx.commit().await?;
        if event {
            self.webhook_events_committed();
        }
        Ok(())
    }
}

/// After an UPDATE of one widget: `NotFound` when it touched no row (not this
/// organization's), else the widget as it now is.
async fn updated(
    conn: &mut super::exec::Conn,
    rows_affected: u64,
    org_id: &str,
    id: &str,
) -> StoreResult<WidgetRecord> {
    if rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    fetch(conn, org_id, id).await
}

async fn fetch(conn: &mut super::exec::Conn, org_id: &str, id: &str) -> StoreResult<WidgetRecord> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM widgets WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    from_row(&row)
}
