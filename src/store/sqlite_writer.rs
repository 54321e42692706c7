//! The SQLite writer: one thread that owns a typed connection (`rusqlite`) and runs a whole
//! write batch, every statement and the `COMMIT`, in one hand-off.
//!
//! Through sqlx's `Any` driver each statement of a transaction is a round trip to the
//! connection's worker thread (`BEGIN IMMEDIATE`, each statement, `COMMIT`: a context switch
//! there and back for each). The hot group commits (credit spends, chat exchanges) send their
//! batch here instead: the caller takes its turn in the process's write queue
//! (`write_tx.rs`, so it does not fight the other writers), hands the batch over as one
//! closure and awaits one reply, sent after the commit is durable. Statements are prepared
//! once and kept (`prepare_cached`).
//!
//! The connection is opened on the same file with the same session settings as the pool's
//! (`Engine::session_setup`: WAL, synchronous FULL, foreign keys, busy timeout). PostgreSQL
//! and an in-memory SQLite database (a database of its own per connection) have no writer and
//! keep the sqlx path. Written by hand because no crate runs a batch on a dedicated
//! connection thread and answers an async caller once (sqlx's own worker is per statement).

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::{Engine, StoreError, StoreResult};

/// A batch for the writer thread, given its connection (`None` once the store was closed).
type Job = Box<dyn FnOnce(&mut Option<Connection>) + Send>;

/// The handle to the writer thread; cheap to clone. The thread ends, closing its connection,
/// when the last handle is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens `file` (which exists: the pool created it) and starts the thread.
    pub(super) fn open(file: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        for pragma in Engine::Sqlite.session_setup() {
            // `journal_mode` answers with a row; the others with none.
            let mut statement = conn.prepare(pragma)?;
            let mut rows = statement.raw_query();
            while rows.next()?.is_some() {}
        }
        conn.set_prepared_statement_cache_capacity(32);
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut conn = Some(conn);
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `batch` in one `BEGIN IMMEDIATE … COMMIT` on the writer thread and answers once
    /// the commit is durable; an error rolls it back. The caller holds its write-queue turn.
    pub(super) async fn run<R, F>(&self, batch: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn.as_mut() {
                Some(conn) => in_transaction(conn, batch),
                None => Err(StoreError::Other("the store is closed".into())),
            };
            // A caller that went away no longer waits; what committed stays committed.
            let _ = reply.send(result);
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Closes the connection once the batches already handed over have run (the thread
    /// ends with the last handle).
    pub(super) fn close(&self) {
        let _ = self.jobs.send(Box::new(|conn| *conn = None));
    }
}

fn in_transaction<R>(
    conn: &mut Connection,
    batch: impl FnOnce(&Transaction<'_>) -> Result<R, StoreError>,
) -> StoreResult<R> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(from_sqlite)?;
    // Dropped without a commit, the transaction rolls back.
    let out = batch(&tx)?;
    tx.commit().map_err(from_sqlite)?;
    Ok(out)
}

fn stopped() -> StoreError {
    StoreError::Other("the SQLite writer stopped".into())
}

/// A statement of the portable SQL (`$1` parameters) as SQLite numbers them (`?1`): SQLite
/// numbers a `$NAME` parameter by its first appearance, not by its digits.
/// Only a `$` followed by a digit is a parameter: any other `$` (a JSON path in a string
/// literal, say) is left as written.
pub(super) fn sql(portable: &str) -> String {
    let mut out = String::with_capacity(portable.len());
    let mut chars = portable.chars().peekable();
    while let Some(c) = chars.next() {
        let parameter = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if parameter { '?' } else { c });
    }
    out
}

/// `rusqlite`'s errors as the rest of the code sees them, as `From<sqlx::Error>` maps sqlx's.
pub(super) fn from_sqlite(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy,
            ErrorCode::ConstraintViolation
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                StoreError::Conflict("already exists".into())
            }
            _ => StoreError::Other(e.to_string()),
        },
        _ => StoreError::Other(e.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        from_sqlite(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn only_numbered_parameters_are_rewritten() {
        assert_eq!(
            super::sql("UPDATE t SET a = $1, b = json_extract(c, '$.d') WHERE id = $12"),
            "UPDATE t SET a = ?1, b = json_extract(c, '$.d') WHERE id = ?12"
        );
    }

    use super::super::{Store, StoreError};

    #[tokio::test]
    async fn the_writer_commits_durably_and_a_failed_batch_stores_nothing() {
        let path = std::env::temp_dir().join(format!("gh-writer-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let insert = |name: &'static str| {
            move |tx: &rusqlite::Transaction<'_>| {
                tx.execute(
                    &super::sql("INSERT INTO settings (name, value) VALUES ($1, 'v')"),
                    [name],
                )?;
                Ok::<_, StoreError>(())
            }
        };
        // The pool's settings: synchronous FULL (an acknowledged commit survives power loss),
        // foreign keys on, WAL.
        let settings = store
            .write_batch(|tx| {
                let get = |p: &str| tx.query_row(p, [], |r| r.get::<_, i64>(0));
                let mode = tx.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))?;
                Ok((
                    get("PRAGMA synchronous")?,
                    get("PRAGMA foreign_keys")?,
                    mode,
                ))
            })
            .await
            .unwrap();
        assert_eq!(settings, (2, 1, "wal".to_string()));
        let failed = store
            .write_batch(move |tx| {
                insert("dropped")(tx)?;
                Err::<(), _>(StoreError::Other("refused".into()))
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Other(_))), "{failed:?}");
        store.write_batch(insert("kept")).await.unwrap();
        let again = store.write_batch(insert("kept")).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        assert_eq!(store.setting("dropped").await.unwrap(), None);
        assert_eq!(store.setting("kept").await.unwrap().as_deref(), Some("v"));
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
