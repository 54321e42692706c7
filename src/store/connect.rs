//! Opening storage: the pool (over TLS when the URL says so), start-up errors a person can act
//! on, and migrations that several instances starting at once apply exactly once.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, Connection};

use super::{describe, engine, sqlite_file, sqlite_writer, write_tx, Engine, Store};
use crate::config::{Config, DatabasePooler};

/// The `sslmode` values sqlx (like libpq) understands.
const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

impl Store {
    /// Opens the storage `config` names and applies pending migrations: how every command
    /// starts.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        check_settings(config)?;
        let store = Self::connect_with(&config.database_url, config.database_pooler).await?;
        store
            .migrate_with(config.migrate_database_url.as_deref())
            .await?;
        Ok(store)
    }

    /// Connects to `url` (`sqlite://PATH` or `postgres://…`) directly, creating a SQLite file
    /// if needed.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, DatabasePooler::None).await
    }

    /// Connects to `url` through `pooler` (see `exec.rs` for what a transaction pooler changes).
    pub async fn connect_with(url: &str, pooler: DatabasePooler) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = Engine::from_url(url)?;
        check_tls_parameters(url)?;
        let pooled = pooler == DatabasePooler::Transaction;
        if pooled && engine != Engine::Postgres {
            bail!("database_pooler = \"transaction\" is for PostgreSQL, and database_url is not");
        }
        let normalised = engine.normalise_url(url);
        let pool = AnyPoolOptions::new()
            // Every connection to `sqlite::memory:` is a database of its own: keep one.
            .max_connections(if normalised.contains(":memory:") {
                1
            } else {
                engine.max_connections()
            })
            .acquire_timeout(engine::BUSY_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // Behind a transaction pooler a session setting would stay on whichever
                    // server connection ran it; each transaction sets its own instead.
                    if !pooled {
                        for pragma in engine.session_setup() {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&normalised)
            .await
            .map_err(|e| cannot_open(url, &e))?;
        // The pool created the file; the writer opens it as the pool's connections do.
        let writer = match (engine, sqlite_file(url)) {
            (Engine::Sqlite, Some(file)) => Some(
                sqlite_writer::Writer::open(&file)
                    .map_err(|e| anyhow!("cannot open the database ({}): {e}", describe(url)))?,
            ),
            _ => None,
        };
        Ok(Self {
            pool,
            engine,
            webhook_wake: Default::default(),
            writers: write_tx::WriteQueue::for_engine(engine),
            writer,
            pooled,
            url: url.into(),
        })
    }

    /// Applies pending migrations over the store's own URL.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.migrate_with(None).await
    }

    /// Applies pending migrations, on PostgreSQL over `direct` when given. Several instances
    /// may run this at once on a new database: one applies each migration, the others wait for
    /// it and then find nothing left to do.
    pub async fn migrate_with(&self, direct: Option<&str>) -> anyhow::Result<()> {
        let failed = |e: sqlx::migrate::MigrateError| anyhow!("migration failed: {e}");
        match self.engine {
            Engine::Sqlite => {
                // sqlx takes no lock on SQLite: two processes starting on a new file would
                // both apply 0001, and one would fail on "table already exists". An exclusive
                // flock on a lock file beside the database makes the others wait their turn.
                // Not on the database file itself: a running `serve` holds a shared flock on
                // that one (see `backup::ServeLock`), and every CLI command migrates first.
                let _turn = match sqlite_file(&self.url) {
                    Some(file) => Some(lock_file(file).await?),
                    None => None,
                };
                sqlx::migrate!("migrations/sqlite")
                    .run(&self.pool)
                    .await
                    .map_err(failed)?;
            }
            Engine::Postgres => {
                let url = match direct {
                    Some(url) => url,
                    None if self.pooled => bail!(
                        "migrations cannot run through a transaction pooler: set \
                         migrate_database_url to a direct connection"
                    ),
                    None => &self.url,
                };
                // sqlx holds a session-level advisory lock while it migrates, so the other
                // instances wait. It runs on a connection of its own, closed afterwards: a
                // migration that fails cannot leave the lock held by a pooled connection.
                let mut conn = AnyConnection::connect(url)
                    .await
                    .map_err(|e| cannot_open(url, &e))?;
                let result = sqlx::migrate!("migrations/postgres").run(&mut conn).await;
                let _ = conn.close().await;
                result.map_err(failed)?;
            }
        }
        Ok(())
    }
}

/// The database settings that only make sense together.
fn check_settings(config: &Config) -> anyhow::Result<()> {
    let engine = Engine::from_url(&config.database_url)?;
    if let Some(direct) = &config.migrate_database_url {
        if engine != Engine::Postgres || Engine::from_url(direct)? != Engine::Postgres {
            bail!(
                "migrate_database_url is for PostgreSQL: a direct connection to the database \
                 that database_url reaches through a pooler"
            );
        }
    }
    if config.database_pooler == DatabasePooler::Transaction
        && config.migrate_database_url.is_none()
    {
        bail!(
            "database_pooler = \"transaction\" needs migrate_database_url: migrations hold a \
             session-level advisory lock, which a transaction pooler does not keep"
        );
    }
    Ok(())
}

/// Refuses an `sslmode` sqlx would not understand and an `sslrootcert` that cannot be read,
/// before connecting, with the setting's name in the message.
fn check_tls_parameters(url: &str) -> anyhow::Result<()> {
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(()); // sqlx reports the malformed URL itself
    };
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "sslmode" | "ssl-mode" if !SSL_MODES.contains(&&*value) => bail!(
                "sslmode={value} in database_url is not one of {}",
                SSL_MODES.join(", ")
            ),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                if let Err(e) = std::fs::read(&*value) {
                    bail!("sslrootcert {value} (the CA file in database_url) cannot be read: {e}");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A start-up error that says which database and what to check.
fn cannot_open(url: &str, e: &sqlx::Error) -> anyhow::Error {
    let hint = match e {
        // rustls refusing the certificate surfaces as an I/O error carrying invalid data.
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            " The server's TLS certificate was not accepted: with sslmode=verify-ca or \
             verify-full it must be signed by the CA in sslrootcert (a PEM file) or by a public \
             CA, and verify-full also checks that it names the URL's host."
        }
        sqlx::Error::Tls(_) => {
            " TLS could not be set up as sslmode asks: require, verify-ca and verify-full need \
             a server that offers TLS."
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("28000") => {
            " The server's pg_hba.conf refused this connection; if it accepts TLS only, set \
             sslmode=verify-full (or require) in the URL."
        }
        sqlx::Error::PoolTimedOut => {
            " No connection within 5 seconds: is the server running and reachable?"
        }
        _ => "",
    };
    anyhow!("cannot open the database ({}): {e}.{hint}", describe(url))
}

/// An exclusive lock for migrating `file` (on `{file}-migrate.lock`, created when missing),
/// held until the returned handle is dropped.
async fn lock_file(file: PathBuf) -> anyhow::Result<std::fs::File> {
    let mut name = file.into_os_string();
    name.push("-migrate.lock");
    let file = PathBuf::from(name);
    let shown = file.display().to_string();
    tokio::task::spawn_blocking(move || {
        let handle = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&file)?;
        handle.lock()?;
        Ok::<_, std::io::Error>(handle)
    })
    .await?
    .map_err(|e| anyhow!("cannot lock {shown} to migrate it: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{check_settings, check_tls_parameters};
    use crate::config::{Config, DatabasePooler};

    #[test]
    fn a_transaction_pooler_needs_a_direct_url_for_migrations_and_postgres() {
        let mut c = Config {
            database_url: "postgres://u@pooler:6432/gh".into(),
            database_pooler: DatabasePooler::Transaction,
            ..Config::default()
        };
        let e = check_settings(&c).unwrap_err().to_string();
        assert!(e.contains("needs migrate_database_url"), "{e}");
        c.migrate_database_url = Some("postgres://u@db:5432/gh".into());
        check_settings(&c).unwrap();
        c.migrate_database_url = Some("sqlite://x.db".into());
        let e = check_settings(&c).unwrap_err().to_string();
        assert!(e.contains("migrate_database_url is for PostgreSQL"), "{e}");
    }

    #[test]
    fn an_unknown_sslmode_or_an_unreadable_ca_file_is_named() {
        let e = check_tls_parameters("postgres://u@h/db?sslmode=verify_full")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sslmode=verify_full") && e.contains("verify-full"),
            "{e}"
        );
        let e = check_tls_parameters("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nope.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslrootcert /nope.pem"), "{e}");
        check_tls_parameters("postgres://u@h/db?sslmode=require").unwrap();
    }
}
