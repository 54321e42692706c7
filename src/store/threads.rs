//! Chat threads, their messages, and usage counters.

use std::sync::Arc;

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, StoreResult};

/// A conversation.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Thread {
    /// `thr_…`.
    pub id: String,
    /// The owning organization.
    pub org_id: String,
    /// The person whose thread it is, or `null` for an organization's own thread.
    pub user_id: Option<String>,
    /// The key that started it, if any.
    pub key_id: Option<String>,
    /// The widget visitor whose thread it is: `v:vis_…` (anonymous) or `u:{user_id}`
    /// (identified by the customer's backend).
    pub visitor: Option<String>,
    /// The widget it was started from.
    pub widget_id: Option<String>,
    /// The first message, shortened.
    pub title: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the last message.
    pub updated_at: i64,
    /// Exchanges stored in it (1 once its first answer is stored): what a cached history of
    /// the thread is checked against. Internal.
    #[serde(skip)]
    pub revision: i64,
}

/// One message of a thread.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Message {
    /// `msg_…` (time-ordered).
    pub id: String,
    /// The thread.
    pub thread_id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Unix ms.
    pub created_at: i64,
}

/// Who may see which threads.
#[derive(Clone, Debug)]
pub enum ThreadScope {
    /// A person's own threads (in every organization).
    User(String),
    /// Every thread of an organization.
    Org(String),
    /// The threads of one person in one organization (an API key acting for a user).
    UserInOrg(String, String),
    /// One widget visitor's threads in an organization.
    Visitor(String, String),
}

impl ThreadScope {
    fn clause(&self, first: usize) -> (String, Vec<String>) {
        match self {
            ThreadScope::User(u) => (format!("user_id = ${first}"), vec![u.clone()]),
            ThreadScope::Org(o) => (format!("org_id = ${first}"), vec![o.clone()]),
            ThreadScope::UserInOrg(u, o) => (
                format!("user_id = ${first} AND org_id = ${}", first + 1),
                vec![u.clone(), o.clone()],
            ),
            ThreadScope::Visitor(o, v) => (
                format!("org_id = ${first} AND visitor = ${}", first + 1),
                vec![o.clone(), v.clone()],
            ),
        }
    }
}

/// A finished exchange to store.
#[derive(Clone)]
pub struct Exchange {
    /// The thread (created if `new`).
    pub thread: Thread,
    /// Whether the thread must be created.
    pub new: bool,
    /// The user's message.
    pub question: Message,
    /// The assistant's answer.
    pub answer: Message,
    /// What the chat cost, stored in the same commit (see docs/spend.md).
    pub spend: Option<super::LedgerRow>,
}

/// Messages per multi-row `INSERT` (6 parameters each, far below either engine's limit).
const MESSAGES_PER_INSERT: usize = 100;

/// Usage rows per multi-row upsert (8 parameters each). A batch's `(org, key, hour)` are
/// distinct, as PostgreSQL requires of the rows one upsert updates.
const USAGE_ROWS_PER_INSERT: usize = 100;

const THREAD_COLUMNS: &str =
    "id, org_id, user_id, key_id, visitor, widget_id, title, created_at, updated_at, revision";

/// The statement inserting `rows` messages.
fn insert_messages_sql(rows: usize) -> String {
    format!(
        "INSERT INTO messages (id, thread_id, org_id, role, content, created_at) VALUES {}",
        super::values_rows(rows, 6)
    )
}

/// The statement creating a thread (at revision 1: with its first exchange).
fn insert_thread_sql() -> String {
    format!("INSERT INTO threads ({THREAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)")
}

/// The later of the two: exchanges of one thread may commit in either order.
const TOUCH_THREAD: &str = "UPDATE threads SET updated_at = CASE WHEN updated_at > $1 \
     THEN updated_at ELSE $1 END, revision = revision + 1 WHERE id = $2 RETURNING revision";

/// The data of a `thread.created` event.
fn created_event(t: &Thread) -> serde_json::Value {
    serde_json::json!({ "id": t.id, "org_id": t.org_id, "user_id": t.user_id, "key_id": t.key_id })
}

/// [`Store::store_exchanges`] on the SQLite writer's transaction: the same statements, each
/// prepared once and kept.
fn store_exchanges_sqlite(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Exchange],
) -> StoreResult<Vec<StoreResult<i64>>> {
    use super::sqlite_writer::sql;
    use rusqlite::{params, OptionalExtension};
    let mut results = Vec::with_capacity(batch.len());
    let mut message = tx.prepare_cached(&sql(&insert_messages_sql(1)))?;
    for x in batch {
        let t = &x.thread;
        let result = if x.new {
            tx.prepare_cached(&sql(&insert_thread_sql()))?
                .execute(params![
                    t.id,
                    t.org_id,
                    t.user_id,
                    t.key_id,
                    t.visitor,
                    t.widget_id,
                    t.title,
                    t.created_at,
                    x.answer.created_at
                ])?;
            super::webhooks::enqueue_sqlite(
                tx,
                &t.org_id,
                "thread.created",
                created_event(t),
                t.created_at,
            )?;
            Ok(1)
        } else {
            let revision: Option<i64> = tx
                .prepare_cached(&sql(TOUCH_THREAD))?
                .query_row(params![x.answer.created_at, t.id], |r| r.get(0))
                .optional()?;
            // None: deleted while the model was answering.
            revision.ok_or(StoreError::NotFound)
        };
        if result.is_ok() {
            for m in [&x.question, &x.answer] {
                message.execute(params![
                    m.id,
                    m.thread_id,
                    t.org_id,
                    m.role,
                    m.content,
                    m.created_at
                ])?;
            }
        }
        results.push(result);
    }
    // The cost is settled even when the thread went away meanwhile: the model answered.
    let spend: Vec<&super::LedgerRow> = batch.iter().filter_map(|x| x.spend.as_ref()).collect();
    super::spend::insert_ledger_sqlite(tx, &spend)?;
    Ok(results)
}

/// Inserts `(organization, message)` pairs with one statement.
async fn insert_messages(
    conn: &mut super::exec::Conn,
    messages: &[(&str, &Message)],
) -> StoreResult<()> {
    let sql = insert_messages_sql(messages.len());
    let mut q = sqlx::query(&sql);
    for (org_id, m) in messages {
        q = q
            .bind(&m.id)
            .bind(&m.thread_id)
            .bind(*org_id)
            .bind(&m.role)
            .bind(&m.content)
            .bind(m.created_at);
    }
    q.execute(conn).await?;
    Ok(())
}

impl Store {
    /// A thread, if `scope` may see it.
    #[tracing::instrument(name = "Store::thread", level = "debug", skip_all)]
    pub async fn thread(&self, id: &str, scope: &ThreadScope) -> StoreResult<Option<Thread>> {
        let (clause, args) = scope.clause(2);
        let sql = format!("SELECT {THREAD_COLUMNS} FROM threads WHERE id = $1 AND {clause}");
        let mut q = sqlx::query_as(&sql).bind(id);
        for a in &args {
            q = q.bind(a);
        }
        Ok(q.fetch_optional(self.db()).await?)
    }

    /// Threads `scope` may see, most recently active first.
    #[tracing::instrument(name = "Store::threads", level = "debug", skip_all)]
    pub async fn threads(&self, scope: &ThreadScope, limit: i64) -> StoreResult<Vec<Thread>> {
        let (clause, args) = scope.clause(1);
        let sql = format!(
            "SELECT {THREAD_COLUMNS} FROM threads WHERE {clause} ORDER BY updated_at DESC, id DESC LIMIT {limit}"
        );
        let mut q = sqlx::query_as(&sql);
        for a in &args {
            q = q.bind(a);
        }
        Ok(q.fetch_all(self.db()).await?)
    }

    /// The last `n` messages of a thread, oldest first.
    #[tracing::instrument(name = "Store::recent_messages", level = "debug", skip_all)]
    pub async fn recent_messages(&self, thread_id: &str, n: i64) -> StoreResult<Vec<Message>> {
        let mut out: Vec<Message> = sqlx::query_as(&format!(
            "SELECT id, thread_id, role, content, created_at FROM messages WHERE thread_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT {n}"
        ))
        .bind(thread_id)
        .fetch_all(self.db())
        .await?;
        out.reverse();
        Ok(out)
    }

    /// Stores finished exchanges in one transaction, so that one commit (one `fsync` on
    /// SQLite) serves them all (on SQLite in a file, in one hand-off to the writer thread).
    /// The answer has one entry per exchange, in order: the thread's revision after it, or
    /// `NotFound` for one whose thread was deleted while the model answered (its messages are
    /// not stored; the others are). The outer error means nothing was stored.
    #[tracing::instrument(name = "Store::store_exchanges", level = "debug", skip_all)]
    pub async fn store_exchanges(
        &self,
        batch: Arc<[Exchange]>,
    ) -> StoreResult<Vec<StoreResult<i64>>> {
        let created = batch.iter().any(|x| x.new);
        let results = if self.has_writer() {
            self.write_batch(move |tx| store_exchanges_sqlite(tx, &batch))
                .await?
        } else {
            self.store_exchanges_pooled(&batch).await?
        };
        if created {
            self.webhook_events_committed();
        }
        Ok(results)
    }

    async fn store_exchanges_pooled(
        &self,
        batch: &[Exchange],
    ) -> StoreResult<Vec<StoreResult<i64>>> {
        let mut tx = self.begin_write().await?;
        let mut results = Vec::with_capacity(batch.len());
        for x in batch {
            let t = &x.thread;
            if x.new {
                sqlx::query(&insert_thread_sql())
                    .bind(&t.id)
                    .bind(&t.org_id)
                    .bind(t.user_id.as_deref())
                    .bind(t.key_id.as_deref())
                    .bind(t.visitor.as_deref())
                    .bind(t.widget_id.as_deref())
                    .bind(&t.title)
                    .bind(t.created_at)
                    .bind(x.answer.created_at)
                    .execute(&mut *tx)
                    .await?;
                super::webhooks::enqueue(
                    &mut tx,
                    &t.org_id,
                    "thread.created",
                    created_event(t),
                    t.created_at,
                )
                .await?;
                results.push(Ok(1));
            } else {
                let row = sqlx::query(TOUCH_THREAD)
                    .bind(x.answer.created_at)
                    .bind(&t.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                // None: deleted while the model was answering.
                results.push(match row {
                    Some(r) => Ok(r.try_get::<i64, _>("revision")?),
                    None => Err(StoreError::NotFound),
                });
            }
        }
        let messages: Vec<(&str, &Message)> = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .flat_map(|(x, _)| {
                let org = x.thread.org_id.as_str();
                [(org, &x.question), (org, &x.answer)]
            })
            .collect();
        for chunk in messages.chunks(MESSAGES_PER_INSERT) {
            insert_messages(&mut tx, chunk).await?;
        }
        // The cost is settled even when the thread went away meanwhile: the model answered.
        let spend: Vec<&super::LedgerRow> = batch.iter().filter_map(|x| x.spend.as_ref()).collect();
        super::spend::insert_ledger(&mut tx, &spend).await?;
        tx.commit().await?;
        Ok(results)
    }

    /// Deletes a thread `scope` may see, with its messages.
    #[tracing::instrument(name = "Store::delete_thread", level = "debug", skip_all)]
    pub async fn delete_thread(&self, id: &str, scope: &ThreadScope) -> StoreResult<()> {
        let (clause, args) = scope.clause(2);
        let sql = format!("DELETE FROM threads WHERE id = $1 AND {clause}");
        let mut q = sqlx::query(&sql).bind(id);
        for a in &args {
            q = q.bind(a);
        }
        if q.execute(self.db()).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

/// Counts to add to one usage row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageDelta {
    /// Requests.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Requests made with an API key and admitted.
    pub api_requests: i64,
    /// Requests made with an API key and refused by a rate limit (429).
    pub rate_limited: i64,
}

/// One row of a usage report.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// Unix ms of the bucket's start (an hour or a UTC day).
    pub start: i64,
    /// The key, or `null` for requests without one (a widget).
    pub key_id: Option<String>,
    /// Requests.
    pub requests: i64,
    /// Prompt tokens the model server reported.
    pub prompt_tokens: i64,
    /// Completion tokens the model server reported.
    pub completion_tokens: i64,
    /// Admitted requests made with the key (every route, not only chat).
    pub api_requests: i64,
    /// Requests made with the key that a rate limit refused (429).
    pub rate_limited: i64,
    /// Settled spend in micro-units of the configured currency, from the spend ledger (every
    /// settled chat, answered or not).
    pub cost: i64,
}

impl Store {
    /// Adds counted usage in one transaction.
    #[tracing::instrument(name = "Store::add_usage", level = "debug", skip_all)]
    pub async fn add_usage(
        &self,
        batch: &[((String, String, i64), UsageDelta)],
    ) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in batch.chunks(USAGE_ROWS_PER_INSERT) {
            // A deleted organization's usage is dropped rather than retried forever.
            // `VALUES` columns are `column1`… on both engines.
            let sql = format!(
                "INSERT INTO usage_hours (org_id, key_id, hour, requests, prompt_tokens, completion_tokens, api_requests, rate_limited) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8 \
                 FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM organizations o WHERE o.id = v.column1) \
                 ON CONFLICT (org_id, key_id, hour) DO UPDATE SET \
                 requests = usage_hours.requests + excluded.requests, \
                 prompt_tokens = usage_hours.prompt_tokens + excluded.prompt_tokens, \
                 completion_tokens = usage_hours.completion_tokens + excluded.completion_tokens, \
                 api_requests = usage_hours.api_requests + excluded.api_requests, \
                 rate_limited = usage_hours.rate_limited + excluded.rate_limited",
                super::values_rows(chunk.len(), 8)
            );
            let mut q = sqlx::query(&sql);
            for ((org, key, hour), d) in chunk {
                q = q
                    .bind(org)
                    .bind(key)
                    .bind(*hour)
                    .bind(d.requests)
                    .bind(d.prompt_tokens)
                    .bind(d.completion_tokens)
                    .bind(d.api_requests)
                    .bind(d.rate_limited);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Usage of an organization in `[from, to)`, per bucket of `bucket_ms` and key.
    #[tracing::instrument(name = "Store::usage", level = "debug", skip_all)]
    pub async fn usage(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
        bucket_ms: i64,
        key_id: Option<&str>,
    ) -> StoreResult<Vec<UsageRow>> {
        let key_clause = if key_id.is_some() {
            "AND key_id = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT (hour / {bucket_ms}) * {bucket_ms} AS start, key_id, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
             CAST(SUM(api_requests) AS BIGINT) AS api_requests, \
             CAST(SUM(rate_limited) AS BIGINT) AS rate_limited \
             FROM usage_hours WHERE org_id = $1 AND hour >= $2 AND hour < $3 {key_clause} \
             GROUP BY (hour / {bucket_ms}) * {bucket_ms}, key_id ORDER BY start, key_id"
        );
        let mut q = sqlx::query(&sql).bind(org_id).bind(from).bind(to);
        if let Some(k) = key_id {
            q = q.bind(k);
        }
        let rows = q.fetch_all(self.db()).await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get("key_id")?;
                Ok(UsageRow {
                    start: r.try_get("start")?,
                    key_id: (!key.is_empty()).then_some(key),
                    requests: r.try_get("requests")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                    api_requests: r.try_get("api_requests")?,
                    rate_limited: r.try_get("rate_limited")?,
                    cost: 0,
                })
            })
            .collect()
    }
}

/// One exported message with its thread.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ExportRow {
    /// The thread.
    pub thread_id: String,
    /// The thread's title.
    pub thread_title: String,
    /// The thread's person, if any.
    pub user_id: Option<String>,
    /// The key that started the thread, if any.
    pub key_id: Option<String>,
    /// The message.
    pub message_id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Unix ms.
    pub created_at: i64,
}

impl Store {
    /// An organization's messages since `since`, oldest first, read as a stream (never all
    /// in memory).
    pub fn export_rows(
        &self,
        org_id: String,
        since: i64,
    ) -> impl futures_util::Stream<Item = StoreResult<ExportRow>> + Send + 'static {
        use futures_util::StreamExt;
        let store = self.clone();
        async_stream::stream! {
            let mut rows = sqlx::query_as::<_, ExportRow>(
                "SELECT m.thread_id, t.title AS thread_title, t.user_id, t.key_id, m.id AS message_id, \
                 m.role, m.content, m.created_at \
                 FROM messages m JOIN threads t ON t.id = m.thread_id \
                 WHERE m.org_id = $1 AND m.created_at >= $2 ORDER BY m.created_at, m.id",
            )
            .bind(&org_id)
            .bind(since)
            .fetch(store.db());
            while let Some(row) = rows.next().await {
                yield row.map_err(StoreError::from);
            }
        }
    }
}
