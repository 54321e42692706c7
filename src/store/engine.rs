/// How long a writer waits for its turn, for the SQLite write lock, for a PostgreSQL row
/// lock or for a pooled connection, before the request fails with `Busy` (503).
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The database engines Gatehouse runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// SQLite in a local file (WAL, foreign keys on, synchronous FULL).
    Sqlite,
    /// PostgreSQL or a wire-compatible engine.
    Postgres,
}

impl Engine {
    /// Chooses the engine from the URL scheme.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            anyhow::bail!("database_url must start with sqlite:// or postgres://")
        }
    }

    /// SQLite files are created on first start.
    pub(super) fn normalise_url(self, url: &str) -> String {
        match self {
            Engine::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        }
    }

    pub(super) fn max_connections(self) -> u32 {
        match self {
            Engine::Sqlite => 8,
            Engine::Postgres => 16,
        }
    }

    /// The statement that begins a write transaction, where plain `BEGIN` is not enough:
    /// SQLite's deferred `BEGIN` fails at its first write (`SQLITE_BUSY_SNAPSHOT`, no busy
    /// wait) when another connection committed since its first read; `IMMEDIATE` takes the
    /// write lock up front, waiting for it under `busy_timeout`.
    pub(super) fn begin_write(self) -> Option<&'static str> {
        match self {
            Engine::Sqlite => Some("BEGIN IMMEDIATE"),
            Engine::Postgres => None,
        }
    }

    /// Statements run on every new connection (timeouts as in `BUSY_TIMEOUT`).
    pub(super) fn session_setup(self) -> &'static [&'static str] {
        match self {
            // WAL lets readers run beside the one writer; FULL makes an acknowledged commit
            // durable across power loss, not only across a process crash; busy_timeout makes
            // writers queue instead of failing at once.
            Engine::Sqlite => &[
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = ON",
                "PRAGMA busy_timeout = 5000",
            ],
            Engine::Postgres => &["SET lock_timeout = '5s'"],
        }
    }
}

/// The file a `sqlite:` URL opens, made absolute against the working directory; `None` for
/// PostgreSQL and for an in-memory SQLite database.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    std::path::absolute(options.get_filename()).ok()
}

/// The database a URL names, for people: the SQLite file's absolute path, or the PostgreSQL
/// URL without its password.
pub fn describe(url: &str) -> String {
    if let Some(file) = sqlite_file(url) {
        return format!("SQLite file {}", file.display());
    }
    if url.starts_with("sqlite:") {
        return "SQLite in memory".into();
    }
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            format!("PostgreSQL {u}")
        }
        Err(_) => "PostgreSQL (unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{describe, sqlite_file, Engine, BUSY_TIMEOUT};

    #[test]
    fn a_database_is_described_by_its_absolute_file_or_its_url_without_password() {
        let cwd = std::env::current_dir().unwrap_or_default();
        assert_eq!(
            sqlite_file("sqlite://gatehouse.db"),
            Some(cwd.join("gatehouse.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/gh/data.db?mode=rwc"),
            Some(std::path::PathBuf::from("/var/lib/gh/data.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
        assert_eq!(describe("sqlite::memory:"), "SQLite in memory");
        let pg = describe("postgres://gh:hunter2@db.internal:5432/gatehouse");
        assert_eq!(
            pg,
            "PostgreSQL postgres://gh:***@db.internal:5432/gatehouse"
        );
    }

    #[test]
    fn both_engines_wait_for_locks_as_long_as_busy_timeout_says() {
        let ms = BUSY_TIMEOUT.as_millis();
        let sqlite = format!("PRAGMA busy_timeout = {ms}");
        assert!(Engine::Sqlite.session_setup().contains(&sqlite.as_str()));
        let postgres = format!("SET lock_timeout = '{}s'", BUSY_TIMEOUT.as_secs());
        assert!(Engine::Postgres
            .session_setup()
            .contains(&postgres.as_str()));
    }
}
