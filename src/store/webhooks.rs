//! Webhook endpoints and the outbox: an event is written in the transaction of the change
//! that caused it, fanned out there to one delivery per matching endpoint, so an event
//! exists if and only if its change was committed.

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{record, Audit};
use super::{Store, StoreError, StoreResult};
use crate::config::SecretString;
use crate::ids::{DeliveryId, WebhookMessageId};

/// Every event type an endpoint may ask for.
pub const EVENT_TYPES: [&str; 19] = [
    "api_key.created",
    "api_key.rolled",
    "api_key.revoked",
    "credits.low",
    "credits.exhausted",
    "member.added",
    "member.removed",
    "member.role_changed",
    "rate_limit.exceeded",
    "thread.created",
    "widget.created",
    "widget.updated",
    "widget.deleted",
    "webhook.test",
    "webhook.endpoint_disabled",
    "invitation.created",
    "invitation.accepted",
    "invitation.revoked",
    "budget.threshold",
];

/// A webhook endpoint of an organization.
#[derive(Clone, Debug)]
pub struct WebhookEndpoint {
    /// `whk_…`.
    pub id: String,
    /// The owning organization.
    pub org_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Free text.
    pub description: String,
    /// The event types it receives; `None`: all.
    pub event_types: Option<Vec<String>>,
    /// Disabled endpoints receive nothing.
    pub enabled: bool,
    /// The current signing secret.
    pub secret: SecretString,
    /// The secret before the last rotation, still signing until `previous_secret_expires_at`.
    pub previous_secret: Option<SecretString>,
    /// Unix ms.
    pub previous_secret_expires_at: Option<i64>,
    /// Unix ms of the first failure since the last success.
    pub failing_since: Option<i64>,
    /// Why Gatehouse disabled it (`gone`, `failing`), if it did.
    pub disabled_reason: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl WebhookEndpoint {
    /// Whether it receives `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        wants(self.event_types.as_deref(), event_type)
    }
}

fn wants(types: Option<&[String]>, event_type: &str) -> bool {
    types.is_none_or(|t| t.iter().any(|x| x == event_type))
}

/// A change to an endpoint; each `Some` replaces the field (`event_types: Some(None)`: all).
#[derive(Debug, Default)]
pub struct EndpointChange {
    /// New URL (already checked).
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New event types.
    pub event_types: Option<Option<Vec<String>>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

const ENDPOINT_COLUMNS: &str = "id, org_id, url, description, event_types, enabled, secret, \
     previous_secret, previous_secret_expires_at, failing_since, disabled_reason, created_at, updated_at";

fn endpoint_from_row(r: &AnyRow) -> StoreResult<WebhookEndpoint> {
    let types: Option<String> = r.try_get("event_types")?;
    let enabled: i64 = r.try_get("enabled")?;
    let previous: Option<String> = r.try_get("previous_secret")?;
    Ok(WebhookEndpoint {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        url: r.try_get("url")?,
        description: r.try_get("description")?,
        event_types: types
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Other(format!("event_types: {e}")))?,
        enabled: enabled != 0,
        secret: SecretString::from(r.try_get::<String, _>("secret")?),
        previous_secret: previous.map(SecretString::from),
        previous_secret_expires_at: r.try_get("previous_secret_expires_at")?,
        failing_since: r.try_get("failing_since")?,
        disabled_reason: r.try_get("disabled_reason")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn types_text(types: Option<&[String]>) -> Option<String> {
    types.map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()))
}

/// The body every endpoint receives for an event (the same on both write paths:
/// `enqueue_to` through sqlx and `enqueue_sqlite` on the SQLite writer thread).
fn event_payload(event_type: &str, now_ms: i64, data: &Value) -> String {
    json!({
        "type": event_type,
        "timestamp": crate::clock::rfc3339(now_ms),
        "data": data,
    })
    .to_string()
}

/// Records an event of `org_id` on the caller's connection, inside the transaction of the
/// change that caused it: one message and one delivery per enabled endpoint that wants it.
/// Call [`Store::webhook_events_committed`] after the commit so the worker wakes at once
/// (otherwise it finds the event at its next poll).
pub(super) async fn enqueue(
    conn: &mut super::exec::Conn,
    org_id: &str,
    event_type: &str,
    data: Value,
    now_ms: i64,
) -> StoreResult<()> {
    enqueue_to(conn, org_id, event_type, data, now_ms, None, None).await?;
    Ok(())
}

/// [`enqueue`] with an optional de-duplication key (a second event with the same key is
/// dropped) and an optional single endpoint (the test event); returns the message id when
/// at least one delivery was created.
pub(super) async fn enqueue_to(
    conn: &mut super::exec::Conn,
    org_id: &str,
    event_type: &str,
    data: Value,
    now_ms: i64,
    dedup_key: Option<&str>,
    only_endpoint: Option<&str>,
) -> StoreResult<Option<String>> {
    let rows = sqlx::query(ENABLED_ENDPOINTS)
        .bind(org_id)
        .fetch_all(&mut *conn)
        .await?;
    let mut targets = Vec::new();
    for r in &rows {
        let id: String = r.try_get("id")?;
        let types: Option<String> = r.try_get("event_types")?;
        let types: Option<Vec<String>> = types.and_then(|t| serde_json::from_str(&t).ok());
        let matches = match only_endpoint {
            Some(only) => only == id,
            None => wants(types.as_deref(), event_type),
        };
        if matches {
            targets.push(id);
        }
    }
    if targets.is_empty() {
        return Ok(None);
    }
    let msg_id = WebhookMessageId::new().into_string();
    let payload = event_payload(event_type, now_ms, &data);
    let inserted = sqlx::query(INSERT_MESSAGE)
        .bind(&msg_id)
        .bind(org_id)
        .bind(event_type)
        .bind(&payload)
        .bind(dedup_key)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    if inserted.rows_affected() == 0 {
        return Ok(None);
    }
    for endpoint in targets {
        sqlx::query(INSERT_DELIVERY)
            .bind(DeliveryId::new().into_string())
            .bind(org_id)
            .bind(&endpoint)
            .bind(&msg_id)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(msg_id))
}

const ENABLED_ENDPOINTS: &str =
    "SELECT id, event_types FROM webhook_endpoints WHERE org_id = $1 AND enabled = 1 ORDER BY id";

const INSERT_MESSAGE: &str = "INSERT INTO webhook_messages (id, org_id, event_type, payload, \
     dedup_key, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedup_key) DO NOTHING";

const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (id, org_id, endpoint_id, \
     message_id, status, attempts, next_attempt_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)";

/// [`enqueue`] on the SQLite writer's transaction (`sqlite_writer.rs`).
pub(super) fn enqueue_sqlite(
    tx: &rusqlite::Transaction<'_>,
    org_id: &str,
    event_type: &str,
    data: Value,
    now_ms: i64,
) -> StoreResult<()> {
    use super::sqlite_writer::sql;
    let mut targets = Vec::new();
    {
        let mut endpoints = tx.prepare_cached(&sql(ENABLED_ENDPOINTS))?;
        let mut rows = endpoints.query([org_id])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let types: Option<String> = r.get(1)?;
            let types: Option<Vec<String>> = types.and_then(|t| serde_json::from_str(&t).ok());
            if wants(types.as_deref(), event_type) {
                targets.push(id);
            }
        }
    }
    if targets.is_empty() {
        return Ok(());
    }
    let msg_id = WebhookMessageId::new().into_string();
    let payload = event_payload(event_type, now_ms, &data);
    let no_dedup: Option<&str> = None;
    tx.prepare_cached(&sql(INSERT_MESSAGE))?
        .execute(rusqlite::params![
            msg_id, org_id, event_type, payload, no_dedup, now_ms
        ])?;
    let mut delivery = tx.prepare_cached(&sql(INSERT_DELIVERY))?;
    for endpoint in targets {
        delivery.execute(rusqlite::params![
            DeliveryId::new().into_string(),
            org_id,
            endpoint,
            msg_id,
            now_ms
        ])?;
    }
    Ok(())
}

/// Gives up the pending deliveries of an endpoint that no longer receives anything.
pub(super) async fn fail_pending(
    conn: &mut super::exec::Conn,
    endpoint_id: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', locked_until = NULL, lock_token = NULL, \
         updated_at = $1 WHERE endpoint_id = $2 AND status = 'pending'",
    )
    .bind(now)
    .bind(endpoint_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn endpoint_on(
    conn: &mut super::exec::Conn,
    org_id: &str,
    id: &str,
) -> StoreResult<WebhookEndpoint> {
    let row = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref()
        .map(endpoint_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound)
}

fn endpoint_details(e: &WebhookEndpoint) -> Value {
    json!({ "url": e.url, "event_types": e.event_types, "enabled": e.enabled })
}

impl Store {
    /// Wakes this instance's delivery worker: call after committing a transaction that
    /// enqueued events.
    pub fn webhook_events_committed(&self) {
        self.webhook_wake.notify_one();
    }

    /// What the delivery worker waits on.
    pub fn webhook_wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.webhook_wake.clone()
    }

    /// Stores a new endpoint.
    #[tracing::instrument(name = "Store::create_webhook_endpoint", level = "debug", skip_all)]
    pub async fn create_webhook_endpoint(
        &self,
        e: &WebhookEndpoint,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&e.id)
        .bind(&e.org_id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(types_text(e.event_types.as_deref()))
        .bind(i64::from(e.enabled))
        .bind(e.secret.expose_secret())
        .bind(e.previous_secret.as_ref().map(|s| s.expose_secret().to_string()))
        .bind(e.previous_secret_expires_at)
        .bind(e.failing_since)
        .bind(e.disabled_reason.as_deref())
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(&mut *tx)
        .await?;
        let (org, details) = (&e.org_id, endpoint_details(e));
        record(
            &mut tx,
            org,
            audit,
            "webhook_endpoint.created",
            Some(&e.id),
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The endpoints of an organization, oldest first.
    #[tracing::instrument(name = "Store::webhook_endpoints", level = "debug", skip_all)]
    pub async fn webhook_endpoints(&self, org_id: &str) -> StoreResult<Vec<WebhookEndpoint>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    /// One endpoint of an organization.
    #[tracing::instrument(name = "Store::webhook_endpoint", level = "debug", skip_all)]
    pub async fn webhook_endpoint(&self, org_id: &str, id: &str) -> StoreResult<WebhookEndpoint> {
        let mut conn = self.read_conn().await?;
        endpoint_on(&mut conn, org_id, id).await
    }

    /// Changes an endpoint; disabling it gives up its pending deliveries.
    #[tracing::instrument(name = "Store::update_webhook_endpoint", level = "debug", skip_all)]
    pub async fn update_webhook_endpoint(
        &self,
        org_id: &str,
        id: &str,
        change: &EndpointChange,
        audit: &Audit,
    ) -> StoreResult<WebhookEndpoint> {
        let mut tx = self.begin_write().await?;
        let mut e = endpoint_on(&mut tx, org_id, id).await?;
        if let Some(url) = &change.url {
            e.url = url.clone();
        }
        if let Some(d) = &change.description {
            e.description = d.clone();
        }
        if let Some(t) = &change.event_types {
            e.event_types = t.clone();
        }
        if let Some(enabled) = change.enabled {
            if enabled && !e.enabled {
                e.failing_since = None;
                e.disabled_reason = None;
            }
            if !enabled && e.enabled {
                fail_pending(&mut tx, id, audit.now).await?;
            }
            e.enabled = enabled;
        }
        e.updated_at = audit.now;
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $1, description = $2, event_types = $3, enabled = $4, \
             failing_since = $5, disabled_reason = $6, updated_at = $7 WHERE org_id = $8 AND id = $9",
        )
        .bind(&e.url)
        .bind(&e.description)
        .bind(types_text(e.event_types.as_deref()))
        .bind(i64::from(e.enabled))
        .bind(e.failing_since)
        .bind(e.disabled_reason.as_deref())
        .bind(e.updated_at)
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let details = endpoint_details(&e);
        record(
            &mut tx,
            org_id,
            audit,
            "webhook_endpoint.updated",
            Some(id),
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Deletes an endpoint with its deliveries and their log.
    #[tracing::instrument(name = "Store::delete_webhook_endpoint", level = "debug", skip_all)]
    pub async fn delete_webhook_endpoint(
        &self,
        org_id: &str,
        id: &str,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        // Deliveries first, then the endpoint: the order in which recording an attempt takes
        // its locks, so a delete racing a recorded attempt waits instead of deadlocking.
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE endpoint_id = $2 \
             AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE org_id = $1)",
        )
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let r = sqlx::query("DELETE FROM webhook_endpoints WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let action = "webhook_endpoint.deleted";
        record(&mut tx, org_id, audit, action, Some(id), json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the signing secret; the old one keeps signing until `old_valid_until`.
    #[tracing::instrument(name = "Store::rotate_webhook_secret", level = "debug", skip_all)]
    pub async fn rotate_webhook_secret(
        &self,
        org_id: &str,
        id: &str,
        new_secret: &SecretString,
        old_valid_until: i64,
        audit: &Audit,
    ) -> StoreResult<WebhookEndpoint> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $1, \
             secret = $2, updated_at = $3 WHERE org_id = $4 AND id = $5",
        )
        .bind(old_valid_until)
        .bind(new_secret.expose_secret())
        .bind(audit.now)
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let e = endpoint_on(&mut tx, org_id, id).await?;
        let details = json!({ "previous_secret_expires_at": old_valid_until });
        let action = "webhook_endpoint.secret_rotated";
        record(&mut tx, org_id, audit, action, Some(id), details).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Queues a `webhook.test` event for one endpoint; returns its message id.
    #[tracing::instrument(name = "Store::enqueue_webhook_test", level = "debug", skip_all)]
    pub async fn enqueue_webhook_test(
        &self,
        org_id: &str,
        endpoint_id: &str,
        now: i64,
    ) -> StoreResult<String> {
        let mut tx = self.begin_write().await?;
        let e = endpoint_on(&mut tx, org_id, endpoint_id).await?;
        if !e.enabled {
            return Err(StoreError::Conflict("the endpoint is disabled".into()));
        }
        let data = json!({ "endpoint_id": endpoint_id });
        let msg = enqueue_to(
            &mut tx,
            org_id,
            "webhook.test",
            data,
            now,
            None,
            Some(endpoint_id),
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(msg)
    }

    /// Records `rate_limit.exceeded` unless an event with the same `dedup_key` exists.
    #[tracing::instrument(name = "Store::record_rate_limit_event", level = "debug", skip_all)]
    pub async fn record_rate_limit_event(
        &self,
        org_id: &str,
        data: Value,
        dedup_key: &str,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let t = "rate_limit.exceeded";
        let msg = enqueue_to(&mut tx, org_id, t, data, now, Some(dedup_key), None).await?;
        tx.commit().await?;
        if msg.is_some() {
            self.webhook_events_committed();
        }
        Ok(())
    }
}
