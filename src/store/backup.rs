//! Backups of the embedded SQLite database: a consistent copy taken while the server runs
//! (`VACUUM INTO`, which reads one snapshot of the database under its own read transaction,
//! so writers carry on), and a restore that only replaces a database nobody has open.
//!
//! "Nobody has open" is an advisory lock: `serve` holds a shared `flock` on the database
//! file for as long as it runs ([`ServeLock`]) and restore takes it exclusively. SQLite's own
//! locks cannot tell: in WAL mode an idle server holds none. On Linux `flock` and SQLite's
//! `fcntl` locks are independent, so this lock never gets in SQLite's way.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};

use super::{Engine, Store};

/// What a backup file holds, checked before it is restored.
#[derive(Debug)]
pub struct BackupFacts {
    /// The newest migration applied to it.
    pub schema_version: i64,
    /// Users in it.
    pub users: i64,
    /// Organizations in it.
    pub orgs: i64,
}

/// The shared lock a running server holds on its SQLite file; released on drop.
pub struct ServeLock(#[allow(dead_code)] File);

impl ServeLock {
    /// Takes the shared lock on `file`. Fails while a restore is replacing it.
    pub fn take(file: &Path) -> anyhow::Result<Self> {
        let f =
            File::open(file).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
        match f.try_lock_shared() {
            Ok(()) => Ok(Self(f)),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "{} is being restored (gatehouse restore holds it); start again once it is done",
                file.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock {}: {e}", file.display())
            }
        }
    }
}

impl Store {
    /// Writes a consistent copy of this SQLite database to `to`, a file that must not exist,
    /// while other connections keep reading and writing. Every transaction committed before
    /// the copy's read began is in it.
    pub async fn backup_into(&self, to: &Path) -> anyhow::Result<()> {
        if self.engine != Engine::Sqlite {
            anyhow::bail!(
                "gatehouse backup copies the embedded SQLite database; back PostgreSQL up with \
                 its own tools (pg_dump, or your provider's snapshots)"
            );
        }
        if to.exists() {
            anyhow::bail!("{} already exists; name a new file", to.display());
        }
        let target = to
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{} is not a UTF-8 path", to.display()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("backup to {} failed: {e}", to.display()))?;
        // VACUUM INTO does not sync what it wrote: the copy must survive a crash of this host
        // right after the command said it was done.
        File::open(to)
            .and_then(|f| f.sync_all())
            .map_err(|e| anyhow::anyhow!("cannot sync {}: {e}", to.display()))?;
        sync_dir(to);
        Ok(())
    }
}

/// Opens a SQLite file without creating it.
async fn open(file: &Path, read_only: bool) -> anyhow::Result<SqliteConnection> {
    let url = format!("sqlite://{}", file.display());
    SqliteConnectOptions::from_str(&url)?
        .read_only(read_only)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {} as SQLite: {e}", file.display()))
}

/// Checks that `file` is an intact Gatehouse database and says what it holds.
pub async fn inspect(file: &Path) -> anyhow::Result<BackupFacts> {
    if !file.is_file() {
        anyhow::bail!("{} does not exist", file.display());
    }
    let mut conn = open(file, true).await?;
    let facts = async {
        let check: String = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await?
            .try_get(0)?;
        if check != "ok" {
            anyhow::bail!("it fails SQLite's integrity check: {check}");
        }
        let row = sqlx::query(
            "SELECT (SELECT MAX(version) FROM _sqlx_migrations WHERE success), \
             (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM organizations)",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|_| anyhow::anyhow!("it is not a Gatehouse database"))?;
        Ok(BackupFacts {
            schema_version: row.try_get::<Option<i64>, _>(0)?.unwrap_or(0),
            users: row.try_get(1)?,
            orgs: row.try_get(2)?,
        })
    }
    .await;
    let _ = conn.close().await;
    facts.map_err(|e: anyhow::Error| anyhow::anyhow!("{}: {e}", file.display()))
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// Where the database that was replaced now is, if there was one.
    pub kept: Option<PathBuf>,
}

/// Replaces the database file `target` by a copy of `from` (already [`inspect`]ed). An
/// existing `target` is replaced only with `force`, and never while a server holds it
/// ([`ServeLock`]); it is first checkpointed (its write-ahead log folded in) and then kept
/// beside it as `{target}-before-restore-{now}`.
pub async fn restore(
    from: &Path,
    target: &Path,
    force: bool,
    now: i64,
) -> anyhow::Result<Restored> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(from, target) {
        anyhow::bail!("the backup and the database are the same file");
    }
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("{} names no file", target.display()))?
        .to_string();
    let beside = |suffix: &str| target.with_file_name(format!("{name}{suffix}"));
    // Held until the new file is in place: a server starting meanwhile waits for nothing
    // and refuses to start (see `ServeLock::take`).
    let mut lock = None;
    let mut kept = None;
    if target.exists() {
        let f = File::open(target)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", target.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "{} is in use by a running gatehouse serve: stop it first",
                target.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock {}: {e}", target.display())
            }
        }
        if !force {
            anyhow::bail!(
                "{} already exists; pass --force to replace it (it is kept beside it as \
                 {name}-before-restore-<time>)",
                target.display()
            );
        }
        // Fold the write-ahead log into the file, so the kept copy is whole on its own.
        let mut conn = open(target, false).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("cannot checkpoint {}: {e}", target.display()))?;
        conn.close().await?;
        let old = beside(&format!("-before-restore-{now}"));
        std::fs::rename(target, &old)
            .map_err(|e| anyhow::anyhow!("cannot move {} aside: {e}", target.display()))?;
        kept = Some(old);
        lock = Some(f);
    }
    // A log or shared-memory file left by the old database would be read as the new one's.
    for suffix in ["-wal", "-shm", "-journal"] {
        let stale = beside(suffix);
        if stale.exists() {
            std::fs::remove_file(&stale)
                .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", stale.display()))?;
        }
    }
    let partial = beside(&format!("-restoring-{now}"));
    std::fs::copy(from, &partial)
        .and_then(|_| File::open(&partial)?.sync_all())
        .map_err(|e| anyhow::anyhow!("cannot copy {}: {e}", from.display()))?;
    std::fs::rename(&partial, target)
        .map_err(|e| anyhow::anyhow!("cannot move the copy into place: {e}"))?;
    sync_dir(target);
    drop(lock);
    Ok(Restored { kept })
}

/// Syncs the folder holding `file`, so a new or renamed entry survives a crash. Best effort:
/// some file systems refuse to open a folder for this.
fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
