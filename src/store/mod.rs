//! Storage on SQLite (the embedded default) or PostgreSQL.
//!
//! Both engines are reached through sqlx's `Any` driver with one set of portable SQL
//! (`$1` parameters, TEXT ids, BIGINT unix-millisecond times, JSON as TEXT), so each query
//! is written once. What differs per engine lives in `engine.rs` (connection set-up,
//! pragmas, how a write transaction begins) and in the per-engine migration folders, which
//! keep the same numbers. Every transaction that writes begins with `Store::begin_write`;
//! every other statement runs on `Store::db()` or `Store::read_conn()` (`exec.rs`: what a
//! transaction pooler needs). On SQLite in a file, the hot group commits (credit spends, chat
//! exchanges) run instead on one writer thread with a typed connection, a whole batch per
//! hand-off (`sqlite_writer.rs`), in the same write queue. Opening, TLS errors and migrations are in `connect.rs`.

mod admin;
mod api_keys;
mod audit;
pub mod backup;
mod connect;
mod credits;
mod engine;
mod exec;
mod identities;
mod imports;
mod invitations;
mod jwt_keys;
mod mail;
mod mail_requests;
mod mfa;
mod oauth;
mod orgs;
mod otp;
mod pkce;
mod sessions;
mod spend;
mod sqlite_writer;
mod threads;
mod users;
mod webhook_deliveries;
mod webhooks;
mod widgets;
mod write_tx;

pub use admin::{AdminAction, AdminAudit, AdminAuditEntry, AdminNewUser, UserDeletion, UserPatch};
pub use api_keys::{ApiKeyRecord, KeyChange};
pub use audit::{Audit, AuditEntry, AuditFilter};
pub use credits::{CreditKey, CreditSpend};
pub use engine::{describe, sqlite_file, Engine};
pub use identities::{has_email_identity, ExternalFlow, ExternalSignIn, Identity, Unlinked};
pub use imports::{ImportOutcome, ImportedUser};
pub use invitations::{Invitation, NewInvitation};
pub use mail::QueuedMail;
pub use mail_requests::MailRequestRow;
pub use mfa::{Assurance, Challenge, Factor, Verified};
pub use oauth::{
    NewCode, NewRefresh, OAuthClientRow, OAuthCodeRow, OAuthGrantRow, OAuthRefreshRow,
    OAuthRequestRow,
};
pub use orgs::{Member, Org, OrgSummary, Role};
pub use otp::{EmailChangeStep, NewMail, OtpRow};
pub use pkce::PkceCode;
pub use sessions::{DeviceSession, Ended, RefreshRow, Rotation, SessionInfo};
pub use spend::{LedgerRow, OrgBudgets, SpendRow, SpendScope};
pub use threads::{Exchange, ExportRow, Message, Thread, ThreadScope, UsageDelta, UsageRow};
pub use users::{NewUser, User};
pub use webhook_deliveries::{AttemptResult, ClaimedDelivery, WebhookAttempt};
pub use webhooks::{EndpointChange, WebhookEndpoint, EVENT_TYPES};
pub use widgets::{WidgetChange, WidgetRecord};

use sqlx::AnyPool;

/// Storage failures as the rest of the code sees them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such row.
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Lock contention or pool exhaustion: retry later.
    #[error("storage busy")]
    Busy,
    /// Anything else.
    #[error("storage error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut => StoreError::Busy,
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    return StoreError::Conflict("already exists".into());
                }
                match db.code().as_deref() {
                    // SQLITE_BUSY / SQLITE_LOCKED and their extended codes; PostgreSQL lock
                    // timeouts, serialization failures and deadlocks.
                    Some("5" | "6" | "261" | "262" | "517" | "55P03" | "40001" | "40P01") => {
                        StoreError::Busy
                    }
                    _ => StoreError::Other(e.to_string()),
                }
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

/// Result alias for storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// The storage handle: a connection pool plus the engine it talks to.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// Wakes this instance's webhook worker when an event is committed.
    webhook_wake: std::sync::Arc<tokio::sync::Notify>,
    /// This process's writers waiting their turn (SQLite).
    writers: write_tx::WriteQueue,
    /// The thread that runs the hot write batches in one hand-off (SQLite in a file).
    writer: Option<sqlite_writer::Writer>,
    /// Behind a transaction pooler (`database_pooler = "transaction"`): see `exec.rs`.
    pooled: bool,
    /// The URL it was opened with, for migrations over a connection of their own.
    url: std::sync::Arc<str>,
}

impl Store {
    /// The engine behind this store.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A cheap round trip, for `/readyz`.
    #[tracing::instrument(name = "Store::ping", level = "debug", skip_all)]
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.db()).await?;
        Ok(())
    }

    /// Closes the pool (after in-flight queries finish).
    #[tracing::instrument(name = "Store::close", level = "debug", skip_all)]
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close();
        }
        self.pool.close().await;
    }

    /// Reads a deployment setting.
    #[tracing::instrument(name = "Store::setting", level = "debug", skip_all)]
    pub async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| r.0))
    }

    /// Stores `value` under `name` unless one is already there; returns the value that holds.
    #[tracing::instrument(name = "Store::setting_or_insert", level = "debug", skip_all)]
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(self.db())
        .await?;
        self.setting(name).await?.ok_or(StoreError::NotFound)
    }
}

/// The rows of a multi-row `VALUES` list: `($1, $2), ($3, $4)` for 2 rows of 2 columns.
/// Batches of writes go out as one statement per chunk of rows rather than one per row: each
/// statement is a round trip (to SQLite's worker thread or over the network), and a batch
/// can hold a row for every API key used since the last one.
pub(crate) fn values_rows(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    let mut n = itoa::Buffer::new();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..columns {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(n.format(row * columns + col + 1));
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod values_tests {
    #[test]
    fn values_rows_numbers_parameters_row_by_row() {
        assert_eq!(super::values_rows(1, 1), "($1)");
        assert_eq!(super::values_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
