//! The delivery side of the outbox: claims (so no two workers send the same attempt), the
//! record of each attempt, the delivery log and manual retries.

use serde_json::json;
use sqlx::Row;

use super::audit::{record, Audit};
use super::webhooks::{endpoint_on, enqueue_to, fail_pending};
use super::{Engine, Store, StoreError, StoreResult};
use crate::config::SecretString;
use crate::ids::AttemptId;

/// One delivery attempt as listed.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    /// `wha_…`.
    pub id: String,
    /// The delivery (message × endpoint) it belongs to; retry it with this id.
    pub delivery_id: String,
    /// The `webhook-id` sent (stable across attempts).
    pub message_id: String,
    /// The event type.
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// The endpoint's status code, or `null` on a network error.
    pub status_code: Option<i64>,
    /// Milliseconds until the answer (or the failure).
    pub latency_ms: i64,
    /// The first 4 KiB of the answer, or the network error.
    pub response: String,
    /// Whether the endpoint accepted it (2xx).
    pub succeeded: bool,
    /// The delivery's status now: `pending`, `succeeded` or `failed`.
    pub delivery_status: String,
    /// Unix ms of the attempt.
    pub created_at: i64,
}

/// A delivery claimed by one worker: everything needed to send it.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    /// `whd_…`.
    pub id: String,
    /// This claim; the result is recorded only while it holds.
    pub lock_token: String,
    /// The organization.
    pub org_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The target.
    pub url: String,
    /// Signing secrets: the current one, then the previous one while it is still valid.
    pub secrets: Vec<SecretString>,
    /// `msg_…`.
    pub message_id: String,
    /// The event type.
    pub event_type: String,
    /// The exact body.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// What became of one attempt, and what follows.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    /// The status code, if an answer came.
    pub status_code: Option<i64>,
    /// Milliseconds.
    pub latency_ms: i64,
    /// The truncated answer or the error.
    pub response: String,
    /// 2xx.
    pub succeeded: bool,
    /// When to try again (`None`: give up unless it succeeded).
    pub retry_at: Option<i64>,
    /// The endpoint said 410 Gone: disable it.
    pub gone: bool,
}

impl Store {
    /// The latest attempts to deliver to an endpoint, newest first.
    #[tracing::instrument(name = "Store::webhook_attempts", level = "debug", skip_all)]
    pub async fn webhook_attempts(
        &self,
        org_id: &str,
        endpoint_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<WebhookAttempt>> {
        // The endpoint must be this organization's: another's answers 404, not an empty list.
        self.webhook_endpoint(org_id, endpoint_id).await?;
        let rows = sqlx::query(
            "SELECT a.id, a.delivery_id, a.message_id, a.event_type, a.attempt, a.status_code, \
             a.latency_ms, a.response, a.succeeded, a.created_at, d.status AS delivery_status \
             FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
             WHERE a.org_id = $1 AND a.endpoint_id = $2 ORDER BY a.created_at DESC, a.attempt DESC LIMIT $3",
        )
        .bind(org_id)
        .bind(endpoint_id)
        .bind(limit)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                let succeeded: i64 = r.try_get("succeeded")?;
                Ok(WebhookAttempt {
                    id: r.try_get("id")?,
                    delivery_id: r.try_get("delivery_id")?,
                    message_id: r.try_get("message_id")?,
                    event_type: r.try_get("event_type")?,
                    attempt: r.try_get("attempt")?,
                    status_code: r.try_get("status_code")?,
                    latency_ms: r.try_get("latency_ms")?,
                    response: r.try_get("response")?,
                    succeeded: succeeded != 0,
                    delivery_status: r.try_get("delivery_status")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Sends a delivery again as soon as possible (a replay when it already succeeded).
    #[tracing::instrument(name = "Store::retry_webhook_delivery", level = "debug", skip_all)]
    pub async fn retry_webhook_delivery(
        &self,
        org_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT d.endpoint_id, e.enabled FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.org_id = $1 AND d.id = $2",
        )
        .bind(org_id)
        .bind(delivery_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (_, enabled) = row.ok_or(StoreError::NotFound)?;
        if enabled == 0 {
            return Err(StoreError::Conflict("the endpoint is disabled".into()));
        }
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1 \
             WHERE org_id = $2 AND id = $3",
        )
        .bind(now)
        .bind(org_id)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(())
    }

    /// Claims up to `limit` due deliveries for `lease_ms`; no other worker, here or on
    /// another instance, sends them until the lease ends or the result is recorded.
    #[tracing::instrument(name = "Store::claim_webhook_deliveries", level = "debug", skip_all)]
    pub async fn claim_webhook_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        // PostgreSQL: concurrent claimers skip each other's rows instead of waiting. SQLite
        // has one writer at a time, so the statement is already exclusive.
        let lock = match self.engine {
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let claimed = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET locked_until = $1, lock_token = $2 WHERE id IN (\
             SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
             AND (locked_until IS NULL OR locked_until < $3) ORDER BY next_attempt_at LIMIT $4{lock})"
        ))
        .bind(now + lease_ms)
        .bind(&token)
        .bind(now)
        .bind(limit)
        .execute(self.db())
        .await?;
        if claimed.rows_affected() == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT d.id, d.org_id, d.endpoint_id, d.message_id, d.attempts, m.event_type, m.payload, \
             e.url, e.secret, e.previous_secret, e.previous_secret_expires_at \
             FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.lock_token = $1",
        )
        .bind(&token)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                let mut secrets = vec![SecretString::from(r.try_get::<String, _>("secret")?)];
                let prev: Option<String> = r.try_get("previous_secret")?;
                let prev_until: Option<i64> = r.try_get("previous_secret_expires_at")?;
                if let (Some(p), Some(until)) = (prev, prev_until) {
                    if until > now {
                        secrets.push(SecretString::from(p));
                    }
                }
                Ok(ClaimedDelivery {
                    id: r.try_get("id")?,
                    lock_token: token.clone(),
                    org_id: r.try_get("org_id")?,
                    endpoint_id: r.try_get("endpoint_id")?,
                    url: r.try_get("url")?,
                    secrets,
                    message_id: r.try_get("message_id")?,
                    event_type: r.try_get("event_type")?,
                    payload: r.try_get("payload")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Records one attempt and what follows, while the claim still holds: the delivery
    /// succeeds, waits for `retry_at`, or fails; the endpoint's failure streak is updated,
    /// and an endpoint that answered 410 or has failed for `disable_after_ms` is disabled
    /// (audited, with a `webhook.endpoint_disabled` event). Returns false when the claim was
    /// lost (nothing is written).
    #[tracing::instrument(name = "Store::finish_webhook_attempt", level = "debug", skip_all)]
    pub async fn finish_webhook_attempt(
        &self,
        d: &ClaimedDelivery,
        res: &AttemptResult,
        now: i64,
        disable_after_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let (status, next) = match (res.succeeded, res.retry_at) {
            (true, _) => ("succeeded", now),
            (false, Some(at)) if !res.gone => ("pending", at),
            _ => ("failed", now),
        };
        let r = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, \
             locked_until = NULL, lock_token = NULL, updated_at = $3 WHERE id = $4 AND lock_token = $5",
        )
        .bind(status)
        .bind(next)
        .bind(now)
        .bind(&d.id)
        .bind(&d.lock_token)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (id, org_id, delivery_id, endpoint_id, message_id, event_type, \
             attempt, status_code, latency_ms, response, succeeded, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(AttemptId::new().into_string())
        .bind(&d.org_id)
        .bind(&d.id)
        .bind(&d.endpoint_id)
        .bind(&d.message_id)
        .bind(&d.event_type)
        .bind(d.attempts + 1)
        .bind(res.status_code)
        .bind(res.latency_ms)
        .bind(&res.response)
        .bind(i64::from(res.succeeded))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut woke = false;
        if res.succeeded {
            // Written only when it changes: a busy endpoint's row is not rewritten (and locked)
            // by every successful delivery.
            let clear = "UPDATE webhook_endpoints SET failing_since = NULL \
                 WHERE id = $1 AND failing_since IS NOT NULL";
            sqlx::query(clear)
                .bind(&d.endpoint_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL",
            )
            .bind(now)
            .bind(&d.endpoint_id)
            .execute(&mut *tx)
            .await?;
            let e = endpoint_on(&mut tx, &d.org_id, &d.endpoint_id).await?;
            let failing_too_long = e
                .failing_since
                .is_some_and(|since| now - since >= disable_after_ms);
            if e.enabled && (res.gone || failing_too_long) {
                let reason = if res.gone { "gone" } else { "failing" };
                sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(reason)
                .bind(now)
                .bind(&e.id)
                .execute(&mut *tx)
                .await?;
                fail_pending(&mut tx, &e.id, now).await?;
                let audit = Audit {
                    actor: "system".into(),
                    ip: None,
                    now,
                };
                let details = json!({ "reason": reason, "url": e.url });
                let action = "webhook_endpoint.disabled";
                record(&mut tx, &d.org_id, &audit, action, Some(&e.id), details).await?;
                let data = json!({ "endpoint_id": e.id, "reason": reason, "failing_since": e.failing_since });
                let t = "webhook.endpoint_disabled";
                woke = enqueue_to(&mut tx, &d.org_id, t, data, now, None, None)
                    .await?
                    .is_some();
            }
        }
        tx.commit().await?;
        if woke {
            self.webhook_events_committed();
        }
        Ok(true)
    }
}
