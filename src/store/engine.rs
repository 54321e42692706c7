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

    /// Statements run on every new connection.
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
