//! The naming convention that lets `scripts/test` leave out the tests whose service is missing
//! (see helpers.rs): every test whose own body mentions PostgreSQL or the shared Redis carries
//! the marker in its name. `postgres_url()`/`redis_url()` check the name of the test that
//! calls them at run time too; this scan also covers tests that reach a service only in a task
//! they spawn, and fails without any service running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use crate::helpers::{NEEDS_POSTGRES, NEEDS_REDIS};

/// What in a test's body means it needs a service: (marker, mentions).
const NEEDS: &[(&str, &[&str])] = &[
    (NEEDS_POSTGRES, &["Db::Postgres", "postgres_url("]),
    (NEEDS_REDIS, &["redis_url("]),
];

/// The module path of a file in tests/api, as main.rs names it (`#[path]` renames included).
fn module_of(file: &Path, main: &str) -> String {
    let rel = file
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api"))
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .trim_end_matches("/mod")
        .replace('/', "::");
    let renamed = format!("#[path = \"{rel}.rs\"]\nmod ");
    match main.split_once(&renamed) {
        Some((_, rest)) => rest.split(';').next().unwrap().trim().to_string(),
        None => rel,
    }
}

/// Every `#[test]`/`#[tokio::test]` function of `src`: (name, body).
fn tests_in(src: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = src;
    while let Some(at) = ["#[test]", "#[tokio::test"]
        .iter()
        .filter_map(|a| rest.find(a))
        .min()
    {
        rest = &rest[at + 2..];
        let Some(fn_at) = rest.find("fn ") else { break };
        let name: String = rest[fn_at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let open = fn_at + rest[fn_at..].find('{').unwrap();
        // Braces inside strings or chars are rare in test bodies and balance out where they
        // occur; a body cut short only makes the scan look at less.
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push((name, rest[open..end].to_string()));
        rest = &rest[end..];
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_test_that_needs_a_service_is_named_for_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    let main = std::fs::read_to_string(dir.join("main.rs")).unwrap();
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let mut wrong = Vec::new();
    let mut seen = 0;
    for file in files.iter().filter(|f| !f.ends_with("naming.rs")) {
        let src = std::fs::read_to_string(file).unwrap();
        let module = module_of(file, &main);
        for (name, body) in tests_in(&src) {
            seen += 1;
            let full = format!("{module}::{name}");
            for (marker, mentions) in NEEDS {
                if mentions.iter().any(|m| body.contains(m)) && !full.contains(marker) {
                    wrong.push(format!("{full} needs `{marker}` in its name"));
                }
            }
        }
    }
    assert!(seen > 30, "the scan found only {seen} tests");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_a_misnamed_test() {
    let src = "#[tokio::test]\nasync fn kill_9() {\n    let db = TestDb::new(Db::Postgres).await;\n    { db.x(); }\n}\n\n#[test]\nfn fine() {}\n";
    let found = tests_in(src);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].0, "kill_9");
    assert!(found[0].1.contains("Db::Postgres") && found[0].1.ends_with("db.x(); }\n"));
    assert_eq!(found[1], ("fine".to_string(), "{".to_string()));
}
