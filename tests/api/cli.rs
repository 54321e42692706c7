//! The operator's command line as a newcomer meets it: it lists what the deployment holds,
//! refuses to invent a database, reads passwords from standard input, and its changes reach
//! a running server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::{redis_prefix, redis_url, tempdir, test_config, wait_until_subscribed, PK};
use crate::process::{command, start_with};

/// Runs the CLI on `db_url` with `stdin` on its standard input.
fn run(db_url: &str, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut child = command(db_url, env)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(db_url: &str, args: &[&str]) -> String {
    ok_with(db_url, &[], args, "")
}

fn ok_with(db_url: &str, env: &[(&str, &str)], args: &[&str], stdin: &str) -> String {
    let out = run(db_url, env, args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn a_command_where_no_database_exists_refuses_and_creates_none_unless_asked() {
    let dir = tempdir::Dir::new();
    let file = dir.0.join("nowhere.db");
    let url = format!("sqlite://{}", file.display());
    for args in [
        vec!["info"],
        vec!["org", "list"],
        vec!["migrate"],
        vec![
            "user",
            "create",
            "--email",
            "a@example.com",
            "--password-stdin",
        ],
    ] {
        let out = run(&url, &[], &args, "a long password\n");
        assert!(!out.status.success(), "{args:?} ran without a database");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no database at")
                && err.contains(&file.display().to_string())
                && err.contains("--create"),
            "{args:?}: {err}"
        );
        assert!(!file.exists(), "{args:?} created {}", file.display());
    }
    // The relative default is reported as the absolute file it would have opened.
    let out = command("sqlite://relative-gatehouse.db", &[])
        .current_dir(&dir.0)
        .arg("info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let absolute = dir.0.join("relative-gatehouse.db");
    assert!(
        !out.status.success() && err.contains(&absolute.display().to_string()),
        "{err}"
    );
    assert!(!absolute.exists());

    let info = ok(&url, &["--create", "info"]);
    assert!(file.exists(), "--create makes the database");
    assert!(
        info.contains(&format!("database:         SQLite file {}", file.display())),
        "info names the database it opened: {info}"
    );
    assert!(info.contains(PK), "{info}");
    // Once it exists, no flag is needed.
    assert!(ok(&url, &["info"]).contains(&file.display().to_string()));
}

#[tokio::test]
async fn users_orgs_and_keys_are_listed_as_tables_and_as_json_a_page_at_a_time() {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/list.db", dir.0.display());
    // The password comes from standard input, never from the command line.
    let created = ok_with(
        &url,
        &[],
        &[
            "user",
            "create",
            "--create",
            "--email",
            "ann@example.com",
            "--password-stdin",
        ],
        "read from standard input\r\n",
    );
    assert!(created.contains("ann@example.com"), "{created}");
    ok_with(
        &url,
        &[],
        &[
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        "another long password\n",
    );
    let empty = run(
        &url,
        &[],
        &[
            "user",
            "create",
            "--email",
            "c@example.com",
            "--password-stdin",
        ],
        "",
    );
    assert!(
        !empty.status.success(),
        "an empty standard input is no password"
    );
    let both = run(
        &url,
        &[],
        &[
            "user",
            "create",
            "--email",
            "c@example.com",
            "--password",
            "x",
            "--password-stdin",
        ],
        "",
    );
    assert!(
        !both.status.success(),
        "--password and --password-stdin conflict"
    );

    // Users: a table, JSON, and pages.
    let table = ok(&url, &["user", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two users: {table}");
    for column in ["ID", "EMAIL", "CONFIRMED", "LAST SIGN-IN", "CREATED"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(lines[1].contains("ann@example.com") && lines[2].contains("bob@example.com"));
    let all = json_of(&ok(&url, &["user", "list", "--json"]));
    let emails: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["ann@example.com", "bob@example.com"]);
    assert_eq!(all["next_after"], Value::Null);
    assert!(
        all["data"][0].get("password_hash").is_none(),
        "no hash in the listing: {all}"
    );
    let first = json_of(&ok(&url, &["user", "list", "--json", "--limit", "1"]));
    assert_eq!(first["data"].as_array().unwrap().len(), 1);
    let ann = first["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(first["next_after"], json!(ann));
    let second = json_of(&ok(
        &url,
        &["user", "list", "--json", "--limit", "1", "--after", &ann],
    ));
    assert_eq!(second["data"][0]["email"], "bob@example.com");
    assert_eq!(second["next_after"], Value::Null);
    let out = run(&url, &[], &["user", "list", "--after", "no-such-user"], "");
    assert!(
        !out.status.success(),
        "an unknown cursor is an error, not an empty page"
    );

    // The password read from standard input is the one that signs in.
    let state = gatehouse::app::AppState::build(test_config(&url), gatehouse::clock::Clock::System)
        .await
        .unwrap();
    state
        .accounts
        .authenticate("ann@example.com", "read from standard input".into())
        .await
        .expect("the password from stdin, without its line ending, signs in");

    // Organizations with their counts; keys without the key.
    let org = ok(
        &url,
        &[
            "org",
            "create",
            "--name",
            "Acme Ltd",
            "--owner-email",
            "ann@example.com",
        ],
    )
    .trim()
    .to_string();
    let other = ok(
        &url,
        &[
            "org",
            "create",
            "--name",
            "Beta",
            "--owner-email",
            "bob@example.com",
        ],
    )
    .trim()
    .to_string();
    let key = ok(
        &url,
        &[
            "key",
            "create",
            "--org",
            &org,
            "--name",
            "chat backend",
            "--scopes",
            "chat:write",
        ],
    )
    .trim()
    .to_string();
    ok(&url, &["key", "create", "--org", &org, "--name", "old"]);
    let orgs = json_of(&ok(&url, &["org", "list", "--json"]));
    assert_eq!(
        orgs["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (
                o["id"].as_str().unwrap(),
                o["name"].as_str().unwrap(),
                o["members"].clone(),
                o["keys"].clone()
            ))
            .collect::<Vec<_>>(),
        vec![
            (org.as_str(), "Acme Ltd", json!(1), json!(2)),
            (other.as_str(), "Beta", json!(1), json!(0)),
        ]
    );
    let table = ok(&url, &["org", "list"]);
    assert!(table.lines().next().unwrap().contains("MEMBERS"), "{table}");
    assert!(
        table.contains("Acme Ltd") && table.contains(&other),
        "{table}"
    );
    let paged = run(&url, &[], &["org", "list", "--limit", "1"], "");
    assert_eq!(String::from_utf8_lossy(&paged.stdout).lines().count(), 2);
    assert!(
        String::from_utf8_lossy(&paged.stderr).contains(&format!("--after {org}")),
        "the table says how to get the next page"
    );

    let keys = json_of(&ok(&url, &["key", "list", "--org", &org, "--json"]));
    let keys = keys["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (
            &keys[0]["name"],
            &keys[0]["status"],
            &keys[0]["scopes"],
            &keys[0]["start"]
        ),
        (
            &json!("chat backend"),
            &json!("active"),
            &json!(["chat:write"]),
            &json!(&key[..12])
        )
    );
    let listed = serde_json::to_string(keys).unwrap();
    assert!(
        !listed.contains(&key) && !listed.contains("hash"),
        "{listed}"
    );
    let old = keys[1]["id"].as_str().unwrap().to_string();
    ok(&url, &["key", "revoke", "--org", &org, "--id", &old]);
    let table = ok(&url, &["key", "list", "--org", &org]);
    let row = table.lines().find(|l| l.contains(&old)).unwrap();
    assert!(row.contains("revoked") && row.contains("old"), "{table}");
    assert!(table.contains(&format!("{}••••", &key[..12])), "{table}");
    assert!(!table.contains(&key), "the key itself is never listed");
    let none = run(
        &url,
        &[],
        &[
            "key",
            "list",
            "--org",
            "org_0123456789abcdef0123456789abcdef",
        ],
        "",
    );
    assert!(
        !none.status.success(),
        "an unknown organization is an error"
    );
}

/// Polls `check` until it holds (for at most about five seconds: far longer than the
/// fan-out takes, far shorter than the caches' lifetimes this test must beat).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}");
}

#[tokio::test]
async fn a_revoke_and_an_organization_made_by_the_cli_reach_a_running_server_on_redis() {
    let redis = redis_url();
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/shared.db", dir.0.display());
    let prefix = redis_prefix();
    let env = [
        ("GATEHOUSE_REDIS_URL", redis.as_str()),
        ("GATEHOUSE_REDIS_PREFIX", prefix.as_str()),
        ("GATEHOUSE_LOG", "info"),
    ];
    let server = start_with(&url, &dir, &env).await;
    wait_until_subscribed(&redis, &prefix, 1).await;
    let client = Client::new();
    let session: Value = client
        .post(format!("{}/auth/v1/signup", server.base))
        .header("apikey", PK)
        .json(&json!({"email": "ops@example.com", "password": "a long password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().unwrap().to_string();
    let org = ok_with(
        &url,
        &env,
        &[
            "org",
            "create",
            "--name",
            "First",
            "--owner-email",
            "ops@example.com",
        ],
        "",
    )
    .trim()
    .to_string();
    let key = ok_with(
        &url,
        &env,
        &["key", "create", "--org", &org, "--name", "k"],
        "",
    )
    .trim()
    .to_string();
    let me = |bearer: String| {
        let client = client.clone();
        let base = server.base.clone();
        async move {
            let res = client
                .get(format!("{base}/v1/me"))
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Both are now in the server's caches: the key for 60 s, the person's organizations
    // for 10 s. Only the fan-out can make the next answers right at once.
    let (status, _) = me(key.clone()).await;
    assert_eq!(status, 200);
    let (_, before) = me(token.clone()).await;
    let count = |v: &Value| {
        v["data"]["organizations"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };
    assert_eq!(count(&before), 1, "{before}");

    let second = ok_with(
        &url,
        &env,
        &[
            "org",
            "create",
            "--name",
            "Second",
            "--owner-email",
            "ops@example.com",
        ],
        "",
    )
    .trim()
    .to_string();
    eventually("the server still lists one organization", || {
        let token = token.clone();
        async move { count(&me(token).await.1) == 2 }
    })
    .await;
    let (_, after) = me(token.clone()).await;
    assert!(after.to_string().contains(&second), "{after}");

    let id = json_of(&ok_with(
        &url,
        &env,
        &["key", "list", "--org", &org, "--json"],
        "",
    ))["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run(
        &url,
        &env,
        &["key", "revoke", "--org", &org, "--id", &id],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("within 60 s"),
        "with Redis the CLI does not warn of a delay"
    );
    eventually("the server still admits the key the CLI revoked", || {
        let key = key.clone();
        async move {
            let (status, body) = me(key).await;
            status == 401 && body["error"]["details"]["reason"] == "revoked"
        }
    })
    .await;
}
