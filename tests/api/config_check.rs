//! Secrets from files and `gatehouse config check`, through the real binary: a secret given as
//! `GATEHOUSE_…_FILE` is the one the server uses, a value and its file together are refused,
//! and the check prints the settings without a secret and reports each connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;

use reqwest::Client;
use serde_json::json;

use crate::helpers::{redis_url, tempdir, Db, TestDb};
use crate::process::{command, start_without};

/// Runs the binary with `env` (no publishable key of the test helpers unless `env` sets one).
fn run(db_url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    command(db_url, env)
        .env_remove("GATEHOUSE_PUBLISHABLE_KEY")
        .args(args)
        .output()
        .unwrap()
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn secrets_given_as_files_are_the_ones_the_server_uses_and_are_never_printed() {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/files.db", dir.0.display());
    let write = |name: &str, content: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    // As `echo` and Kubernetes write them: with and without a trailing line end.
    let pk_file = write("pk", "pk-read-from-a-file-3141\n");
    let jwt_file = write("jwt", "jwt-secret-read-from-a-file-0123456789abcdef\r\n");
    let metrics_file = write("metrics", "metrics-token-from-file-2718");
    let env = [
        ("GATEHOUSE_PUBLISHABLE_KEY_FILE", pk_file.as_str()),
        ("GATEHOUSE_JWT_SECRET_FILE", jwt_file.as_str()),
        ("GATEHOUSE_METRICS_TOKEN_FILE", metrics_file.as_str()),
    ];

    let out = run(&url, &env, &["config", "check"]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    for secret in [
        "pk-read-from-a-file",
        "jwt-secret-read-from-a-file",
        "metrics-token-from-file",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("jwt_secret = \"***\"  # read from {jwt_file}")),
        "{stdout}"
    );
    assert!(stdout.contains("# redis_url (unset)"), "{stdout}");
    assert!(stdout.contains("jwt_expiry_seconds = 3600"), "{stdout}");
    assert!(
        !std::path::Path::new(&format!("{}/files.db", dir.0.display())).exists(),
        "config check opens no database"
    );

    let server = start_without(&url, &dir, &env, &["GATEHOUSE_PUBLISHABLE_KEY"]).await;
    let client = Client::new();
    let settings = |key: &'static str| {
        client
            .get(format!("{}/auth/v1/settings", server.base))
            .header("apikey", key)
            .send()
    };
    assert_eq!(
        settings("pk-read-from-a-file-3141").await.unwrap().status(),
        200
    );
    assert_eq!(settings(crate::helpers::PK).await.unwrap().status(), 401);
    let session: serde_json::Value = client
        .post(format!("{}/auth/v1/signup", server.base))
        .header("apikey", "pk-read-from-a-file-3141")
        .json(&json!({"email": "files@example.com", "password": "a long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().unwrap();
    let header = token.split('.').next().unwrap();
    use base64::Engine as _;
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header["alg"], "HS256",
        "jwt_secret_file switched signing to HS256"
    );
    let key =
        jsonwebtoken::DecodingKey::from_secret(b"jwt-secret-read-from-a-file-0123456789abcdef");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .expect("signed with the file's content, without its line end");
    let metrics = client
        .get(format!("{}/metrics", server.base))
        .bearer_auth("metrics-token-from-file-2718")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    drop(server);

    // A value and its file, in any mix of environment and TOML, are refused.
    let toml = dir.0.join("gatehouse.toml");
    std::fs::write(
        &toml,
        "jwt_secret = \"jwt-secret-in-the-toml-file-0123456789\"\n",
    )
    .unwrap();
    let toml = toml.display().to_string();
    for (env, args) in [
        (
            vec![
                (
                    "GATEHOUSE_JWT_SECRET",
                    "jwt-secret-in-env-0123456789abcdefgh",
                ),
                ("GATEHOUSE_JWT_SECRET_FILE", jwt_file.as_str()),
            ],
            vec!["config", "check"],
        ),
        (
            vec![("GATEHOUSE_JWT_SECRET_FILE", jwt_file.as_str())],
            vec!["--config", toml.as_str(), "config", "check"],
        ),
    ] {
        let out = run(&url, &env, &args);
        let (_, stderr) = texts(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("jwt_secret and jwt_secret_file are both set"),
            "{stderr}"
        );
        assert!(!stderr.contains("jwt-secret-in"), "{stderr}");
    }
    // A file that is missing or empty stops the start, naming the setting and the path.
    let empty = write("empty", "\n");
    let missing = dir.0.join("missing").display().to_string();
    for (path, why) in [(&empty, "is empty"), (&missing, "cannot read")] {
        let out = run(&url, &[("GATEHOUSE_SMTP_URL_FILE", path)], &["serve"]);
        let (_, stderr) = texts(&out);
        assert!(!out.status.success());
        assert!(
            stderr.contains("smtp_url_file")
                && stderr.contains(path.as_str())
                && stderr.contains(why),
            "{stderr}"
        );
    }
    // An invalid secret from a file is checked like one given directly.
    let short = write("short", "short\n");
    let out = run(
        &url,
        &[("GATEHOUSE_METRICS_TOKEN_FILE", &short)],
        &["config", "check"],
    );
    assert!(!out.status.success());
    assert!(
        texts(&out).1.contains("metrics_token must be"),
        "{:?}",
        texts(&out)
    );
}

#[tokio::test]
async fn config_check_connects_to_each_server_and_names_the_one_that_fails_on_postgres_on_redis() {
    let db = TestDb::new(Db::Postgres).await;
    let dir = tempdir::Dir::new();
    let db_file = dir.0.join("database_url");
    std::fs::write(&db_file, format!("{}\n", db.url)).unwrap();
    let db_file = db_file.display().to_string();
    let sink = crate::smtp_sink::SmtpSink::start().await;
    let smtp = sink.url(Some(("mailer", "smtp-pw-not-printed-6620")));
    let redis = redis_url();
    let env = [
        ("GATEHOUSE_DATABASE_URL_FILE", db_file.as_str()),
        ("GATEHOUSE_REDIS_URL", redis.as_str()),
        ("GATEHOUSE_SMTP_URL", smtp.as_str()),
    ];
    let mut cmd = command("unused", &env);
    cmd.env_remove("GATEHOUSE_DATABASE_URL");
    cmd.args(["config", "check", "--connect"]);
    // Off the runtime: the SMTP sink runs on it and must answer meanwhile.
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("database: ok (PostgreSQL"), "{stderr}");
    assert!(stderr.contains("redis: ok"), "{stderr}");
    assert!(stderr.contains("smtp: ok"), "{stderr}");
    assert!(
        stdout.contains(&format!("# read from {db_file}")),
        "{stdout}"
    );
    assert!(!stdout.contains("smtp-pw-not-printed") && !stderr.contains("smtp-pw-not-printed"));

    // Redis refusing connections: the check says which server failed and exits non-zero.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let dead_redis = format!("redis://{dead_addr}");
    let mut cmd = command(
        "unused",
        &[
            ("GATEHOUSE_DATABASE_URL_FILE", db_file.as_str()),
            ("GATEHOUSE_REDIS_URL", dead_redis.as_str()),
        ],
    );
    cmd.env_remove("GATEHOUSE_DATABASE_URL");
    let out = cmd.args(["config", "check", "--connect"]).output().unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("database: ok") && stderr.contains("redis: FAILED"),
        "{stderr}"
    );
    // Without --connect, nothing is contacted and the same configuration is valid.
    let mut cmd = command(
        "unused",
        &[
            ("GATEHOUSE_DATABASE_URL_FILE", db_file.as_str()),
            ("GATEHOUSE_REDIS_URL", dead_redis.as_str()),
        ],
    );
    cmd.env_remove("GATEHOUSE_DATABASE_URL");
    let out = cmd.args(["config", "check"]).output().unwrap();
    assert!(out.status.success(), "{:?}", texts(&out));
    sink.stop();
    db.cleanup().await;
}
