//! Promises a real `gatehouse` process keeps about its own lifetime: a chat answered 200
//! survives `kill -9`; `last_used_at` is written on SIGTERM, by the write-behind timer, and
//! again after a failed batch; a running server picks up `gatehouse jwt rotate`; and a
//! refresh token presented after the reuse interval ends its session (on both engines).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::{json, Value};

use crate::helpers::{eventually, parts, refused, sql, tempdir, Db, TestApp, TestDb, PK};
use crate::process::{owner_org_key, send, start_with, Server};
use crate::story;

/// Sends SIGTERM through the `kill` command (no libc in the tests) and waits for a clean exit.
pub(crate) fn terminate(server: &mut Server) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

fn kill_9(server: &mut Server) {
    server.child.kill().unwrap(); // SIGKILL: nothing is flushed
    server.child.wait().unwrap();
}

/// A key's `last_used_at` as the API reports it (read from storage).
async fn last_used(c: &Client, base: &str, token: &str, org: &str, id: &str) -> Value {
    let (status, body) = send(
        c.get(format!("{base}/v1/orgs/{org}/api-keys/{id}"))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["last_used_at"].clone()
}

/// A thread's messages as "role: content", read back through the API (from storage).
async fn thread_messages(c: &Client, base: &str, key: &str, thread: &str) -> Vec<String> {
    let (status, body) = send(
        c.get(format!("{base}/v1/threads/{thread}"))
            .header("x-api-key", key),
    )
    .await;
    assert_eq!(status, 200, "the thread survives the crash: {body}");
    body["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect()
}

async fn chat_answered_200_survives_kill_9(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    let (upstream, _mock) = crate::chat::mock_server().await;
    let env = [("GATEHOUSE_UPSTREAM_URL", upstream.as_str())];
    let c = Client::new();
    let mut server = start_with(&test_db.url, &dir, &env).await;
    let (_, _, key, _) = owner_org_key(&c, &server.base, &["chat:write", "threads:read"]).await;
    let (status, body) = send(
        c.post(format!("{}/v1/chat", server.base))
            .header("x-api-key", &key)
            .json(&json!({"message": "remember this turn"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let thread = body["data"]["thread_id"].as_str().unwrap().to_string();
    kill_9(&mut server);
    let again = start_with(&test_db.url, &dir, &env).await;
    assert_eq!(
        thread_messages(&c, &again.base, &key, &thread).await,
        ["user: remember this turn", "assistant: Hello, world"],
        "both messages of the answered turn survive kill -9"
    );
    drop(again);
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_answered_200_survives_kill_9_with_both_messages_on_sqlite() {
    chat_answered_200_survives_kill_9(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_answered_200_survives_kill_9_with_both_messages_on_postgres() {
    chat_answered_200_survives_kill_9(Db::Postgres).await;
}

/// A signed widget chat call on `base` with `session` (token, signing secret), from `origin`.
async fn widget_say(
    c: &Client,
    base: &str,
    widget: &str,
    session: &Value,
    origin: &str,
    message: &str,
) -> Value {
    use base64::Engine;
    let path = format!("/v1/widgets/{widget}/chat");
    let body = json!({ "message": message }).to_string();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nonce =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let secret = session["signing_secret"].as_str().unwrap();
    let signature = crate::widgets::hex_hmac(
        secret.as_bytes(),
        format!("{ts}.{nonce}.POST.{path}.{body}").as_bytes(),
    );
    let (status, answer) = send(
        c.post(format!("{base}{path}"))
            .header("origin", origin)
            .bearer_auth(session["session_token"].as_str().unwrap())
            .header("x-gatehouse-timestamp", ts.to_string())
            .header("x-gatehouse-nonce", nonce)
            .header("x-gatehouse-signature", format!("v1={signature}"))
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["data"].clone()
}

async fn widget_chat_answered_200_survives_kill_9(db: Db) {
    const ORIGIN: &str = "https://shop.example.com";
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    let (upstream, _mock) = crate::chat::mock_server().await;
    let env = [("GATEHOUSE_UPSTREAM_URL", upstream.as_str())];
    let c = Client::new();
    let mut server = start_with(&test_db.url, &dir, &env).await;
    let base = server.base.clone();
    let (token, org, key, _) = owner_org_key(&c, &base, &["threads:read"]).await;
    let (status, w) = send(
        c.post(format!("{base}/v1/orgs/{org}/widgets"))
            .bearer_auth(&token)
            .json(&json!({"name": "Help", "allowed_origins": [ORIGIN]})),
    )
    .await;
    assert_eq!(status, 201, "{w}");
    let widget = w["data"]["id"].as_str().unwrap().to_string();
    let (status, t) = send(
        c.post(format!("{base}/v1/orgs/{org}/widgets/{widget}/tokens"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let (status, session) = send(
        c.post(format!("{base}/v1/widgets/{widget}/session"))
            .header("origin", ORIGIN)
            .json(&json!({ "token": t["data"]["token"] })),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let session = session["data"].clone();
    // The first exchange starts the visitor's thread; the second continues it.
    let first = widget_say(&c, &base, &widget, &session, ORIGIN, "first visit").await;
    let thread = first["thread_id"].as_str().unwrap().to_string();
    let second = widget_say(&c, &base, &widget, &session, ORIGIN, "and again").await;
    assert_eq!(second["thread_id"].as_str(), Some(thread.as_str()));
    kill_9(&mut server);
    let again = start_with(&test_db.url, &dir, &env).await;
    assert_eq!(
        thread_messages(&c, &again.base, &key, &thread).await,
        [
            "user: first visit",
            "assistant: Hello, world",
            "user: and again",
            "assistant: Hello, world"
        ],
        "every message of both answered widget exchanges survives kill -9"
    );
    drop(again);
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widget_chat_answered_200_survives_kill_9_with_its_messages_on_sqlite() {
    widget_chat_answered_200_survives_kill_9(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widget_chat_answered_200_survives_kill_9_with_its_messages_on_postgres() {
    widget_chat_answered_200_survives_kill_9(Db::Postgres).await;
}

async fn last_used_written_on_sigterm(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    // The timer's first batch runs at start; the next would be an hour later. One public URL
    // (the tokens' issuer) for both runs, so the owner's token outlives the restart.
    let env = [
        ("GATEHOUSE_WRITE_BEHIND_SECONDS", "3600"),
        ("GATEHOUSE_PUBLIC_URL", "http://gatehouse.test"),
    ];
    let c = Client::new();
    let mut server = start_with(&test_db.url, &dir, &env).await;
    let (token, org, key, id) = owner_org_key(&c, &server.base, &[]).await;
    let (status, body) = send(
        c.get(format!("{}/v1/me", server.base))
            .header("x-api-key", &key),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_used(&c, &server.base, &token, &org, &id).await,
        Value::Null,
        "held in memory until the next batch"
    );
    terminate(&mut server);
    let again = start_with(&test_db.url, &dir, &env).await;
    let at = last_used(&c, &again.base, &token, &org, &id).await;
    assert!(at.is_i64(), "SIGTERM writes the last-used time: {at}");
    drop(again);
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_at_is_written_on_sigterm_on_sqlite() {
    last_used_written_on_sigterm(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_at_is_written_on_sigterm_on_postgres() {
    last_used_written_on_sigterm(Db::Postgres).await;
}

/// Makes every write of `api_keys.last_used_at` fail (a trigger), so a batch fails.
async fn block_last_used(db: &sqlx::AnyPool, engine: Db) {
    let statements: &[&str] = match engine {
        Db::Sqlite => &[
            "CREATE TRIGGER block_touch BEFORE UPDATE OF last_used_at ON api_keys \
             BEGIN SELECT RAISE(ABORT, 'blocked by the test'); END",
        ],
        Db::Postgres => &[
            "CREATE FUNCTION block_touch() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'blocked by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER block_touch BEFORE UPDATE OF last_used_at ON api_keys \
             FOR EACH ROW EXECUTE FUNCTION block_touch()",
        ],
    };
    for s in statements {
        sqlx::query(s).execute(db).await.unwrap();
    }
}

async fn unblock_last_used(db: &sqlx::AnyPool, engine: Db) {
    let s = match engine {
        Db::Sqlite => "DROP TRIGGER block_touch",
        Db::Postgres => "DROP TRIGGER block_touch ON api_keys",
    };
    sqlx::query(s).execute(db).await.unwrap();
}

async fn write_behind_retries_a_failed_batch(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    let env = [("GATEHOUSE_WRITE_BEHIND_SECONDS", "1")];
    let c = Client::new();
    let server = start_with(&test_db.url, &dir, &env).await;
    let (token, org, key, id) = owner_org_key(&c, &server.base, &[]).await;
    // The timer writes without a shutdown.
    let me = || async {
        let (status, body) = send(
            c.get(format!("{}/v1/me", server.base))
                .header("x-api-key", &key),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    };
    me().await;
    eventually(
        Duration::from_secs(15),
        "the write-behind timer writes last_used_at",
        || async {
            last_used(&c, &server.base, &token, &org, &id)
                .await
                .is_i64()
        },
    )
    .await;
    let first = last_used(&c, &server.base, &token, &org, &id).await;
    // Storage refuses the next batch; the key is used once more and then no more.
    let pool = sql(&test_db.url).await;
    block_last_used(&pool, db).await;
    tokio::time::sleep(Duration::from_millis(5)).await; // a later millisecond than `first`
    me().await;
    let log = || std::fs::read_to_string(&server.log).unwrap_or_default();
    eventually(
        Duration::from_secs(15),
        "a batch fails while storage refuses it",
        || async { log().contains("writing last-used times failed; will retry") },
    )
    .await;
    assert_eq!(
        last_used(&c, &server.base, &token, &org, &id).await,
        first,
        "the failed batch wrote nothing"
    );
    unblock_last_used(&pool, db).await;
    eventually(
        Duration::from_secs(15),
        "the failed batch is written by a later one, with no new use of the key",
        || async {
            let at = last_used(&c, &server.base, &token, &org, &id).await;
            at.as_i64().unwrap() > first.as_i64().unwrap()
        },
    )
    .await;
    pool.close().await;
    drop(server);
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_behind_timer_writes_last_used_and_retries_a_failed_batch_on_sqlite() {
    write_behind_retries_a_failed_batch(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_behind_timer_writes_last_used_and_retries_a_failed_batch_on_postgres() {
    write_behind_retries_a_failed_batch(Db::Postgres).await;
}

/// The `kid` in an access token's header.
fn kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

async fn running_server_picks_up_jwt_rotate(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    // The reload period is a setting (60 s by default): one second here.
    let env = [("GATEHOUSE_SIGNING_KEY_RELOAD_SECONDS", "1")];
    let c = Client::new();
    let server = start_with(&test_db.url, &dir, &env).await;
    let email = format!("rotate-{}@example.com", uuid::Uuid::new_v4().simple());
    let sign_in = || async {
        let (status, s) = send(
            c.post(format!("{}/auth/v1/token?grant_type=password", server.base))
                .header("apikey", PK)
                .json(&json!({"email": email, "password": "correct horse battery"})),
        )
        .await;
        assert_eq!(status, 200, "{s}");
        s["access_token"].as_str().unwrap().to_string()
    };
    let (status, s) = send(
        c.post(format!("{}/auth/v1/signup", server.base))
            .header("apikey", PK)
            .json(&json!({"email": email, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    let old_token = s["access_token"].as_str().unwrap().to_string();
    let old_kid = kid(&old_token);
    let out = crate::process::command(&test_db.url, &[])
        .args(["jwt", "rotate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The served key set is the one the server signs with: poll it (cheap), then sign in.
    let jwks = || async {
        let jwks: Value = c
            .get(format!("{}/auth/v1/.well-known/jwks.json", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks
    };
    eventually(
        Duration::from_secs(15),
        "the running server loads the rotated key",
        || async { jwks().await["keys"].as_array().unwrap().len() == 2 },
    )
    .await;
    let new_token = sign_in().await;
    assert_ne!(kid(&new_token), old_kid, "it signs with the rotated key");
    let jwks = jwks().await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&kid(&new_token).as_str()) && kids.contains(&old_kid.as_str()),
        "the JWKS serves the new key and keeps the retired one: {kids:?}"
    );
    for token in [&old_token, &new_token] {
        let (status, body) = send(c.get(format!("{}/v1/me", server.base)).bearer_auth(token)).await;
        assert_eq!(status, 200, "tokens of both keys verify: {body}");
    }
    drop(server);
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_picks_up_jwt_rotate_on_sqlite() {
    running_server_picks_up_jwt_rotate(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_picks_up_jwt_rotate_on_postgres() {
    running_server_picks_up_jwt_rotate(Db::Postgres).await;
}

story!(
    a_refresh_token_reused_after_the_interval_ends_the_session,
    setup: |db| TestApp::spawn_with_clock(
        db,
        gatehouse::clock::Clock::manual(gatehouse::clock::Clock::System.now_ms()),
        |_| {}
    ),
    |app: TestApp| async move {
        let (_, _, session) = app.new_user().await;
        let access = session["access_token"].as_str().unwrap().to_string();
        let first = session["refresh_token"].as_str().unwrap().to_string();
        let (status, s2) = parts(app.refresh(&first).await).await;
        assert_eq!(status, 200, "{s2}");
        let second = s2["refresh_token"].as_str().unwrap().to_string();
        // The default interval is 10 s.
        app.state.edge.clock.advance_ms(10_000);
        let (status, again) = parts(app.refresh(&first).await).await;
        assert_eq!(status, 200, "at the interval's last millisecond: {again}");
        assert_eq!(again["refresh_token"], json!(second), "the same successor");
        app.state.edge.clock.advance_ms(1);
        let (status, body) = parts(app.refresh(&first).await).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("refresh_token_already_used")),
            "{body}"
        );
        let (status, body) = parts(app.refresh(&second).await).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("refresh_token_not_found")),
            "the session's newest token is gone too: {body}"
        );
        let res = app
            .auth(Method::GET, "/user")
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(res).await, "403 session_not_found", "the session's access token is refused");
        app
    }
);
