//! Contention is answered, not suffered: a write lock held by someone else, a PostgreSQL row
//! lock held past the lock timeout, a pool with no connection to give and a database that
//! is gone each get a 503 `service_unavailable` with `Retry-After` (or `/readyz`'s 503),
//! never a 500 or a hang; and the same request succeeds once the contention is over.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::helpers::{parts, Db, TestApp, TestDb};

/// Asserts the storage-busy answer of `/v1`: 503, `service_unavailable`, `Retry-After: 1`.
async fn assert_busy(res: reqwest::Response) {
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = parts(res).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    assert_eq!(retry.as_deref(), Some("1"), "Retry-After on a busy answer");
}

async fn rename(app: &TestApp, token: &str, org: &str, name: &str) -> reqwest::Response {
    app.v1(Method::PATCH, &format!("/orgs/{org}"), token)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_write_lock_held_by_another_process_is_answered_503_with_retry_after() {
    let app = TestApp::spawn(Db::Sqlite, |_| {}).await;
    let owner = app.person().await;
    let org = app.org(&owner, "Locked").await;

    // Another process (here: another connection to the same file) holds the write lock.
    let mut other = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    // The write waits out the busy timeout, then gives up with a 503, not a 500.
    assert_busy(rename(&app, &owner.token, &org, "Renamed").await).await;
    // A read is not blocked by the writer (WAL).
    let (status, body) = app
        .call(Method::GET, &format!("/orgs/{org}"), &owner.token, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Locked");

    // Once the lock is released, the same request goes through.
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let (status, body) = parts(rename(&app, &owner.token, &org, "Renamed").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Renamed");
    other.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_lock_held_past_the_lock_timeout_is_answered_503_with_retry_after_on_postgres() {
    let app = TestApp::spawn(Db::Postgres, |_| {}).await;
    let owner = app.person().await;
    let org = app.org(&owner, "Locked").await;

    let mut other = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
        .bind(&org)
        .execute(&mut other)
        .await
        .unwrap();

    assert_busy(rename(&app, &owner.token, &org, "Renamed").await).await;

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let (status, body) = parts(rename(&app, &owner.token, &org, "Renamed").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Renamed");
    other.close().await.unwrap();
    app.stop().await;
}

/// A TCP relay between the server and PostgreSQL that the test can freeze (bytes stop
/// flowing, connections stay open: a database that hangs) or cut (every connection reset,
/// new ones closed at once: a database that is down).
struct PgRelay {
    port: u16,
    frozen: watch::Sender<bool>,
    cut: Arc<AtomicBool>,
    pumps: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl PgRelay {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, _) = watch::channel(false);
        let cut = Arc::new(AtomicBool::new(false));
        let pumps: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (f, c, p) = (frozen.clone(), cut.clone(), pumps.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let a = tokio::spawn(pump(cr, sw, f.subscribe()));
                let b = tokio::spawn(pump(sr, cw, f.subscribe()));
                p.lock()
                    .unwrap()
                    .extend([a.abort_handle(), b.abort_handle()]);
            }
        })
        .abort_handle();
        PgRelay {
            port,
            frozen,
            cut,
            pumps,
            accept,
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }

    /// Resets every open connection and refuses new ones until [`PgRelay::restore`].
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for p in self.pumps.lock().unwrap().drain(..) {
            p.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for PgRelay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // While frozen, what was read is held back: the peer waits for an answer forever.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A server whose PostgreSQL connections all go through a relay.
async fn behind_relay() -> (TestApp, PgRelay) {
    let db = TestDb::new(Db::Postgres).await;
    let url = reqwest::Url::parse(&db.url).unwrap();
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let relay = PgRelay::start(upstream).await;
    let mut relayed = url.clone();
    relayed.set_host(Some("127.0.0.1")).unwrap();
    relayed.set_port(Some(relay.port)).unwrap();
    let relayed = relayed.to_string();
    // The story's own database, reached through the relay; the TestDb is dropped with the
    // app's (it cleans up through the admin URL, not the relay).
    let app = TestApp::spawn_on(db, move |c| c.database_url = relayed).await;
    (app, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_answered_503_with_retry_after_and_recovers_on_postgres() {
    let (app, relay) = behind_relay().await;
    let owner = app.person().await;
    let org = app.org(&owner, "Pool").await;

    // The database stops answering: every pooled connection is stuck, and no new one can be
    // opened. A request waits for a connection for the acquire timeout, then gets a 503.
    relay.freeze(true);
    let stuck: Vec<_> = (0..4)
        .map(|i| {
            let req = app
                .v1(Method::PATCH, &format!("/orgs/{org}"), &owner.token)
                .json(&json!({ "name": format!("n{i}") }));
            tokio::spawn(async move { req.send().await.unwrap() })
        })
        .collect();
    for r in stuck {
        assert_busy(r.await.unwrap()).await;
    }

    relay.freeze(false);
    let (status, body) = parts(rename(&app, &owner.token, &org, "Back").await).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_storage_is_down_and_200_when_it_is_back_on_postgres() {
    let (app, relay) = behind_relay().await;
    let ready = || async {
        let res = app.client.get(app.url("/readyz")).send().await.unwrap();
        parts(res).await
    };
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ready", "storage": "ok"}));

    relay.cut();
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({"status": "unavailable", "storage": "unreachable"})
    );

    relay.restore();
    let (status, body): (u16, Value) = ready().await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
    drop(relay);
}
