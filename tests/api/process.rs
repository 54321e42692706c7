//! The real `gatehouse` binary: crash durability, secret-free logs, config errors, the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::{parts, refused, tempdir, Db, TestDb, PK};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A running `gatehouse serve` process, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) log: PathBuf,
}

impl Drop for Server {
    /// A failing test must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The address the server logged for `what` (`"gatehouse listening"`, `"metrics
    /// listening"`): it binds port 0 and says which port it got, so no port is picked by the
    /// test, released and raced for.
    pub(crate) fn logged_addr(&self, what: &str) -> Option<String> {
        logged_addr(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            what,
        )
    }
}

/// The `addr` field of the first log line that says `what` (text or JSON log format).
fn logged_addr(log: &str, what: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(what))?;
    let (_, rest) = line
        .split_once("addr=")
        .or_else(|| line.split_once("\"addr\":\""))?;
    Some(
        rest.chars()
            .take_while(|c| !c.is_whitespace() && *c != '"')
            .collect(),
    )
}

/// An address where nothing listens: bound, then closed. Only for "this refuses connections";
/// nothing may expect to bind it.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The binary with a clean environment: `db_url`, the test publishable key, autoconfirm,
/// debug logs, then `extra` (which may override any of them).
pub(crate) fn command(db_url: &str, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GATEHOUSE_DATABASE_URL", db_url)
        .env("GATEHOUSE_PUBLISHABLE_KEY", PK)
        .env("GATEHOUSE_AUTOCONFIRM", "true")
        .env("GATEHOUSE_LOG", "debug");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

async fn start(db_url: &str, dir: &tempdir::Dir) -> Server {
    start_with(db_url, dir, &[]).await
}

/// Starts `gatehouse serve` on port 0 with `extra` environment, logging to a file in `dir`,
/// reads the address it bound from its log, and waits until `/healthz` answers there.
pub(crate) async fn start_with(db_url: &str, dir: &tempdir::Dir, extra: &[(&str, &str)]) -> Server {
    start_without(db_url, dir, extra, &[]).await
}

/// As [`start_with`], without the variables in `unset` (the test publishable key, say).
pub(crate) async fn start_without(
    db_url: &str,
    dir: &tempdir::Dir,
    extra: &[(&str, &str)],
    unset: &[&str],
) -> Server {
    let log = dir
        .0
        .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
    let out = std::fs::File::create(&log).unwrap();
    // Mails (invitations, say) go to the test's folder, never into the source tree.
    let outbox = dir.0.join("outbox").display().to_string();
    let mut env = vec![
        ("GATEHOUSE_LISTEN", "127.0.0.1:0"),
        ("GATEHOUSE_MAIL_OUTBOX_DIR", outbox.as_str()),
    ];
    env.extend_from_slice(extra);
    let mut cmd = command(db_url, &env);
    for name in unset {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .arg("serve")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let client = Client::new();
    for _ in 0..300 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = logged_addr(&text, "gatehouse listening") {
            let base = format!("http://{addr}");
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status() == 200 {
                    return Server { child, base, log };
                }
            }
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "server did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

async fn post(client: &Client, url: String, body: Value, bearer: Option<&str>) -> (u16, Value) {
    let mut req = client.post(url).header("apikey", PK).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

async fn user_survives_kill_9(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    let client = Client::new();
    let mut server = start(&test_db.url, &dir).await;
    let email = format!("durable-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, session) = post(
        &client,
        format!("{}/auth/v1/signup", server.base),
        json!({"email": email, "password": "survives a crash"}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let token = session["access_token"].as_str().unwrap();
    let (status, org) = post(
        &client,
        format!("{}/v1/orgs", server.base),
        json!({"name": "Durable"}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201);
    let org_id = org["data"]["id"].as_str().unwrap();
    let (status, key) = post(
        &client,
        format!("{}/v1/orgs/{org_id}/api-keys", server.base),
        json!({"name": "k"}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201);
    let key = key["data"]["key"].as_str().unwrap().to_string();
    server.child.kill().unwrap(); // SIGKILL: no chance to flush anything
    server.child.wait().unwrap();
    let mut again = start(&test_db.url, &dir).await;
    let (status, body) = post(
        &client,
        format!("{}/auth/v1/token?grant_type=password", again.base),
        json!({"email": email, "password": "survives a crash"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let me = client
        .get(format!("{}/v1/me", again.base))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "an acknowledged key survives the crash");
    again.child.kill().unwrap();
    again.child.wait().unwrap();
    test_db.cleanup().await;
}

#[tokio::test]
async fn a_user_and_key_created_just_before_kill_9_survive_on_sqlite() {
    user_survives_kill_9(Db::Sqlite).await;
}

#[tokio::test]
async fn a_user_and_key_created_just_before_kill_9_survive_on_postgres() {
    user_survives_kill_9(Db::Postgres).await;
}

#[tokio::test]
async fn a_full_flow_leaves_no_secret_in_the_log() {
    let test_db = TestDb::new(Db::Sqlite).await;
    let dir = tempdir::Dir::new();
    let client = Client::builder().cookie_store(true).build().unwrap();
    // A model server and a Redis that refuse connections, each with a secret in its settings:
    // their failures are logged, their secrets must not be.
    let dead = dead_addr();
    // An SMTP server that takes mail, reached with a password in the URL.
    let sink = crate::smtp_sink::SmtpSink::start().await;
    let smtp_url = sink.url(Some(("mailer", "smtp-pw-never-logged-4471")));
    let mut server = start_with(
        &test_db.url,
        &dir,
        &[
            ("GATEHOUSE_UPSTREAM_URL", &format!("http://{dead}/v1")),
            (
                "GATEHOUSE_UPSTREAM_API_KEY",
                "sk-upstream-never-logged-5521",
            ),
            (
                "GATEHOUSE_REDIS_URL",
                &format!("redis://:redis-pw-never-logged-8812@{dead}"),
            ),
            ("GATEHOUSE_WEBHOOKS_ALLOW_PRIVATE", "true"),
            ("GATEHOUSE_SMTP_URL", &smtp_url),
            // Redis is down: let the magic-link limit decide in memory rather than fail closed.
            ("GATEHOUSE_RATE_LIMIT_FAIL_CLOSED", ""),
        ],
    )
    .await;
    let base = server.base.clone();
    let email = format!("logs-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "pw-that-must-not-leak-7731";
    let (_, s) = post(
        &client,
        format!("{base}/auth/v1/signup"),
        json!({"email": email, "password": password}),
        None,
    )
    .await;
    let (_, s2) = post(
        &client,
        format!("{base}/auth/v1/token?grant_type=password"),
        json!({"email": email, "password": password}),
        None,
    )
    .await;
    let (_, s3) = post(
        &client,
        format!("{base}/auth/v1/token?grant_type=refresh_token"),
        json!({"refresh_token": s2["refresh_token"]}),
        None,
    )
    .await;
    let access = s3["access_token"].as_str().unwrap().to_string();
    let me = client
        .get(format!("{base}/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // An organization and an API key, used both ways and verified.
    let org: Value = client
        .post(format!("{base}/v1/orgs"))
        .bearer_auth(&access)
        .json(&json!({"name": "Logs"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org_id = org["data"]["id"].as_str().unwrap().to_string();
    // A webhook endpoint that refuses connections: its failed deliveries are logged, its
    // signing secrets (and so the signatures) must not be.
    let (_, hook) = post(
        &client,
        format!("{base}/v1/orgs/{org_id}/webhooks"),
        json!({"url": format!("http://{dead}/hook")}),
        Some(&access),
    )
    .await;
    let hook_id = hook["data"]["id"].as_str().unwrap();
    let (_, rotated) = post(
        &client,
        format!("{base}/v1/orgs/{org_id}/webhooks/{hook_id}/rotate-secret"),
        json!({}),
        Some(&access),
    )
    .await;
    let webhook_secrets = [&hook["data"]["secret"], &rotated["data"]["secret"]]
        .map(|s| s.as_str().unwrap()[6..].to_string());
    let created: Value = client
        .post(format!("{base}/v1/orgs/{org_id}/api-keys"))
        .bearer_auth(&access)
        .json(&json!({"name": "k", "scopes": ["keys:verify", "chat:write"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = created["data"]["key"].as_str().unwrap().to_string();
    let res = client
        .get(format!("{base}/v1/me"))
        .header("x-api-key", &api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .post(format!("{base}/v1/keys/verify"))
        .bearer_auth(&api_key)
        .json(&json!({"key": api_key}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .post(format!("{base}/v1/chat"))
        .header("x-api-key", &api_key)
        .json(&json!({"message": "a chat message"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502, "the model server refuses connections");
    // A widget: its secret, a widget token, a session and a signed call.
    let widget: Value = client
        .post(format!("{base}/v1/orgs/{org_id}/widgets"))
        .bearer_auth(&access)
        .json(&json!({"name": "w", "allowed_origins": ["https://shop.example.com"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let widget_id = widget["data"]["id"].as_str().unwrap().to_string();
    let widget_secret = widget["data"]["secret"].as_str().unwrap().to_string();
    let minted: Value = client
        .post(format!(
            "{base}/v1/orgs/{org_id}/widgets/{widget_id}/tokens"
        ))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let widget_token = minted["data"]["token"].as_str().unwrap().to_string();
    let opened: Value = client
        .post(format!("{base}/v1/widgets/{widget_id}/session"))
        .header("origin", "https://shop.example.com")
        .json(&json!({"token": widget_token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session_token = opened["data"]["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let signing_secret = opened["data"]["signing_secret"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/widgets/{widget_id}/chat");
    let body = json!({"message": "hi"}).to_string();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signature = crate::widgets::hex_hmac(
        signing_secret.as_bytes(),
        format!("{ts}.nonce-for-the-log-test-01.POST.{path}.{body}").as_bytes(),
    );
    let res = client
        .post(format!("{base}{path}"))
        .header("origin", "https://shop.example.com")
        .bearer_auth(&session_token)
        .header("x-gatehouse-timestamp", ts.to_string())
        .header("x-gatehouse-nonce", "nonce-for-the-log-test-01")
        .header("x-gatehouse-signature", format!("v1={signature}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        502,
        "signed and admitted; the model server refuses connections"
    );
    let mut typo = api_key.clone();
    typo.push('x');
    let res = client
        .get(format!("{base}/v1/me"))
        .header("x-api-key", &typo)
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await, "401 unauthorized malformed");
    let res = client
        .post(format!("{base}/v1/session"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_string();
    let _ = client
        .get(format!("{base}/v1/me?access_token={access}"))
        .send()
        .await
        .unwrap();
    let (status, _) = post(
        &client,
        format!("{base}/auth/v1/logout?scope=global"),
        json!({}),
        Some(&access),
    )
    .await;
    assert_eq!(status, 204);
    // A failed sign-in with a wrong password must not leak it either.
    let _ = post(
        &client,
        format!("{base}/auth/v1/token?grant_type=password"),
        json!({"email": email, "password": "wrong-pw-also-secret-991"}),
        None,
    )
    .await;
    // An emailed code and link: sent, verified, neither logged.
    let (status, _) = post(
        &client,
        format!("{base}/auth/v1/otp"),
        json!({"email": email}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mail = sink.wait_for(&email, 1, 10).await.remove(0);
    assert!(mail.auth.is_some(), "the client authenticated to SMTP");
    let (code, link_token) = (mail.code(), mail.link_param("token"));
    let (status, otp_session) = post(
        &client,
        format!("{base}/auth/v1/verify"),
        json!({"email": email, "token": code, "type": "email"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{otp_session}");
    sigterm(&server.child);
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("request"), "the log has request lines");
    assert!(
        log.contains("model server failed"),
        "the upstream failure is logged"
    );
    assert!(log.contains("Redis"), "the Redis outage is logged");
    assert!(
        log.contains("webhook attempt"),
        "the webhook attempts are logged"
    );
    let secrets = [
        password.to_string(),
        "wrong-pw-also-secret-991".to_string(),
        s["access_token"].as_str().unwrap().to_string(),
        s["refresh_token"].as_str().unwrap().to_string(),
        s2["refresh_token"].as_str().unwrap().to_string(),
        s3["refresh_token"].as_str().unwrap().to_string(),
        access.clone(),
        cookie,
        api_key.clone(),
        api_key[api_key.len() - 20..].to_string(),
        "sk-upstream-never-logged-5521".to_string(),
        "redis-pw-never-logged-8812".to_string(),
        widget_secret,
        widget_token,
        session_token,
        signing_secret,
        signature,
        webhook_secrets[0].clone(),
        webhook_secrets[1].clone(),
        "smtp-pw-never-logged-4471".to_string(),
        link_token,
        otp_session["access_token"].as_str().unwrap().to_string(),
        otp_session["refresh_token"].as_str().unwrap().to_string(),
    ];
    for secret in secrets {
        assert!(
            !log.contains(&secret),
            "secret leaked into the log: {}…",
            &secret[..8.min(secret.len())]
        );
    }
    // The six-digit code, wherever it stands alone (not inside a longer number).
    let bytes = log.as_bytes();
    for (i, _) in log.match_indices(&code) {
        let before = i
            .checked_sub(1)
            .map(|j| bytes[j].is_ascii_digit())
            .unwrap_or(false);
        let after = bytes.get(i + 6).is_some_and(|b| b.is_ascii_digit());
        assert!(before || after, "the emailed code leaked into the log");
    }
    sink.stop();
    test_db.cleanup().await;
}

/// Sends SIGTERM via the `kill` command (no libc dependency in the tests).
fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn an_unknown_config_key_stops_the_start() {
    let dir = tempdir::Dir::new();
    let file = dir.0.join("gatehouse.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nno_such_setting = 1\n").unwrap();
    let out = command("sqlite::memory:", &[])
        .arg("--config")
        .arg(&file)
        .arg("info")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_setting"), "{err}");
    let out = command("sqlite::memory:", &[("GATEHOUSE_NOT_A_SETTING", "1")])
        .arg("info")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "unknown GATEHOUSE_ variables are errors too"
    );
}

/// Runs a CLI command that must succeed; returns its trimmed stdout.
fn cli(db_url: &str, args: &[&str]) -> String {
    let out = command(db_url, &[]).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn the_cli_creates_users_and_rotates_signing_keys() {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/cli.db", dir.0.display());
    cli(
        &url,
        &[
            "--create",
            "user",
            "create",
            "--email",
            "cli@example.com",
            "--password",
            "from the cli",
        ],
    );
    let org = cli(
        &url,
        &[
            "org",
            "create",
            "--name",
            "Ops",
            "--owner-email",
            "cli@example.com",
        ],
    );
    assert!(org.starts_with("org_"), "only the id is printed: {org}");
    let cli_key = cli(
        &url,
        &[
            "key",
            "create",
            "--org",
            &org,
            "--name",
            "ops",
            "--scopes",
            "chat:write,keys:read",
        ],
    );
    assert!(cli_key.starts_with("gk_live_"), "only the key is printed");
    let out = command(&url, &[])
        .args([
            "key",
            "create",
            "--org",
            &org,
            "--name",
            "bad",
            "--scopes",
            "keys:write",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "keys never manage keys, even from the CLI"
    );
    cli(&url, &["jwt", "rotate"]);
    assert!(cli(&url, &["info"]).contains(PK));
    let server = start(&url, &dir).await;
    let client = Client::new();
    let (status, _) = post(
        &client,
        format!("{}/auth/v1/token?grant_type=password", server.base),
        json!({"email": "cli@example.com", "password": "from the cli"}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let jwks: Value = client
        .get(format!("{}/auth/v1/.well-known/jwks.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: Value = client
        .get(format!("{}/v1/me", server.base))
        .header("x-api-key", &cli_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["org_id"], json!(org));
    assert_eq!(me["data"]["scopes"], json!(["chat:write", "keys:read"]));
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "the retired key stays until its tokens expire"
    );
    drop(server);
    for sub in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["user", "create", "--help"],
        vec!["jwt", "rotate", "--help"],
    ] {
        let out = Command::new(BIN).args(&sub).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{sub:?}");
    }
}

#[tokio::test]
async fn the_cli_invites_an_address_without_enrolling_it() {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/invite.db", dir.0.display());
    cli(
        &url,
        &[
            "--create",
            "user",
            "create",
            "--email",
            "owner@example.com",
            "--password",
            "from the cli",
        ],
    );
    let org = cli(
        &url,
        &[
            "org",
            "create",
            "--name",
            "Ops",
            "--owner-email",
            "owner@example.com",
        ],
    );
    let inv = cli(
        &url,
        &[
            "org",
            "invite",
            "--org",
            &org,
            "--email",
            "New@Example.com",
            "--role",
            "admin",
        ],
    );
    assert!(inv.starts_with("inv_"), "only the id is printed: {inv}");
    let out = command(&url, &[])
        .args([
            "org",
            "invite",
            "--org",
            &org,
            "--email",
            "x@example.com",
            "--role",
            "emperor",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown role is refused");
    let server = start(&url, &dir).await;
    let client = Client::new();
    let (status, session) = post(
        &client,
        format!("{}/auth/v1/token?grant_type=password", server.base),
        json!({"email": "owner@example.com", "password": "from the cli"}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let list: Value = client
        .get(format!("{}/v1/orgs/{org}/invitations", server.base))
        .bearer_auth(session["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = list["data"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            &list[0]["id"],
            &list[0]["email"],
            &list[0]["role"],
            &list[0]["inviter_id"],
            &list[0]["status"]
        ),
        (
            &json!(inv),
            &json!("new@example.com"),
            &json!("admin"),
            &json!("cli"),
            &json!("pending")
        )
    );
}

/// Sends a request to a real server and reads its status and JSON body.
pub(crate) async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    parts(req.send().await.unwrap()).await
}

/// A person with an organization and a key of it with `scopes` on `base`: (token, org,
/// key, key id).
pub(crate) async fn owner_org_key(
    c: &Client,
    base: &str,
    scopes: &[&str],
) -> (String, String, String, String) {
    let email = format!("promise-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, s) = send(
        c.post(format!("{base}/auth/v1/signup"))
            .header("apikey", PK)
            .json(&json!({"email": email, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    let token = s["access_token"].as_str().unwrap().to_string();
    let (status, org) = send(
        c.post(format!("{base}/v1/orgs"))
            .bearer_auth(&token)
            .json(&json!({"name": "Promises"})),
    )
    .await;
    assert_eq!(status, 201, "{org}");
    let org = org["data"]["id"].as_str().unwrap().to_string();
    let (status, k) = send(
        c.post(format!("{base}/v1/orgs/{org}/api-keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "k", "scopes": scopes})),
    )
    .await;
    assert_eq!(status, 201, "{k}");
    let key = k["data"]["key"].as_str().unwrap().to_string();
    let id = k["data"]["id"].as_str().unwrap().to_string();
    (token, org, key, id)
}
