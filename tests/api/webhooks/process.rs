//! Real `gatehouse serve` processes: an event survives kill -9, and two instances on one
//! PostgreSQL database deliver a burst exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Client;
use serde_json::{json, Value};

use super::{verifies, Hit, Receiver, Reply};
use crate::helpers::{parts, tempdir, Db, TestDb, PK};
use crate::process::start_with;
use crate::promises_process::terminate;

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    parts(req.send().await.unwrap()).await
}

/// A user, an organization and an endpoint at `url` on `base`; returns (token, org, secret).
async fn prepare(c: &Client, base: &str, url: &str) -> (String, String, String) {
    let email = format!("hooks-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, session) = send(
        c.post(format!("{base}/auth/v1/signup"))
            .header("apikey", PK)
            .json(&json!({"email": email, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let token = session["access_token"].as_str().unwrap().to_string();
    let (status, org) = send(
        c.post(format!("{base}/v1/orgs"))
            .bearer_auth(&token)
            .json(&json!({"name": "Hooks"})),
    )
    .await;
    assert_eq!(status, 201);
    let org = org["data"]["id"].as_str().unwrap().to_string();
    let (status, ep) = send(
        c.post(format!("{base}/v1/orgs/{org}/webhooks"))
            .bearer_auth(&token)
            .json(&json!({"url": url, "event_types": ["api_key.created"]})),
    )
    .await;
    assert_eq!(status, 201, "{ep}");
    let secret = ep["data"]["secret"].as_str().unwrap().to_string();
    (token, org, secret)
}

async fn create_key(c: &Client, base: &str, token: &str, org: &str) -> String {
    let (status, k) = send(
        c.post(format!("{base}/v1/orgs/{org}/api-keys"))
            .bearer_auth(token)
            .json(&json!({"name": "k"})),
    )
    .await;
    assert_eq!(status, 201, "{k}");
    k["data"]["id"].as_str().unwrap().to_string()
}

const FAST_ENV: [(&str, &str); 4] = [
    ("GATEHOUSE_WEBHOOKS_ALLOW_PRIVATE", "true"),
    ("GATEHOUSE_WEBHOOKS_POLL_INTERVAL_MS", "50"),
    ("GATEHOUSE_WEBHOOKS_RETRY_SCHEDULE", "0,1,1,1"),
    ("GATEHOUSE_WEBHOOKS_TIMEOUT_MS", "1000"),
];

async fn event_survives_kill_9(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    let c = Client::new();
    let receiver = Receiver::start().await;
    // The first attempt hangs: the server is killed while it waits, before any answer.
    receiver.script(&[Reply::Hang]);
    let mut server = start_with(&test_db.url, &dir, &FAST_ENV).await;
    let (token, org, secret) = prepare(&c, &server.base, &receiver.url).await;
    let key_id = create_key(&c, &server.base, &token, &org).await;
    receiver.until("the first attempt", |h| h.len() == 1).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _again = start_with(&test_db.url, &dir, &FAST_ENV).await;
    let hits = receiver
        .until("the delivery after restart", |h| h.len() >= 2)
        .await;
    assert_eq!(hits[0].id(), hits[1].id(), "the same event, at least once");
    assert!(verifies(&secret, &hits[1]));
    assert_eq!(hits[1].json()["data"]["id"], json!(key_id));
    drop(_again);
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_before_kill_9_is_delivered_after_restart_on_sqlite() {
    event_survives_kill_9(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_before_kill_9_is_delivered_after_restart_on_postgres() {
    event_survives_kill_9(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_deliver_a_burst_exactly_once_on_postgres() {
    let test_db = TestDb::new(Db::Postgres).await;
    let dir = tempdir::Dir::new();
    let c = Client::new();
    let receiver = Receiver::start().await;
    // One deployment, one public URL: the tokens' issuer, which both instances check.
    let mut env = FAST_ENV.to_vec();
    env.push(("GATEHOUSE_PUBLIC_URL", "http://gatehouse.test"));
    let mut a = start_with(&test_db.url, &dir, &env).await;
    let mut b = start_with(&test_db.url, &dir, &env).await;
    let (token, org, secret) = prepare(&c, &a.base, &receiver.url).await;
    const N: usize = 40;
    let bases = [a.base.clone(), b.base.clone()];
    let keys = futures_util::future::join_all((0..N).map(|i| {
        let (c, base, token, org) = (c.clone(), bases[i % 2].clone(), token.clone(), org.clone());
        async move { create_key(&c, &base, &token, &org).await }
    }))
    .await;
    receiver.until("every event", |h| h.len() >= N).await;
    // Both instances stop gracefully: a worker finishes the attempts it has claimed before
    // it exits, so once both have exited nothing more can arrive, and a second send of any
    // event would be among the hits.
    terminate(&mut a);
    terminate(&mut b);
    let hits = receiver.hits();
    assert_eq!(hits.len(), N, "no event twice");
    let mut ids: Vec<&str> = hits.iter().map(Hit::id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), N);
    let mut delivered: Vec<String> = hits
        .iter()
        .map(|h| h.json()["data"]["id"].as_str().unwrap().to_string())
        .collect();
    delivered.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(delivered, expected);
    assert!(hits.iter().all(|h| verifies(&secret, h)));
    for s in [&a, &b] {
        let log = std::fs::read_to_string(&s.log).unwrap();
        assert!(
            log.contains("webhook attempt"),
            "both instances delivered some of the burst"
        );
    }
    drop((a, b));
    test_db.cleanup().await;
}
