//! PostgreSQL over TLS, against a cluster of the test's own that accepts TLS connections only
//! and whose certificate a CA made for the test signed: `sslmode=verify-full` with that CA
//! in `sslrootcert` serves, another CA stops the start with an error naming the cause, a host
//! the certificate does not name is refused by `verify-full`, and `sslmode=disable`
//! is refused by the server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{tempdir, PK};
use crate::own_postgres::{OwnCluster, TestCa};
use crate::process::{command, start_with};

/// Runs `gatehouse serve` that must fail to start: its exit code and everything it printed.
/// A server that starts after all is killed after a minute and fails the test.
fn failed_start(db_url: &str, dir: &tempdir::Dir) -> String {
    let log = dir
        .0
        .join(format!("start-{}.log", uuid::Uuid::new_v4().simple()));
    let out = std::fs::File::create(&log).unwrap();
    let outbox = dir.0.join("outbox").display().to_string();
    let mut child = command(
        db_url,
        &[
            ("GATEHOUSE_LISTEN", "127.0.0.1:0"),
            ("GATEHOUSE_MAIL_OUTBOX_DIR", &outbox),
        ],
    )
    .arg("serve")
    .stdout(Stdio::from(out.try_clone().unwrap()))
    .stderr(Stdio::from(out))
    .spawn()
    .unwrap();
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(!status.success(), "serve exited 0: {text}");
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "serve started (or hung) on {db_url}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_verify_full_serves_a_wrong_ca_stops_the_start_and_plain_is_refused() {
    let ca = TestCa::new("Gatehouse test PostgreSQL CA");
    let Some(cluster) = OwnCluster::start_tls_only(&ca) else {
        return; // skipped with a notice (PostgreSQL's programs are missing, outside CI)
    };
    let ca_file = cluster.dir().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let other_ca_file = cluster.dir().join("other-ca.pem");
    std::fs::write(&other_ca_file, TestCa::new("Another CA").ca_pem).unwrap();
    let dir = tempdir::Dir::new();

    // verify-full: the certificate chains to sslrootcert and names the host.
    let good = cluster.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );
    let server = start_with(&good, &dir, &[]).await;
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/auth/v1/signup", server.base))
        .header("apikey", PK)
        .json(&json!({"email": "tls@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let ready = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    drop(server);
    // What the server holds arrived over TLS (pg_hba.conf has hostssl lines only).
    let users = psql(&cluster, &ca_file, "SELECT count(*) FROM users");
    assert_eq!(users, "1");

    // Another CA: the start stops, saying why.
    let wrong = cluster.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            other_ca_file.display()
        ),
    );
    let out = failed_start(&wrong, &dir);
    assert!(out.contains("cannot open the database"), "{out}");
    assert!(out.contains("invalid peer certificate"), "{out}");
    assert!(
        out.contains("must be signed by the CA in sslrootcert"),
        "{out}"
    );

    // verify-ca checks the chain too (`gatehouse migrate` runs and exits). With sqlx 0.8.6 and
    // rustls 0.23.24+ it also checks the host name, as verify-full does (sqlx issue 3793,
    // docs/production.md), so it is given the name the certificate holds.
    let out = command(
        &cluster.url(
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={}", ca_file.display()),
        ),
        &[],
    )
    .arg("migrate")
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The certificate names localhost, not 127.0.0.1: verify-full refuses the address.
    let by_ip = cluster.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );
    let out = failed_start(&by_ip, &dir);
    assert!(out.contains("not valid for name"), "{out}");
    assert!(out.contains("checks that it names the URL's host"), "{out}");

    // No TLS: the server's pg_hba.conf has no line for it.
    let plain = cluster.url("127.0.0.1", "sslmode=disable");
    let out = failed_start(&plain, &dir);
    assert!(out.contains("cannot open the database"), "{out}");
    assert!(out.contains("no encryption"), "{out}");
    assert!(out.contains("if it accepts TLS only, set sslmode"), "{out}");
}

/// One value from the cluster through `psql` over TLS (verify-full), as the test's own
/// independent check of what the server holds.
fn psql(cluster: &OwnCluster, ca_file: &std::path::Path, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(format!(
            "postgresql://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            cluster.port,
            ca_file.display()
        ))
        .args(["-tAc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
