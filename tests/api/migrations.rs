//! The SQLite and PostgreSQL migration folders say the same thing: the same files, and the
//! same lines but for type spellings that mean the same on both engines and the differences
//! listed (with a reason) in `ALLOWED`. A new difference fails here, naming file and line.
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
        } else if x.is_some() && allowed(x, None) {
            i += 1;
        } else if y.is_some() && allowed(None, y) {
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
    // Spellings only count as whole words, and only on their own engine's side.
    assert_eq!(normalise("blob_id BLOBS", false), "blob_id BLOBS");
    assert_ne!(normalise("b BYTEA", false), normalise("b BYTEA", true));
}
