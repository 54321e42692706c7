//! The spend ledger (one row per settled chat), organizations' budgets and model prices,
//! and the dedupe of `budget.threshold` alerts.

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;

use super::api_keys::{budgets_text, parse_budgets};
use super::audit::{record, Audit};
use super::webhooks::enqueue;
use super::{Store, StoreError, StoreResult};
use crate::config::ModelPrice;
use crate::domain::budget::Budget;

/// One settled chat. `id` is the reservation's id: storing it twice stores it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// `spn_…`, the reservation's id.
    pub id: String,
    /// The organization that pays.
    pub org_id: String,
    /// The key used, if any.
    pub key_id: Option<String>,
    /// The end user (`v:vis_…` or `u:{user_id}`), if any.
    pub end_user: Option<String>,
    /// The OAuth client whose token the chat came with, if any.
    pub client_id: Option<String>,
    /// The model asked.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Micro-units of the configured currency.
    pub cost: i64,
    /// Unix ms of the settle.
    pub created_at: i64,
}

/// Whose spend to sum.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SpendScope {
    /// A key's: the id of its roll line (its first key), whose every key counts.
    Key(String),
    /// An organization's.
    Org(String),
    /// One end user's in an organization: (organization, end user).
    EndUser(String, String),
    /// One OAuth client's in an organization: (organization, client id).
    Client(String, String),
}

/// An organization's budgets: its own, and those applying to each of its end users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrgBudgets {
    /// Budgets on the organization's whole spend; `null`: none.
    pub budgets: Option<Vec<Budget>>,
    /// Budgets applying to each end user (widget visitor or identified user) separately;
    /// `null`: none.
    pub end_user_budgets: Option<Vec<Budget>>,
    /// Budgets applying to each OAuth client (connected app) acting in the organization
    /// separately; `null`: none.
    pub client_budgets: Option<Vec<Budget>>,
}

/// One row of a spend report.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SpendRow {
    /// Unix ms of the bucket's start (an hour or a UTC day).
    pub start: i64,
    /// The key, or `null` for chats without one (a widget, an OAuth client).
    pub key_id: Option<String>,
    /// The OAuth client, or `null` for chats that came without a client's token.
    pub client_id: Option<String>,
    /// The model.
    pub model: String,
    /// Settled chats.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Micro-units of the configured currency.
    pub cost: i64,
}

/// Ledger rows per multi-row `INSERT` (10 parameters each).
const LEDGER_ROWS_PER_INSERT: usize = 100;

/// The statement inserting `rows` ledger rows.
fn insert_ledger_sql(rows: usize) -> String {
    format!(
        "INSERT INTO spend_ledger (id, org_id, key_id, end_user, model, prompt_tokens, completion_tokens, cost, created_at, client_id) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, v.column9, v.column10 \
         FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM organizations o WHERE o.id = v.column2) \
         ON CONFLICT (id) DO NOTHING",
        super::values_rows(rows, 10)
    )
}

/// [`insert_ledger`] on the SQLite writer's transaction, a row at a time through one kept
/// statement (a statement per batch size would not stay in the cache).
pub(super) fn insert_ledger_sqlite(
    tx: &rusqlite::Transaction<'_>,
    rows: &[&LedgerRow],
) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(&super::sqlite_writer::sql(&insert_ledger_sql(1)))?;
    for r in rows {
        insert.execute(rusqlite::params![
            r.id,
            r.org_id,
            r.key_id,
            r.end_user,
            r.model,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost,
            r.created_at,
            r.client_id
        ])?;
    }
    Ok(())
}

/// Inserts ledger rows, skipping ids already stored and organizations that are gone.
pub(super) async fn insert_ledger(
    conn: &mut super::exec::Conn,
    rows: &[&LedgerRow],
) -> StoreResult<()> {
    for chunk in rows.chunks(LEDGER_ROWS_PER_INSERT) {
        let sql = insert_ledger_sql(chunk.len());
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(&r.id)
                .bind(&r.org_id)
                .bind(r.key_id.as_deref())
                .bind(r.end_user.as_deref())
                .bind(&r.model)
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.cost)
                .bind(r.created_at)
                .bind(r.client_id.as_deref());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// Stores settled chats in one transaction (those not stored with their exchange).
    pub async fn record_spend(&self, rows: &[LedgerRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let refs: Vec<&LedgerRow> = rows.iter().collect();
        insert_ledger(&mut tx, &refs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The settled spend of `scope` from `since` (unix ms) on.
    pub async fn spent_since(&self, scope: &SpendScope, since: i64) -> StoreResult<i64> {
        let (clause, a, b) = match scope {
            // A key's budgets are its roll line's: every key of the line counts.
            SpendScope::Key(k) => (
                "key_id IN (SELECT id FROM api_keys WHERE id = $1 OR root_key = $1)",
                k.as_str(),
                None,
            ),
            SpendScope::Org(o) => ("org_id = $1", o.as_str(), None),
            SpendScope::EndUser(o, u) => ("org_id = $1 AND end_user = $3", o.as_str(), Some(u)),
            SpendScope::Client(o, c) => ("org_id = $1 AND client_id = $3", o.as_str(), Some(c)),
        };
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(cost), 0) AS BIGINT) AS spent FROM spend_ledger \
             WHERE {clause} AND created_at >= $2"
        );
        let mut q = sqlx::query(&sql).bind(a).bind(since);
        if let Some(u) = b {
            q = q.bind(u.as_str());
        }
        let row = q.fetch_one(self.db()).await?;
        Ok(row.try_get("spent")?)
    }

    /// Settled spend of an organization in `[from, to)`, per bucket, key, OAuth client and
    /// model.
    pub async fn spend_report(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
        bucket_ms: i64,
        key_id: Option<&str>,
    ) -> StoreResult<Vec<SpendRow>> {
        let key_clause = if key_id.is_some() {
            "AND key_id = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT (created_at / {bucket_ms}) * {bucket_ms} AS start, COALESCE(key_id, '') AS key_id, \
             COALESCE(client_id, '') AS client_id, model, \
             CAST(COUNT(*) AS BIGINT) AS requests, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
             CAST(SUM(cost) AS BIGINT) AS cost \
             FROM spend_ledger WHERE org_id = $1 AND created_at >= $2 AND created_at < $3 {key_clause} \
             GROUP BY (created_at / {bucket_ms}) * {bucket_ms}, COALESCE(key_id, ''), COALESCE(client_id, ''), model \
             ORDER BY start, key_id, client_id, model"
        );
        let mut q = sqlx::query(&sql).bind(org_id).bind(from).bind(to);
        if let Some(k) = key_id {
            q = q.bind(k);
        }
        let rows = q.fetch_all(self.db()).await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get("key_id")?;
                let client: String = r.try_get("client_id")?;
                Ok(SpendRow {
                    start: r.try_get("start")?,
                    key_id: (!key.is_empty()).then_some(key),
                    client_id: (!client.is_empty()).then_some(client),
                    model: r.try_get("model")?,
                    requests: r.try_get("requests")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                    cost: r.try_get("cost")?,
                })
            })
            .collect()
    }

    /// An organization's budgets.
    pub async fn org_budgets(&self, org_id: &str) -> StoreResult<OrgBudgets> {
        let row = sqlx::query(
            "SELECT budgets, end_user_budgets, client_budgets FROM org_budgets WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_optional(self.db())
        .await?;
        Ok(match row {
            None => OrgBudgets::default(),
            Some(r) => OrgBudgets {
                budgets: parse_budgets(r.try_get("budgets")?)?,
                end_user_budgets: parse_budgets(r.try_get("end_user_budgets")?)?,
                client_budgets: parse_budgets(r.try_get("client_budgets")?)?,
            },
        })
    }

    /// Replaces an organization's budgets (audited as `organization.budgets_changed`).
    pub async fn set_org_budgets(
        &self,
        org_id: &str,
        b: &OrgBudgets,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO org_budgets (org_id, budgets, end_user_budgets, client_budgets, updated_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM organizations WHERE id = $1) \
             ON CONFLICT (org_id) DO UPDATE SET budgets = excluded.budgets, \
             end_user_budgets = excluded.end_user_budgets, client_budgets = excluded.client_budgets, \
             updated_at = excluded.updated_at",
        )
        .bind(org_id)
        .bind(budgets_text(b.budgets.as_deref()))
        .bind(budgets_text(b.end_user_budgets.as_deref()))
        .bind(budgets_text(b.client_budgets.as_deref()))
        .bind(audit.now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let details = json!({
            "budgets": b.budgets, "end_user_budgets": b.end_user_budgets,
            "client_budgets": b.client_budgets,
        });
        record(
            &mut tx,
            org_id,
            audit,
            "organization.budgets_changed",
            Some(org_id),
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An organization's own model prices.
    pub async fn org_prices(&self, org_id: &str) -> StoreResult<Vec<(String, ModelPrice)>> {
        let rows = sqlx::query(
            "SELECT model, input_per_mtok, output_per_mtok FROM model_prices WHERE org_id = $1 ORDER BY model",
        )
        .bind(org_id)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("model")?,
                    ModelPrice {
                        input_per_mtok: r.try_get("input_per_mtok")?,
                        output_per_mtok: r.try_get("output_per_mtok")?,
                    },
                ))
            })
            .collect()
    }

    /// Sets an organization's price of a model (audited as `model_price.set`).
    pub async fn set_org_price(
        &self,
        org_id: &str,
        model: &str,
        price: ModelPrice,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO model_prices (org_id, model, input_per_mtok, output_per_mtok, updated_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM organizations WHERE id = $1) \
             ON CONFLICT (org_id, model) DO UPDATE SET input_per_mtok = excluded.input_per_mtok, \
             output_per_mtok = excluded.output_per_mtok, updated_at = excluded.updated_at",
        )
        .bind(org_id)
        .bind(model)
        .bind(price.input_per_mtok)
        .bind(price.output_per_mtok)
        .bind(audit.now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let details = json!({ "model": model, "input_per_mtok": price.input_per_mtok, "output_per_mtok": price.output_per_mtok });
        record(
            &mut tx,
            org_id,
            audit,
            "model_price.set",
            Some(model),
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes an organization's price of a model; `NotFound` if it had none.
    pub async fn delete_org_price(
        &self,
        org_id: &str,
        model: &str,
        audit: &Audit,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("DELETE FROM model_prices WHERE org_id = $1 AND model = $2")
            .bind(org_id)
            .bind(model)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let details = json!({ "model": model });
        record(
            &mut tx,
            org_id,
            audit,
            "model_price.deleted",
            Some(model),
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that `budget` crossed `threshold` % in the period starting at
    /// `period_start`, with its audit entry and `budget.threshold` event, unless it was
    /// already recorded; answers whether it was new.
    pub async fn budget_alert(
        &self,
        org_id: &str,
        budget: &str,
        period_start: i64,
        threshold: i64,
        data: Value,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO budget_alerts (budget, period_start, threshold, org_id, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM organizations WHERE id = $4) \
             ON CONFLICT (budget, period_start, threshold) DO NOTHING",
        )
        .bind(budget)
        .bind(period_start)
        .bind(threshold)
        .bind(org_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        let audit = Audit {
            actor: "system".into(),
            ip: None,
            now,
        };
        record(
            &mut tx,
            org_id,
            &audit,
            "budget.threshold",
            Some(budget),
            data.clone(),
        )
        .await?;
        enqueue(&mut tx, org_id, "budget.threshold", data, now).await?;
        tx.commit().await?;
        self.webhook_events_committed();
        Ok(true)
    }
}
