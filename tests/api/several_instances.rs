//! Several `gatehouse serve` processes started at once on a database that does not exist yet
//! (SQLite) or is empty (PostgreSQL): one applies the migrations, the others wait for it, and
//! all of them serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use sqlx::Row;

use crate::helpers::{sql, tempdir, Db, TestDb};
use crate::process::{start_with, Server};

/// How many migrations the folder of `engine` holds.
fn migrations(engine: &str) -> i64 {
    std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(engine),
    )
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".sql")
    })
    .count() as i64
}

/// Starts three servers on `url` at the same moment and checks that each is ready, that
/// none logged a failed migration, and that storage records each migration once.
async fn three_at_once(url: &str, engine: &str) {
    let dir = tempdir::Dir::new();
    let (a, b, c) = tokio::join!(
        start_with(url, &dir, &[]),
        start_with(url, &dir, &[]),
        start_with(url, &dir, &[]),
    );
    let servers: [Server; 3] = [a, b, c];
    let client = reqwest::Client::new();
    for s in &servers {
        let ready = client
            .get(format!("{}/readyz", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let log = std::fs::read_to_string(&s.log).unwrap();
        assert!(!log.contains("migration failed"), "{log}");
    }
    let pool = sql(url).await;
    let rows = sqlx::query(
        "SELECT version, COUNT(*) AS n FROM _sqlx_migrations WHERE success GROUP BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len() as i64, migrations(engine));
    for row in rows {
        let n: i64 = row.get("n");
        assert_eq!(
            n,
            1,
            "migration {} recorded {n} times",
            row.get::<i64, _>("version")
        );
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_starting_at_once_on_a_new_sqlite_file_all_serve() {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/gatehouse.db", dir.0.display());
    three_at_once(&url, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_starting_at_once_on_an_empty_database_all_serve_on_postgres() {
    let db = TestDb::new(Db::Postgres).await;
    three_at_once(&db.url, "postgres").await;
    db.cleanup().await;
}
