//! The API reference (`docs/api.md`) and `/openapi.json` list the same operations: every
//! route of the docs' tables is described, and every described operation has its row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{parts, Db, TestApp};

/// The methods an OpenAPI path item may hold as operations.
const METHODS: &[&str] = &[
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

/// `(METHOD, /path)` of every row of the route tables in `markdown`: the tables whose header
/// starts with `| route |`. Each row's first cell must be one code span, `` `METHOD /path` ``,
/// with an optional query (`?grant_type=…`) that is dropped. A row of another shape is an
/// error, so a route cannot hide from the comparison by being written differently.
fn documented_routes(markdown: &str) -> Result<BTreeSet<(String, String)>, String> {
    let mut routes = BTreeSet::new();
    let mut in_route_table = false;
    for (n, line) in markdown.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_route_table = false;
            continue;
        }
        let first = line
            .trim_start_matches('|')
            .split(" | ")
            .next()
            .unwrap_or("")
            .trim();
        if first == "route" {
            in_route_table = true;
            continue;
        }
        if !in_route_table || first.starts_with("---") {
            continue;
        }
        let span = first
            .strip_prefix('`')
            .and_then(|s| s.strip_suffix('`'))
            .filter(|s| !s.contains('`'))
            .ok_or_else(|| format!("line {}: not one `METHOD /path`: {first}", n + 1))?;
        let (method, target) = span
            .split_once(' ')
            .ok_or_else(|| format!("line {}: no method in {span}", n + 1))?;
        if !METHODS.contains(&method) {
            return Err(format!("line {}: unknown method {method}", n + 1));
        }
        let path = target.split('?').next().unwrap_or(target);
        if !path.starts_with('/') || path.contains(' ') {
            return Err(format!("line {}: not a path: {target}", n + 1));
        }
        routes.insert((method.to_string(), path.to_string()));
    }
    Ok(routes)
}

/// `(METHOD, /path)` of every operation of an OpenAPI document.
fn described_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let method = method.to_uppercase();
            if METHODS.contains(&method.as_str()) {
                routes.insert((method, path.clone()));
            }
        }
    }
    routes
}

fn show(routes: &BTreeSet<(String, String)>) -> String {
    routes.iter().map(|(m, p)| format!("  {m} {p}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_table_in_the_docs_and_openapi_json_list_the_same_routes() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md");
    let markdown = std::fs::read_to_string(&file).expect("docs/api.md");
    let documented = documented_routes(&markdown).unwrap_or_else(|e| panic!("docs/api.md: {e}"));

    let app = TestApp::spawn(Db::Sqlite, |_| {}).await;
    let (status, doc) = parts(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let described = described_routes(&doc);
    app.stop().await;

    assert!(described.len() > 50, "{} operations", described.len());
    let undocumented: BTreeSet<_> = described.difference(&documented).cloned().collect();
    let undescribed: BTreeSet<_> = documented.difference(&described).cloned().collect();
    assert!(
        undocumented.is_empty() && undescribed.is_empty(),
        "in /openapi.json but not in docs/api.md's route tables:\n{}\
         in docs/api.md's route tables but not in /openapi.json:\n{}",
        show(&undocumented),
        show(&undescribed)
    );
}

#[test]
fn a_route_row_of_another_shape_is_refused_rather_than_skipped() {
    let table = "| route | needs | purpose |\n|---|---|---|\n";
    let ok = documented_routes(&format!(
        "{table}| `POST /auth/v1/token?grant_type=password` | x | y |\n\
         | `POST /auth/v1/token?grant_type=refresh_token` | x | y |\n"
    ))
    .unwrap();
    assert_eq!(
        ok.into_iter().collect::<Vec<_>>(),
        [("POST".to_string(), "/auth/v1/token".to_string())]
    );
    for row in [
        "| `GET /v1/threads`, `DELETE /v1/threads/{id}` | x | y |",
        "| `GET`/`DELETE /v1/threads/{id}` | x | y |",
        "| `ANY /api/{path}` | x | y |",
        "| GET /v1/me | x | y |",
    ] {
        assert!(
            documented_routes(&format!("{table}{row}\n")).is_err(),
            "{row} was accepted"
        );
    }
    // Other tables (no `route` header) are not route tables.
    let other = "| path | auth | purpose |\n|---|---|---|\n| `GET /widget.js` | none | x |\n";
    assert!(documented_routes(other).unwrap().is_empty());
}
