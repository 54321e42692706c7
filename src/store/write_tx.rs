//! Write transactions: every store method that writes in a transaction begins it here.
//!
//! SQLite's plain `BEGIN` is deferred: the transaction reads from a snapshot and takes the
//! write lock only at its first write. When another connection committed in between, that
//! upgrade fails at once with `SQLITE_BUSY_SNAPSHOT`; the busy timeout cannot help, since
//! waiting would not make the snapshot current. So on SQLite a write transaction
//! 1. waits its turn in a first-come, first-served queue of this process's writers (a
//!    tokio mutex: waiting costs no connection and no thread, and a writer is not starved
//!    by newcomers the way SQLite's sleeping busy handler lets happen under steady load),
//! 2. then starts with `BEGIN IMMEDIATE`, which takes the write lock before the first read.
//!    Within the process the lock is free by then; a single-statement write or another
//!    process holding it is waited for under `busy_timeout`.
//!
//! PostgreSQL keeps its plain `BEGIN`: its row locks already make a writer wait (behind a
//! transaction pooler, with `SET LOCAL lock_timeout`: see `exec.rs`).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::exec::{begin_pooled, Conn};
use super::{Engine, Store, StoreError, StoreResult};

/// The queue of this process's writers; `None` where the engine needs none (PostgreSQL).
#[derive(Clone, Default)]
pub(super) struct WriteQueue(Option<Arc<Mutex<()>>>);

impl WriteQueue {
    pub(super) fn for_engine(engine: Engine) -> Self {
        match engine {
            Engine::Sqlite => Self(Some(Arc::new(Mutex::new(())))),
            Engine::Postgres => Self(None),
        }
    }
}

/// An open write transaction. Dropped without [`WriteTx::commit`] it rolls back, and the
/// connection goes back to the pool only after that (sqlx queues the rollback before any
/// later use of the connection).
pub(crate) struct WriteTx {
    // Declared first so it drops first: the rollback is queued before the turn passes on.
    tx: Conn,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits, then lets the next writer in.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back, then lets the next writer in.
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for WriteTx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.tx
    }
}

impl Store {
    /// Begins a transaction that writes: see the module documentation. A writer that does
    /// not get its turn within the busy timeout fails with `Busy`, as a locked database would.
    #[tracing::instrument(name = "Store::begin_write", level = "debug", skip_all)]
    pub(crate) async fn begin_write(&self) -> StoreResult<WriteTx> {
        let turn = self.write_turn().await?;
        let tx = match self.engine.begin_write() {
            Some(statement) => self.pool.begin_with(statement).await?,
            None if self.pooled => self.pool.begin_with(begin_pooled()).await?,
            None => self.pool.begin().await?,
        };
        Ok(WriteTx {
            tx: Conn::tx(tx, self.pooled),
            _turn: turn,
        })
    }

    /// This process's turn to write (SQLite; `None` where the engine needs none).
    async fn write_turn(&self) -> StoreResult<Option<OwnedMutexGuard<()>>> {
        match &self.writers.0 {
            Some(queue) => Ok(Some(
                tokio::time::timeout(super::engine::BUSY_TIMEOUT, queue.clone().lock_owned())
                    .await
                    .map_err(|_| StoreError::Busy)?,
            )),
            None => Ok(None),
        }
    }

    /// Whether write batches go to the SQLite writer thread ([`Store::write_batch`]).
    pub(super) fn has_writer(&self) -> bool {
        self.writer.is_some()
    }

    /// Runs `batch` in one transaction on the SQLite writer thread, in this process's turn,
    /// and answers once its commit is durable (see `sqlite_writer.rs`). Only where
    /// [`Store::has_writer`]; elsewhere it fails.
    pub(super) async fn write_batch<R, F>(&self, batch: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    {
        let Some(writer) = &self.writer else {
            return Err(StoreError::Other("no SQLite writer".into()));
        };
        let _turn = self.write_turn().await?;
        writer.run(batch).await
    }

    /// A connection for a few reads in a row (behind a transaction pooler, a transaction).
    pub(crate) async fn read_conn(&self) -> StoreResult<Conn> {
        if self.pooled {
            let tx = self.pool.begin_with(begin_pooled()).await?;
            return Ok(Conn::tx(tx, true));
        }
        Ok(Conn::plain(self.pool.acquire().await?))
    }

    /// The pool as an executor for single statements (see `exec.rs`).
    pub(crate) fn db(&self) -> super::exec::Db<'_> {
        super::exec::Db {
            pool: &self.pool,
            pooled: self.pooled,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Store;

    async fn sqlite_store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("gh-write-tx-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (store, path)
    }

    fn remove(db: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }

    async fn insert_setting(tx: &mut super::WriteTx, name: &str) {
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, 'v')")
            .bind(name)
            .execute(&mut **tx)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_dropped_write_transaction_rolls_back_and_lets_the_next_writer_in() {
        let (store, path) = sqlite_store().await;
        let mut tx = store.begin_write().await.unwrap();
        insert_setting(&mut tx, "dropped").await;
        drop(tx);
        let mut tx = store.begin_write().await.unwrap();
        insert_setting(&mut tx, "kept").await;
        tx.commit().await.unwrap();
        assert_eq!(store.setting("dropped").await.unwrap(), None);
        assert_eq!(store.setting("kept").await.unwrap().as_deref(), Some("v"));
        // No connection went back to the pool inside a transaction holding the lock.
        store.setting_or_insert("after", "w").await.unwrap();
        store.close().await;
        remove(&path);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_that_read_first_wait_for_each_other_instead_of_failing() {
        let (store, path) = sqlite_store().await;
        store.setting_or_insert("n", "0").await.unwrap();
        let bumps = (0..16).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin_write().await?;
                let (n,): (String,) = sqlx::query_as("SELECT value FROM settings WHERE name = 'n'")
                    .fetch_one(&mut *tx)
                    .await?;
                let next = n.parse::<i64>().unwrap_or(0) + 1;
                sqlx::query("UPDATE settings SET value = $1 WHERE name = 'n'")
                    .bind(next.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, super::StoreError>(())
            })
        });
        for bump in futures_util::future::join_all(bumps).await {
            bump.unwrap().unwrap();
        }
        assert_eq!(store.setting("n").await.unwrap().as_deref(), Some("16"));
        store.close().await;
        remove(&path);
    }
}
