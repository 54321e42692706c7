//! Redis over TLS, against a redis-server of the test's own that listens for TLS only, with a
//! certificate a CA made for the test signed: `rediss://` with that CA in `redis_ca_file`
//! shares the limits through it, another CA stops the start with an error naming the cause,
//! and `gatehouse config check --connect` reports both through the same connection code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{redis_prefix, tempdir, test_config, Db, TestApp, TestDb};
use crate::own_postgres::TestCa;
use crate::process::command;

/// A redis-server on a free port that speaks TLS only (`--port 0`), killed on drop.
struct TlsRedis {
    port: u16,
    child: Child,
    ca_file: String,
}

impl TlsRedis {
    fn start(ca: &TestCa, dir: &Path) -> Self {
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p.display().to_string()
        };
        let ca_file = write("ca.pem", &ca.ca_pem);
        let cert = write("server.pem", &ca.cert_pem);
        let key = write("server.key", &ca.key_pem);
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
                .args(["--tls-ca-cert-file", &ca_file, "--tls-auth-clients", "no"])
                // `localhost` may resolve to ::1 first: listen there too (if the host has it).
                .args([
                    "--bind",
                    "127.0.0.1 -::1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is needed for this test");
            let mut server = None;
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken: try another
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    server = Some(port);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            match server {
                Some(port) => {
                    return TlsRedis {
                        port,
                        child,
                        ca_file,
                    }
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("a TLS redis-server did not start on any of five free ports");
    }

    /// The certificate names `localhost`.
    fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// `redis-cli` over TLS, the test's own independent look at what the server holds.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", &self.ca_file, "-h", "localhost"])
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_shares_limits_and_a_wrong_ca_stops_the_start() {
    let dir = tempdir::Dir::new();
    let ca = TestCa::new("Gatehouse test Redis CA");
    let redis = TlsRedis::start(&ca, &dir.0);
    let other_ca = dir.0.join("other-ca.pem");
    std::fs::write(&other_ca, TestCa::new("Another CA").ca_pem).unwrap();
    let prefix = redis_prefix();

    let (url, ca_file, p) = (redis.url(), redis.ca_file.clone(), prefix.clone());
    let app = TestApp::spawn(Db::Sqlite, move |c| {
        c.redis_url = Some(gatehouse::config::SecretString::from(url));
        c.redis_ca_file = Some(ca_file);
        c.redis_prefix = p;
    })
    .await;
    let owner = app.person().await;
    let org = app.org(&owner, "TLS").await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/orgs/{org}/api-keys"),
            &owner.token,
            Some(json!({"name": "k", "scopes": [],
                "rate_limits": [{"limit": 5, "window_seconds": 3600}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let key = body["data"]["key"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let res = app
            .client
            .get(app.url("/v1/me"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // Decided in the TLS server, not in memory: its counters are there.
    let keys = redis.cli(&["--scan", "--pattern", &format!("{prefix}:rl:*")]);
    assert!(!keys.trim().is_empty(), "no rate-limit counter in Redis");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "gatehouse_ratelimit_redis_fallbacks_total 0"),
        "a decision was made in memory"
    );
    app.stop().await;

    // Another CA: the start stops, saying why and what to fix.
    let db = TestDb::new(Db::Sqlite).await;
    let mut config = test_config(&db.url);
    config.redis_url = Some(gatehouse::config::SecretString::from(redis.url()));
    config.redis_ca_file = Some(other_ca.display().to_string());
    let e = gatehouse::app::AppState::build(config, gatehouse::clock::Clock::System)
        .await
        .err()
        .expect("a server certificate from another CA must stop the start");
    let e = format!("{e:#}");
    assert!(e.contains("cannot connect to Redis over TLS"), "{e}");
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(e.contains("redis_ca_file"), "{e}");
    db.cleanup().await;

    // `config check --connect` connects the same way.
    let sqlite = format!("sqlite://{}/check.db", dir.0.display());
    for (ca_file, ok) in [
        (redis.ca_file.as_str(), true),
        (&*other_ca.to_string_lossy(), false),
    ] {
        let out = command(
            &sqlite,
            &[
                ("GATEHOUSE_REDIS_URL", redis.url().as_str()),
                ("GATEHOUSE_REDIS_CA_FILE", ca_file),
            ],
        )
        .args(["config", "check", "--connect"])
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{stderr}");
        if ok {
            let line = format!("redis: ok (localhost:{} answered PONG)", redis.port);
            assert!(stderr.contains(&line), "{stderr}");
        } else {
            assert!(
                stderr.contains("redis: FAILED: TLS: invalid peer certificate"),
                "{stderr}"
            );
        }
    }

    // A CA file with a URL that is not TLS is a configuration error.
    let out = command(
        &sqlite,
        &[
            ("GATEHOUSE_REDIS_URL", "redis://localhost:1"),
            ("GATEHOUSE_REDIS_CA_FILE", redis.ca_file.as_str()),
        ],
    )
    .args(["config", "check"])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("redis_ca_file is for TLS"), "{stderr}");
}
