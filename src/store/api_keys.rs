use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{record, Audit};
use super::webhooks::enqueue;
use super::{Store, StoreError, StoreResult};
use crate::domain::credits::{Balance, CreditsSetting, Interval, KeyCredits, Refill};
use crate::domain::{ChatLimits, ChatLimitsChange};
use crate::ratelimit::Rates;

/// A stored API key: everything but the key itself (only its SHA-256 is kept).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKeyRecord {
    /// `key_…`.
    pub id: String,
    /// The owning organization.
    pub org_id: String,
    /// SHA-256 (hex) of the key.
    pub key_hash: String,
    /// The first 12 characters, for listings.
    pub start: String,
    /// Display name.
    pub name: String,
    /// Permissions granted to the key.
    pub scopes: Vec<String>,
    /// `live` or `test`.
    pub environment: String,
    /// Caller-defined JSON object.
    pub metadata: Value,
    /// Who created it.
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, or never.
    pub expires_at: Option<i64>,
    /// Unix ms of the last use (written behind, in batches).
    pub last_used_at: Option<i64>,
    /// Unix ms of revocation.
    pub revoked_at: Option<i64>,
    /// The key that replaced it in a roll.
    pub rolled_to: Option<String>,
    /// The first key of its roll line, when it was made by a roll: that key's row holds the
    /// line's one credit balance (read into `credits` here), and the line's key budgets are
    /// counted under its id. See [`ApiKeyRecord::line`].
    pub root_key: Option<String>,
    /// The key's own rate limits (`None`: the configured default).
    pub rate_limits: Option<Rates>,
    /// Its credits (`None`: unlimited uses).
    pub credits: Option<KeyCredits>,
    /// The key's spend budgets (`None`: no budget of its own).
    pub budgets: Option<Vec<crate::domain::budget::Budget>>,
    /// Models, token windows and concurrency for chat (`None` fields: unrestricted).
    pub chat_limits: ChatLimits,
}

/// A change to a key: each `Some` replaces the field (`rate_limits: Some(None)` restores
/// the default).
#[derive(Debug, Default)]
pub struct KeyChange {
    /// New name.
    pub name: Option<String>,
    /// New metadata.
    pub metadata: Option<Value>,
    /// New rate limits.
    pub rate_limits: Option<Option<Rates>>,
    /// New credits (`Some(None)`: unlimited), set at `KeyChange`'s audit time.
    pub credits: Option<Option<CreditsSetting>>,
    /// New budgets (`Some(None)` removes them).
    pub budgets: Option<Option<Vec<crate::domain::budget::Budget>>>,
    /// New chat limits.
    pub chat_limits: ChatLimitsChange,
}

impl ApiKeyRecord {
    /// The id of the key's roll line: its first key. Credits are metered and key budgets
    /// counted under it, so a roll neither refills the one nor restarts the other, and the
    /// old and the new key draw from one balance during the grace period.
    pub fn line(&self) -> &str {
        self.root_key.as_deref().unwrap_or(&self.id)
    }

    /// `active`, `expired` or `revoked` at `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

const COLUMNS: &str =
    "id, org_id, key_hash, start, name, scopes, environment, metadata, created_by, created_at, \
     expires_at, last_used_at, revoked_at, rolled_to, rate_limits, credits_remaining, \
     credits_base, credits_period, credits_gen, credits_refill_interval, credits_refill_amount, \
     credits_refill_day, budgets, allowed_models, token_limits, max_parallel, root_key";

/// [`COLUMNS`] to read: the credit columns come from the roll line's first key (the row of
/// `root_key`), so every key of a line shows and meters the one balance.
const READ: &str = "id, org_id, key_hash, start, name, scopes, environment, metadata, created_by, \
     created_at, expires_at, last_used_at, revoked_at, rolled_to, rate_limits, \
     CASE WHEN root_key IS NULL THEN credits_remaining ELSE (SELECT r.credits_remaining FROM api_keys r WHERE r.id = api_keys.root_key) END AS credits_remaining, \
     CASE WHEN root_key IS NULL THEN credits_base ELSE (SELECT r.credits_base FROM api_keys r WHERE r.id = api_keys.root_key) END AS credits_base, \
     CASE WHEN root_key IS NULL THEN credits_period ELSE (SELECT r.credits_period FROM api_keys r WHERE r.id = api_keys.root_key) END AS credits_period, \
     CASE WHEN root_key IS NULL THEN credits_gen ELSE (SELECT r.credits_gen FROM api_keys r WHERE r.id = api_keys.root_key) END AS credits_gen, \
     CASE WHEN root_key IS NULL THEN credits_refill_interval ELSE (SELECT r.credits_refill_interval FROM api_keys r WHERE r.id = api_keys.root_key) END AS credits_refill_interval, \
     CASE WHEN root_key IS NULL THEN credits_refill_amount ELSE (SELECT r.credits_refill_amount FROM api_keys r WHERE r.id = api_keys.root_key) END AS credits_refill_amount, \
     CASE WHEN root_key IS NULL THEN credits_refill_day ELSE (SELECT r.credits_refill_day FROM api_keys r WHERE r.id = api_keys.root_key) END AS credits_refill_day, \
     budgets, allowed_models, token_limits, max_parallel, root_key";

fn from_row(r: &AnyRow) -> StoreResult<ApiKeyRecord> {
    let scopes: String = r.try_get("scopes")?;
    let metadata: String = r.try_get("metadata")?;
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        key_hash: r.try_get("key_hash")?,
        start: r.try_get("start")?,
        name: r.try_get("name")?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| StoreError::Other(format!("scopes: {e}")))?,
        environment: r.try_get("environment")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Other(format!("metadata: {e}")))?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
        rolled_to: r.try_get("rolled_to")?,
        root_key: r.try_get("root_key")?,
        rate_limits: parse_rates(r.try_get("rate_limits")?)?,
        credits: credits_from_row(r)?,
        budgets: parse_budgets(r.try_get("budgets")?)?,
        chat_limits: chat_limits_from_row(r)?,
    })
}

/// The credit columns of a key row (`None` when its credits are unlimited).
pub(super) fn credits_from_row(r: &AnyRow) -> StoreResult<Option<KeyCredits>> {
    let remaining: Option<i64> = r.try_get("credits_remaining")?;
    let Some(remaining) = remaining else {
        return Ok(None);
    };
    let interval: Option<String> = r.try_get("credits_refill_interval")?;
    let refill = match interval {
        None => None,
        Some(i) => Some(Refill {
            interval: Interval::parse(&i)
                .ok_or_else(|| StoreError::Other(format!("credits_refill_interval: {i}")))?,
            amount: r
                .try_get::<Option<i64>, _>("credits_refill_amount")?
                .unwrap_or(0),
            day: r
                .try_get::<Option<i32>, _>("credits_refill_day")?
                .and_then(|d| u8::try_from(d).ok()),
        }),
    };
    Ok(Some(KeyCredits {
        gen: r.try_get("credits_gen")?,
        balance: Balance {
            remaining,
            base: r
                .try_get::<Option<i64>, _>("credits_base")?
                .unwrap_or(remaining),
            period: r.try_get::<Option<i64>, _>("credits_period")?.unwrap_or(0),
        },
        refill,
    }))
}

/// The credit columns' values for `credits` (`None`: unlimited).
type CreditColumns = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<&'static str>,
    Option<i64>,
    Option<i32>,
);

fn credit_columns(credits: Option<&KeyCredits>) -> CreditColumns {
    match credits {
        None => (None, None, None, None, None, None),
        Some(c) => (
            Some(c.balance.remaining),
            Some(c.balance.base),
            Some(c.balance.period),
            c.refill.map(|r| r.interval.as_str()),
            c.refill.map(|r| r.amount),
            c.refill.and_then(|r| r.day).map(i32::from),
        ),
    }
}

/// The chat limits stored in a row's `allowed_models`, `token_limits` and `max_parallel`.
pub(crate) fn chat_limits_from_row(r: &AnyRow) -> StoreResult<ChatLimits> {
    let models: Option<String> = r.try_get("allowed_models")?;
    let tokens: Option<String> = r.try_get("token_limits")?;
    let parallel: Option<i64> = r.try_get("max_parallel")?;
    Ok(ChatLimits {
        allowed_models: models
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| StoreError::Other(format!("allowed_models: {e}")))?,
        token_limits: parse_token_limits(tokens)?,
        max_parallel: parallel.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    })
}

/// Stored token windows, read back.
pub(crate) fn parse_token_limits(
    stored: Option<String>,
) -> StoreResult<Option<crate::domain::TokenLimits>> {
    stored
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Other(format!("token_limits: {e}")))
}

/// The stored forms of chat limits: (allowed_models, token_limits, max_parallel).
pub(crate) fn chat_limits_columns(c: &ChatLimits) -> (Option<String>, Option<String>, Option<i64>) {
    (
        c.allowed_models
            .as_ref()
            .map(|m| serde_json::Value::from(m.clone()).to_string()),
        c.token_limits
            .as_ref()
            .map(|t| serde_json::to_value(t).unwrap_or_default().to_string()),
        c.max_parallel.map(i64::from),
    )
}

async fn insert(conn: &mut super::exec::Conn, k: &ApiKeyRecord) -> StoreResult<()> {
    let c = credit_columns(k.credits.as_ref());
    let (models, tokens, parallel) = chat_limits_columns(&k.chat_limits);
    sqlx::query(&format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
         $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)"
    ))
    .bind(&k.id)
    .bind(&k.org_id)
    .bind(&k.key_hash)
    .bind(&k.start)
    .bind(&k.name)
    .bind(serde_json::to_string(&k.scopes).unwrap_or_else(|_| "[]".into()))
    .bind(&k.environment)
    .bind(k.metadata.to_string())
    .bind(&k.created_by)
    .bind(k.created_at)
    .bind(k.expires_at)
    .bind(k.last_used_at)
    .bind(k.revoked_at)
    .bind(k.rolled_to.as_deref())
    .bind(k.rate_limits.as_ref().map(|r| r.to_string()))
    .bind(c.0)
    .bind(c.1)
    .bind(c.2)
    .bind(k.credits.map_or(0, |c| c.gen))
    .bind(c.3)
    .bind(c.4)
    .bind(c.5)
    .bind(budgets_text(k.budgets.as_deref()))
    .bind(models)
    .bind(tokens)
    .bind(parallel)
    .bind(k.root_key.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}

/// Stored rates, read back.
pub(crate) fn parse_rates(stored: Option<String>) -> StoreResult<Option<Rates>> {
    stored
        .map(|s| Rates::parse(&s).map_err(|e| StoreError::Other(format!("rate_limits: {e}"))))
        .transpose()
}

/// Stored budgets, read back.
pub(crate) fn parse_budgets(
    stored: Option<String>,
) -> StoreResult<Option<Vec<crate::domain::budget::Budget>>> {
    stored
        .map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Other(format!("budgets: {e}"))))
        .transpose()
}

/// Budgets as stored (JSON text), or NULL.
pub(crate) fn budgets_text(b: Option<&[crate::domain::budget::Budget]>) -> Option<String> {
    b.map(|b| serde_json::to_string(b).unwrap_or_else(|_| "[]".into()))
}

/// Chat limits as an audit entry shows them.
pub(crate) fn chat_limits_audit(c: &ChatLimits) -> Value {
    json!({ "allowed_models": c.allowed_models, "token_limits": c.token_limits, "max_parallel": c.max_parallel })
}

fn audit_details(k: &ApiKeyRecord) -> Value {
    let mut d = json!({ "name": k.name, "start": k.start, "scopes": k.scopes, "environment": k.environment });
    if k.credits.is_some() {
        d["credits"] = credits_details(k.credits.as_ref());
    }
    d
}

/// Credits as the audit log records a setting of them.
fn credits_details(c: Option<&KeyCredits>) -> Value {
    c.map_or(Value::Null, |c| {
        json!({
            "remaining": c.balance.remaining,
            "refill": c.refill.map(|r| json!({ "interval": r.interval.as_str(), "amount": r.amount, "day": r.day })),
        })
    })
}

/// The generation stored for a key (the record read in the same transaction has it too;
/// this reads it for a key whose credits were cleared, whose record no longer carries it).
async fn k_gen(conn: &mut super::exec::Conn, id: &str) -> StoreResult<i64> {
    let (gen,): (i64,) = sqlx::query_as("SELECT credits_gen FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok(gen)
}

/// A key in a webhook event: ids and settings, never the key or its hash.
fn event_data(k: &ApiKeyRecord) -> Value {
    json!({ "id": k.id, "org_id": k.org_id, "name": k.name, "scopes": k.scopes, "environment": k.environment })
}

impl Store {
    /// The hashes of every key of the roll line `line` (its first key's id) in `org`.
    pub async fn line_key_hashes(&self, org_id: &str, line: &str) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT key_hash FROM api_keys WHERE org_id = $1 AND (id = $2 OR root_key = $2)",
        )
        .bind(org_id)
        .bind(line)
        .fetch_all(self.db())
        .await?;
        Ok(rows.into_iter().map(|(h,)| h).collect())
    }

    /// Stores a new key.
    #[tracing::instrument(name = "Store::create_api_key", level = "debug", skip_all)]
    pub async fn create_api_key(&self, k: &ApiKeyRecord, audit: &Audit) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, k).await?;
        record(
            &mut tx,
            &k.org_id,
            audit,
            "api_key.created",
            Some(&k.id),
            audit_details(k),
        )
        .await?;
        let data = event_data(k);
        enqueue(&mut tx, &k.org_id, "api_key.created", data, audit.now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(())
    }

    /// The keys of an organization, newest first.
    #[tracing::instrument(name = "Store::api_keys", level = "debug", skip_all)]
    pub async fn api_keys(&self, org_id: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {READ} FROM api_keys WHERE org_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(org_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Up to `limit` keys of an organization in the order they were created, after the key
    /// `after` (the operator's listing; a cursor that names no key of the organization
    /// gives an empty page).
    #[tracing::instrument(name = "Store::api_keys_page", level = "debug", skip_all)]
    pub async fn api_keys_page(
        &self,
        org_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {READ} FROM api_keys WHERE org_id = $1 \
                     ORDER BY created_at, id LIMIT $2"
                ))
                .bind(org_id)
                .bind(limit)
                .fetch_all(self.db())
                .await?
            }
            Some(after) => {
                sqlx::query(&format!(
                    "SELECT {READ} FROM api_keys WHERE org_id = $1 AND (created_at, id) > \
                     (SELECT c.created_at, c.id FROM api_keys c WHERE c.org_id = $1 AND c.id = $2) \
                     ORDER BY created_at, id LIMIT $3"
                ))
                .bind(org_id)
                .bind(after)
                .bind(limit)
                .fetch_all(self.db())
                .await?
            }
        };
        rows.iter().map(from_row).collect()
    }

    /// One key of an organization.
    #[tracing::instrument(name = "Store::api_key", level = "debug", skip_all)]
    pub async fn api_key(&self, org_id: &str, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {READ} FROM api_keys WHERE org_id = $1 AND id = $2"
        ))
        .bind(org_id)
        .bind(id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The key with this hash, of any organization: the verification path (the caller then
    /// knows the organization from the record).
    #[tracing::instrument(name = "Store::api_key_by_hash", level = "debug", skip_all)]
    pub async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let row = sqlx::query(&format!("SELECT {READ} FROM api_keys WHERE key_hash = $1"))
            .bind(hash)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Revokes a key at once; `NotFound` if it is not this organization's, `Conflict` if already revoked.
    #[tracing::instrument(name = "Store::revoke_api_key", level = "debug", skip_all)]
    pub async fn revoke_api_key(
        &self,
        org_id: &str,
        id: &str,
        audit: &Audit,
    ) -> StoreResult<ApiKeyRecord> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(audit.now)
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!(
            "SELECT {READ} FROM api_keys WHERE org_id = $1 AND id = $2"
        ))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let k = row
            .as_ref()
            .map(from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict("the key is already revoked".into()));
        }
        record(
            &mut tx,
            org_id,
            audit,
            "api_key.revoked",
            Some(id),
            audit_details(&k),
        )
        .await?;
        let data = event_data(&k);
        enqueue(&mut tx, org_id, "api_key.revoked", data, audit.now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(k)
    }

    /// Replaces `old_id` by `new`: the old key keeps working until `old_expires_at`.
    #[tracing::instrument(name = "Store::roll_api_key", level = "debug", skip_all)]
    pub async fn roll_api_key(
        &self,
        old_id: &str,
        new: &ApiKeyRecord,
        old_expires_at: i64,
        audit: &Audit,
    ) -> StoreResult<ApiKeyRecord> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE api_keys SET rolled_to = $1, expires_at = $2 WHERE org_id = $3 AND id = $4 \
             AND revoked_at IS NULL AND rolled_to IS NULL",
        )
        .bind(&new.id)
        .bind(old_expires_at)
        .bind(&new.org_id)
        .bind(old_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the key is revoked or was already rolled".into(),
            ));
        }
        insert(&mut tx, new).await?;
        let row = sqlx::query(&format!(
            "SELECT {READ} FROM api_keys WHERE org_id = $1 AND id = $2"
        ))
        .bind(&new.org_id)
        .bind(old_id)
        .fetch_one(&mut *tx)
        .await?;
        let old = from_row(&row)?;
        let mut details = audit_details(new);
        details["replaces"] = json!(old_id);
        details["old_key_expires_at"] = json!(old_expires_at);
        record(
            &mut tx,
            &new.org_id,
            audit,
            "api_key.rolled",
            Some(&new.id),
            details,
        )
        .await?;
        let mut data = event_data(new);
        data["replaces"] = json!(old_id);
        data["old_key_expires_at"] = json!(old_expires_at);
        enqueue(&mut tx, &new.org_id, "api_key.rolled", data, audit.now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(old)
    }

    /// Changes a key's name, metadata or rate limits; `NotFound` if it is not this organization's.
    #[tracing::instrument(name = "Store::update_api_key", level = "debug", skip_all)]
    pub async fn update_api_key(
        &self,
        org_id: &str,
        id: &str,
        change: &KeyChange,
        audit: &Audit,
    ) -> StoreResult<ApiKeyRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {READ} FROM api_keys WHERE org_id = $1 AND id = $2"
        ))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let mut k = row
            .as_ref()
            .map(from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)?;
        let mut details = serde_json::Map::new();
        if let Some(name) = &change.name {
            k.name = name.clone();
            details.insert("name".into(), json!(name));
        }
        if let Some(metadata) = &change.metadata {
            k.metadata = metadata.clone();
            details.insert("metadata_changed".into(), json!(true));
        }
        if let Some(rates) = &change.rate_limits {
            k.rate_limits = rates.clone();
            details.insert(
                "rate_limits".into(),
                json!(rates.as_ref().map(|r| r.to_string())),
            );
        }
        if let Some(credits) = &change.credits {
            // A new generation: spends decided under the old settings no longer apply. The
            // balance is the roll line's, on its first key's row.
            let line = k.line().to_string();
            let gen = k_gen(&mut tx, &line).await? + 1;
            k.credits = credits.map(|c| KeyCredits {
                gen,
                balance: Balance {
                    remaining: c.remaining,
                    base: c.remaining,
                    period: audit.now,
                },
                refill: c.refill,
            });
            details.insert("credits".into(), credits_details(k.credits.as_ref()));
            let c = credit_columns(k.credits.as_ref());
            sqlx::query(
                "UPDATE api_keys SET credits_remaining = $1, credits_base = $2, \
                 credits_period = $3, credits_gen = $4, credits_refill_interval = $5, \
                 credits_refill_amount = $6, credits_refill_day = $7 WHERE org_id = $8 AND id = $9",
            )
            .bind(c.0)
            .bind(c.1)
            .bind(c.2)
            .bind(gen)
            .bind(c.3)
            .bind(c.4)
            .bind(c.5)
            .bind(org_id)
            .bind(&line)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(budgets) = &change.budgets {
            k.budgets = budgets.clone();
            details.insert("budgets".into(), json!(budgets));
        }
        if !change.chat_limits.is_empty() {
            change.chat_limits.apply(&mut k.chat_limits);
            details.insert("chat_limits".into(), chat_limits_audit(&k.chat_limits));
        }
        let (models, tokens, parallel) = chat_limits_columns(&k.chat_limits);
        sqlx::query(
            "UPDATE api_keys SET name = $1, metadata = $2, rate_limits = $3, budgets = $4, \
             allowed_models = $5, token_limits = $6, max_parallel = $7 WHERE org_id = $8 AND id = $9",
        )
        .bind(&k.name)
        .bind(k.metadata.to_string())
        .bind(k.rate_limits.as_ref().map(|r| r.to_string()))
        .bind(budgets_text(k.budgets.as_deref()))
        .bind(models)
        .bind(tokens)
        .bind(parallel)
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        record(
            &mut tx,
            org_id,
            audit,
            "api_key.updated",
            Some(id),
            Value::Object(details),
        )
        .await?;
        tx.commit().await?;
        Ok(k)
    }

    /// Writes last-used times gathered in memory, in one transaction.
    #[tracing::instrument(name = "Store::touch_api_keys", level = "debug", skip_all)]
    pub async fn touch_api_keys(&self, uses: &[(String, i64)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        // Distinct ids (the batch comes from a map): each key is matched by one row at most.
        const ROWS_PER_UPDATE: usize = 500;
        let mut tx = self.begin_write().await?;
        for chunk in uses.chunks(ROWS_PER_UPDATE) {
            let sql = format!(
                "UPDATE api_keys SET last_used_at = v.column2 FROM (VALUES {}) AS v \
                 WHERE api_keys.id = v.column1 \
                 AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.column2)",
                super::values_rows(chunk.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (id, at) in chunk {
                q = q.bind(id).bind(*at);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
