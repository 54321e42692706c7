//! The SQLite and PostgreSQL migration folders say the same thing: the same files, and the
//! same lines but for type spellings that mean the same on both engines and the differences
//! listed (with a reason) in `ALLOWED`, or inside a block one engine needs alone (`-- sqlite
//! only:` or `-- postgres only:` up to `-- end sqlite only` / `-- end postgres only`, its
//! reason in the comment that opens it). A new difference fails here, naming file and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Spellings that differ by engine and mean the same: (SQLite, PostgreSQL). Each side is
/// replaced, as whole words, by a neutral placeholder before lines are compared.
const SAME_MEANING: &[(&str, &str)] = &[
    // A 64-bit key the engine numbers itself (SQLite's INTEGER is 64-bit).
    ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"),
    // Raw bytes.
    ("BLOB", "BYTEA"),
    // Floating point.
    ("REAL", "DOUBLE PRECISION"),
];

/// Lines that may differ beyond `SAME_MEANING`: (file, SQLite line, PostgreSQL line), after
/// normalisation and trimming. `None` on one side: a line only that engine has. Every entry
/// must still match something, so the list cannot outlive the difference it allows.
const ALLOWED: &[(&str, Option<&str>, Option<&str>)] = &[];

/// Which lines of a file lie in a block only `engine` runs (`-- {engine} only:` up to
/// `-- end {engine} only`, both included). An unclosed block is an error.
fn engine_only(text: &str, engine: &str) -> Result<Vec<bool>, String> {
    let (open, close) = (
        format!("-- {engine} only:"),
        format!("-- end {engine} only"),
    );
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with(&open) {
            inside = true;
        }
        out.push(inside);
        if t == close {
            if !inside {
                return Err(format!("{close:?} closes no block"));
            }
            inside = false;
        }
    }
    if inside {
        return Err(format!("a {open:?} block is never closed"));
    }
    Ok(out)
}

fn folder(engine: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(engine)
}

fn sql_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect()
}

/// `text` with each whole-word `from` replaced by `to`.
fn replace_words(text: &str, from: &str, to: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + from.len()..].chars().next();
        out.push_str(&rest[..at]);
        if word(before) || word(after) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

/// A line with its engine's spellings replaced by placeholders, trailing space trimmed.
fn normalise(line: &str, postgres: bool) -> String {
    let mut line = line.trim_end().to_string();
    for (i, (sqlite, pg)) in SAME_MEANING.iter().enumerate() {
        let ours = if postgres { pg } else { sqlite };
        line = replace_words(&line, ours, &format!("<same meaning #{i}>"));
    }
    line
}

/// The differences between one file's two versions that `ALLOWED` does not cover, marking
/// the allowances used.
fn differences(file: &str, sqlite: &str, pg: &str, used: &mut [bool]) -> Vec<String> {
    let a: Vec<String> = sqlite.lines().map(|l| normalise(l, false)).collect();
    let b: Vec<String> = pg.lines().map(|l| normalise(l, true)).collect();
    let (only_a, only_b) = match (engine_only(sqlite, "sqlite"), engine_only(pg, "postgres")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return vec![format!("{file}: {e}")],
    };
    let mut allowed = |s: Option<&str>, p: Option<&str>| {
        let hit = ALLOWED.iter().position(|(f, x, y)| {
            *f == file
                && x.map(str::trim) == s.map(str::trim)
                && y.map(str::trim) == p.map(str::trim)
        });
        if let Some(u) = hit.and_then(|i| used.get_mut(i)) {
            *u = true;
        }
        hit.is_some()
    };
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        let (x, y) = (a.get(i).map(String::as_str), b.get(j).map(String::as_str));
        if x.is_some() && (x == y || (y.is_some() && allowed(x, y))) {
            i += 1;
            j += 1;
        } else if only_a.get(i) == Some(&true) || (x.is_some() && allowed(x, None)) {
            i += 1;
        } else if only_b.get(j) == Some(&true) || (y.is_some() && allowed(None, y)) {
            j += 1;
        } else {
            out.push(format!(
                "{file}: SQLite line {} {:?} differs from PostgreSQL line {} {:?}; \
                 make them say the same, or add the spelling to SAME_MEANING or the \
                 lines to ALLOWED with the reason",
                i + 1,
                sqlite.lines().nth(i).unwrap_or("<end of file>"),
                j + 1,
                pg.lines().nth(j).unwrap_or("<end of file>"),
            ));
            // The first difference of a file is enough: later lines may only be shifted.
            break;
        }
    }
    out
}

#[test]
fn the_two_migration_folders_differ_only_where_allowed() {
    let (lite, pg) = (folder("sqlite"), folder("postgres"));
    let names = sql_files(&lite);
    assert!(!names.is_empty(), "no migrations in {}", lite.display());
    let pg_names = sql_files(&pg);
    let only: Vec<_> = names.symmetric_difference(&pg_names).collect();
    assert!(
        only.is_empty(),
        "migration files present for one engine only: {only:?}"
    );
    let mut used = vec![false; ALLOWED.len()];
    let mut problems = Vec::new();
    for name in &names {
        let a = std::fs::read_to_string(lite.join(name)).unwrap();
        let b = std::fs::read_to_string(pg.join(name)).unwrap();
        problems.extend(differences(name, &a, &b, &mut used));
    }
    for (entry, used) in ALLOWED.iter().zip(&used) {
        if !*used {
            problems.push(format!(
                "ALLOWED entry {entry:?} matches nothing any more: remove it"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn a_new_difference_is_reported_with_its_file_and_line() {
    let sqlite = "CREATE TABLE t (\n    seq INTEGER PRIMARY KEY AUTOINCREMENT,\n    b BLOB\n);\n";
    let same = "CREATE TABLE t (\n    seq BIGSERIAL PRIMARY KEY,\n    b BYTEA\n);\n";
    assert!(differences("0099_x.sql", sqlite, same, &mut []).is_empty());
    let other = "CREATE TABLE t (\n    seq BIGSERIAL PRIMARY KEY,\n    b TEXT\n);\n";
    let found = differences("0099_x.sql", sqlite, other, &mut []);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("0099_x.sql: SQLite line 3 \"    b BLOB\""),
        "{}",
        found[0]
    );
    // A block one engine runs alone is skipped; one left open is reported.
    let rebuilt = "-- sqlite only: no ALTER COLUMN\nCREATE TABLE t2 (a TEXT);\n-- end sqlite only\nCREATE INDEX i ON t (b);\n";
    let altered = "-- postgres only:\nALTER TABLE t ALTER COLUMN a DROP NOT NULL;\n-- end postgres only\nCREATE INDEX i ON t (b);\n";
    assert!(differences("0099_x.sql", rebuilt, altered, &mut []).is_empty());
    let unclosed = "-- sqlite only: oops\nCREATE INDEX i ON t (b);\n";
    let found = differences(
        "0099_x.sql",
        unclosed,
        "CREATE INDEX i ON t (b);\n",
        &mut [],
    );
    assert!(found[0].contains("never closed"), "{found:?}");
    // Spellings only count as whole words, and only on their own engine's side.
    assert_eq!(normalise("blob_id BLOBS", false), "blob_id BLOBS");
    assert_ne!(normalise("b BYTEA", false), normalise("b BYTEA", true));
}

/// 0021 rebuilds SQLite's `users` table (to drop `NOT NULL` from `email`): a database made by
/// the migrations before it keeps every user column, every row that hangs off a user, and
/// foreign keys that still point at `users` and still cascade.
#[tokio::test]
async fn sqlite_users_survive_the_0021_rebuild_with_their_foreign_keys() {
    use sqlx::migrate::Migrator;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::Row;

    let file = std::env::temp_dir().join(format!(
        "gatehouse-0021-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let options = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let all = Migrator::new(folder("sqlite").as_path()).await.unwrap();
    let mut before = Migrator::new(folder("sqlite").as_path()).await.unwrap();
    before.migrations = all
        .migrations
        .iter()
        .filter(|m| m.version < 21)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.unwrap();

    let u = "0b3c8e9e-0000-4000-8000-000000000001";
    for q in [
        format!(
            "INSERT INTO users (id, email, password_hash, email_confirmed_at, confirmation_sent_at, \
             last_sign_in_at, user_metadata, app_metadata, created_at, updated_at, email_change, \
             email_change_confirmed, banned_until) VALUES ('{u}', 'kept@example.com', '$argon2id$x', \
             11, 12, 13, '{{\"a\":1}}', '{{\"provider\":\"email\"}}', 14, 15, 'next@example.com', 1, 16)"
        ),
        "INSERT INTO organizations (id, name, created_by, created_at, updated_at) \
         VALUES ('org_1', 'Kept', 'x', 1, 1)"
            .into(),
        format!("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ('org_1', '{u}', 'owner', 1)"),
        format!("INSERT INTO sessions (id, user_id, amr_method, created_at, updated_at) VALUES ('s1', '{u}', 'password', 1, 1)"),
        format!("INSERT INTO refresh_tokens (id, token_hash, session_id, user_id, created_at) VALUES ('r1', 'h1', 's1', '{u}', 1)"),
        format!("INSERT INTO mfa_factors (id, user_id, factor_type, status, created_at, updated_at) VALUES ('f1', '{u}', 'totp', 'verified', 1, 1)"),
    ] {
        sqlx::query(&q).execute(&pool).await.unwrap();
    }
    let columns = "id, email, password_hash, email_confirmed_at, confirmation_sent_at, \
                   last_sign_in_at, user_metadata, app_metadata, created_at, updated_at, \
                   email_change, email_change_confirmed, banned_until";
    let row_text = |r: &sqlx::sqlite::SqliteRow| -> Vec<String> {
        (0..13)
            .map(|i| {
                r.try_get::<Option<String>, _>(i)
                    .ok()
                    .flatten()
                    .or_else(|| {
                        r.try_get::<Option<i64>, _>(i)
                            .ok()
                            .flatten()
                            .map(|n| n.to_string())
                    })
                    .unwrap_or_else(|| "NULL".into())
            })
            .collect()
    };
    let select = format!("SELECT {columns} FROM users");
    let old = row_text(&sqlx::query(&select).fetch_one(&pool).await.unwrap());

    all.run(&pool).await.unwrap();

    let new = row_text(&sqlx::query(&select).fetch_one(&pool).await.unwrap());
    assert_eq!(old, new, "every column of the user survives");
    let (anon,): (i64,) = sqlx::query_as("SELECT is_anonymous FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(anon, 0, "an existing user is a permanent one");
    let (fk_on,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(fk_on, 1, "the migration turned foreign keys back on");
    for table in [
        "sessions",
        "refresh_tokens",
        "memberships",
        "mfa_factors",
        "organizations",
    ] {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "{table}: the rebuild cascaded nothing away");
    }
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(broken.is_empty(), "{} dangling references", broken.len());
    for table in ["sessions", "memberships", "mfa_factors", "web_sessions"] {
        let parents: Vec<String> = sqlx::query(&format!("PRAGMA foreign_key_list({table})"))
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("table"))
            .collect();
        assert!(parents.iter().any(|p| p == "users"), "{table}: {parents:?}");
    }
    assert!(
        !sqlx::query("SELECT name FROM sqlite_master WHERE name = 'users_0021'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .any(|_| true),
        "the rebuild's scratch name is gone"
    );
    // The address stays unique; no address at all is allowed, more than once.
    let dup = sqlx::query(
        "INSERT INTO users (id, email, created_at, updated_at) VALUES ('u2', 'kept@example.com', 1, 1)",
    )
    .execute(&pool)
    .await;
    assert!(dup.is_err(), "email is still UNIQUE");
    for id in ["u3", "u4"] {
        sqlx::query(&format!(
            "INSERT INTO users (id, email, is_anonymous, created_at, updated_at) VALUES ('{id}', NULL, 1, 1, 1)"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    // Deleting the user still cascades to what hangs off it.
    sqlx::query(&format!("DELETE FROM users WHERE id = '{u}'"))
        .execute(&pool)
        .await
        .unwrap();
    for table in ["sessions", "refresh_tokens", "memberships", "mfa_factors"] {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} rows of the deleted user");
    }
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = file.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
