//! Two real `gatehouse serve` processes on one PostgreSQL database and one Redis: limits are
//! shared exactly, sessions and key revocations cross instances, and a Redis outage neither
//! hangs nor fails requests (or answers 503 for a fail-closed policy).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::{Client, Response};
use serde_json::{json, Value};

use crate::helpers::{
    parts, redis_prefix, redis_url, tempdir, wait_until_subscribed, Db, OwnRedis, TestDb,
    FANOUT_WITHIN, PK,
};
use crate::process::{start_with, Server};

/// Two instances sharing one database and one Redis prefix.
struct Pair {
    a: Server,
    b: Server,
    db: TestDb,
    _dir: tempdir::Dir,
}

impl Pair {
    /// Starts both on a fresh PostgreSQL database. `redis` is the URL the instances use (an
    /// [`OwnRedis`]; `None`: the shared one); `extra` is more environment.
    async fn start(redis: Option<&str>, extra: &[(&str, &str)]) -> Pair {
        let redis = redis.map_or_else(redis_url, str::to_string);
        let db = TestDb::new(Db::Postgres).await;
        let _dir = tempdir::Dir::new();
        let prefix = redis_prefix();
        let mut env = vec![
            ("GATEHOUSE_REDIS_URL", redis.as_str()),
            ("GATEHOUSE_REDIS_PREFIX", prefix.as_str()),
            // Only the limits a test sets bind: never the organization's default.
            ("GATEHOUSE_RATE_LIMIT_ORG", "100000/60s"),
            ("GATEHOUSE_LOG", "info"),
            // A loaded test machine can stall a process past the default 50 ms, and a
            // decision that times out is made in memory: counts would no longer be exact.
            // An outage still costs a request at most this, within the 2 s no-hang bound.
            ("GATEHOUSE_REDIS_TIMEOUT_MS", "1000"),
            // One deployment, one public URL: it is the tokens' issuer, which every
            // instance checks.
            ("GATEHOUSE_PUBLIC_URL", "http://gatehouse.test"),
        ];
        env.extend_from_slice(extra);
        // One after the other: the first migrates the database and stores the signing key.
        let a = start_with(&db.url, &_dir, &env).await;
        let b = start_with(&db.url, &_dir, &env).await;
        wait_until_subscribed(&redis, &prefix, 2).await;
        Pair { a, b, db, _dir }
    }

    /// The warnings both instances logged, for failure messages.
    fn warnings(&self) -> String {
        [&self.a, &self.b]
            .iter()
            .flat_map(|s| {
                std::fs::read_to_string(&s.log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("WARN"))
                    .map(|l| format!("{}: {l}\n", s.base))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn bases(&self) -> [String; 2] {
        [self.a.base.clone(), self.b.base.clone()]
    }

    /// Each instance's count of decisions made in memory because Redis did not answer.
    async fn fallbacks(&self, c: &Client) -> [u64; 2] {
        let mut n = [0; 2];
        for (i, base) in self.bases().iter().enumerate() {
            let text = c.get(format!("{base}/metrics")).send().await.unwrap();
            n[i] = text
                .text()
                .await
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("gatehouse_ratelimit_redis_fallbacks_total "))
                .map(|v| v.parse::<f64>().unwrap() as u64)
                .expect("/metrics counts Redis fallbacks");
        }
        n
    }

    async fn stop(self) {
        let Pair { a, b, db, _dir } = self;
        drop((a, b));
        db.cleanup().await;
    }
}

/// A client whose requests may not take longer than 2 s: the no-hang bound.
fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    parts(req.send().await.unwrap()).await
}

/// Signs up a fresh user on `base`; returns the session.
async fn sign_up(c: &Client, base: &str) -> Value {
    let email = format!("scale-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, session) = send(
        c.post(format!("{base}/auth/v1/signup"))
            .header("apikey", PK)
            .json(&json!({"email": email, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    session
}

/// A new user's organization on `base`; returns (access token, org id).
async fn owner_and_org(c: &Client, base: &str) -> (String, String) {
    let token = sign_up(c, base).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, org) = send(
        c.post(format!("{base}/v1/orgs"))
            .bearer_auth(&token)
            .json(&json!({"name": "Scale"})),
    )
    .await;
    assert_eq!(status, 201, "{org}");
    (token, org["data"]["id"].as_str().unwrap().to_string())
}

/// A key of `org` limited to `limit` per hour; returns (secret, id).
async fn key(c: &Client, base: &str, token: &str, org: &str, limit: u32) -> (String, String) {
    let (status, body) = send(
        c.post(format!("{base}/v1/orgs/{org}/api-keys"))
            .bearer_auth(token)
            .json(&json!({"name": "k", "scopes": [],
                "rate_limits": [{"limit": limit, "window_seconds": 3600}]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    (body["data"]["key"].as_str().unwrap().to_string(), id)
}

async fn me(c: &Client, base: &str, bearer: &str) -> Response {
    c.get(format!("{base}/v1/me"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}

/// Sends `total` key requests alternating between the instances, 20 at a time; returns
/// how many answered each status.
async fn burst(c: &Client, bases: &[String; 2], key: &str, total: usize) -> Vec<(u16, usize)> {
    let statuses: Vec<u16> = stream::iter(0..total)
        .map(|i| {
            let req = c.get(format!("{}/v1/me", bases[i % 2])).bearer_auth(key);
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Waits until a request on each instance is decided by Redis again (no new fallback).
async fn wait_until_shared(pair: &Pair, c: &Client, probe: &str) {
    for (i, base) in pair.bases().iter().enumerate() {
        for tries in 0.. {
            assert!(tries < 100, "{base} did not go back to Redis within 10 s");
            let before = pair.fallbacks(c).await[i];
            let status = me(c, base, probe).await.status();
            if status == 200 && pair.fallbacks(c).await[i] == before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_admit_exactly_the_limit_together() {
    let pair = Pair::start(None, &[]).await;
    let c = client();
    let (token, org) = owner_and_org(&c, &pair.a.base).await;
    let (k, _) = key(&c, &pair.a.base, &token, &org, 40).await;
    let counts = burst(&c, &pair.bases(), &k, 200).await;
    let fell_back = pair.fallbacks(&c).await;
    assert_eq!(
        counts,
        vec![(200, 40), (429, 160)],
        "(status, count); decisions made in memory on A and B: {fell_back:?}\n{}",
        pair.warnings()
    );
    let res = me(&c, &pair.b.base, &k).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-ratelimit-limit"], "40");
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_from_one_instance_refreshes_on_the_other() {
    let pair = Pair::start(None, &[]).await;
    let c = client();
    let session = sign_up(&c, &pair.a.base).await;
    let (status, refreshed) = send(
        c.post(format!(
            "{}/auth/v1/token?grant_type=refresh_token",
            pair.b.base
        ))
        .header("apikey", PK)
        .json(&json!({"refresh_token": session["refresh_token"]})),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_ne!(refreshed["refresh_token"], session["refresh_token"]);
    let token = refreshed["access_token"].as_str().unwrap();
    let (status, body) = send(c.get(format!("{}/v1/me", pair.a.base)).bearer_auth(token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["email"], session["user"]["email"]);
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_on_one_instance_is_refused_by_the_other_within_a_second() {
    let pair = Pair::start(None, &[]).await;
    let c = client();
    let (token, org) = owner_and_org(&c, &pair.a.base).await;
    let (k, id) = key(&c, &pair.a.base, &token, &org, 1000).await;
    assert_eq!(me(&c, &pair.b.base, &k).await.status(), 200, "B caches it");
    let (status, body) = send(
        c.delete(format!("{}/v1/orgs/{org}/api-keys/{id}", pair.a.base))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let revoked_at = Instant::now();
    loop {
        let (status, body) = parts(me(&c, &pair.b.base, &k).await).await;
        if status == 401 {
            assert_eq!(body["error"]["details"]["reason"], "revoked", "{body}");
            break;
        }
        assert_eq!(
            status, 200,
            "until B hears of it, it uses its cache: {body}"
        );
        assert!(
            revoked_at.elapsed() < FANOUT_WITHIN,
            "B still admits the key {FANOUT_WITHIN:?} after it was revoked on A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_added_on_one_instance_is_listed_by_the_other_at_once() {
    let pair = Pair::start(None, &[]).await;
    let c = client();
    let (owner, org) = owner_and_org(&c, &pair.a.base).await;
    let bob = sign_up(&c, &pair.b.base).await;
    let bob_token = bob["access_token"].as_str().unwrap();
    let orgs_on_b = || async {
        let (status, me) = parts(me(&c, &pair.b.base, bob_token).await).await;
        assert_eq!(status, 200, "{me}");
        me["data"]["organizations"].as_array().unwrap().len()
    };
    assert_eq!(orgs_on_b().await, 0, "B caches Bob's empty list");
    let (status, body) = send(
        c.post(format!("{}/v1/orgs/{org}/invitations", pair.a.base))
            .bearer_auth(&owner)
            .json(&json!({"email": bob["user"]["email"], "role": "member"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap();
    let (status, body) = send(
        c.post(format!("{}/v1/invitations/{id}/accept", pair.a.base))
            .bearer_auth(bob_token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let added_at = Instant::now();
    while orgs_on_b().await == 0 {
        assert!(
            added_at.elapsed() < FANOUT_WITHIN,
            "B still lists no organization {FANOUT_WITHIN:?} after A added Bob"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thread_continued_on_two_instances_sends_its_whole_history() {
    // Each instance keeps the history of the threads it stored; a turn stored by the other
    // instance must make it read the thread again, never send the model a history with a gap.
    let (upstream, mock) = crate::chat::mock_server().await;
    let pair = Pair::start(None, &[("GATEHOUSE_UPSTREAM_URL", upstream.as_str())]).await;
    let c = client();
    let (owner, org) = owner_and_org(&c, &pair.a.base).await;
    let (status, body) = send(
        c.post(format!("{}/v1/orgs/{org}/api-keys", pair.a.base))
            .bearer_auth(&owner)
            .json(&json!({"name": "chat", "scopes": ["chat:write"]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let key = body["data"]["key"].as_str().unwrap().to_string();
    let mut thread = Value::Null;
    for (base, message) in [
        (&pair.a.base, "one"),
        (&pair.a.base, "two"),
        (&pair.b.base, "three"),
        (&pair.a.base, "four"),
        (&pair.b.base, "five"),
    ] {
        let (status, body) = send(
            c.post(format!("{base}/v1/chat"))
                .header("x-api-key", &key)
                .json(&json!({ "message": message, "thread_id": thread })),
        )
        .await;
        assert_eq!(status, 200, "{message}: {body}");
        thread = body["data"]["thread_id"].clone();
    }
    let asked = mock.asked.lock().unwrap().clone();
    let sent: Vec<Vec<String>> = asked
        .iter()
        .map(|(body, _)| {
            body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["content"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    let mut expected = Vec::new();
    for (i, message) in ["one", "two", "three", "four", "five"].iter().enumerate() {
        expected.push(message.to_string());
        assert_eq!(sent[i], expected, "turn {}", i + 1);
        expected.push("Hello, world".to_string());
    }
    pair.stop().await;
}

/// One request of the background load: when it started (since the load began), how long it
/// took, and its status or error.
type Outcome = (Duration, Duration, Result<u16, String>);

/// Sends key requests from 8 tasks, alternating instances, until `stop` is set.
fn load(
    c: &Client,
    bases: [String; 2],
    key: &str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    let began = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    (0..8)
        .map(|_| {
            let (c, bases, key) = (c.clone(), bases.clone(), key.to_string());
            let (stop, next) = (stop.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let base = &bases[next.fetch_add(1, Ordering::Relaxed) % 2];
                    let at = Instant::now();
                    let r = c
                        .get(format!("{base}/v1/me"))
                        .bearer_auth(&key)
                        .send()
                        .await;
                    let r = r.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
                    out.push((at - began, at.elapsed(), r));
                }
                out
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_redis_mid_load_neither_hangs_nor_fails() {
    let mut own = OwnRedis::start();
    let pair = Pair::start(Some(&own.url()), &[]).await;
    let c = client();
    let (token, org) = owner_and_org(&c, &pair.a.base).await;
    let (busy, _) = key(&c, &pair.a.base, &token, &org, 100).await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&c, pair.bases(), &busy, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    own.kill();
    tokio::time::sleep(Duration::from_secs(4)).await; // past one breaker period
    let in_outage = pair.fallbacks(&c).await;
    own.restart();
    tokio::time::sleep(Duration::from_secs(2)).await; // reconnecting under load
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await.unwrap());
    }
    assert!(
        outcomes.len() > 50,
        "the load ran: {} requests",
        outcomes.len()
    );
    for (at, took, r) in &outcomes {
        if !matches!(r, Ok(200 | 429)) {
            panic!("a request sent at {at:?} answered {r:?} after {took:?}");
        }
    }
    assert!(
        in_outage.iter().all(|&n| n > 0),
        "both instances decided in memory during the outage: {in_outage:?}"
    );
    // Redis is back: once each instance decides there again, limits are shared again.
    let (probe, _) = key(&c, &pair.a.base, &token, &org, 1000).await;
    wait_until_shared(&pair, &c, &probe).await;
    let before = pair.fallbacks(&c).await;
    let (fresh, _) = key(&c, &pair.a.base, &token, &org, 25).await;
    let counts = burst(&c, &pair.bases(), &fresh, 100).await;
    let after = pair.fallbacks(&c).await;
    assert_eq!(
        counts,
        vec![(200, 25), (429, 75)],
        "(status, count); in-memory decisions {before:?} -> {after:?}\n{}",
        pair.warnings()
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fail_closed_policy_answers_503_while_redis_is_down() {
    let mut own = OwnRedis::start();
    let fail_closed = [("GATEHOUSE_RATE_LIMIT_FAIL_CLOSED", "api_key")];
    let pair = Pair::start(Some(&own.url()), &fail_closed).await;
    let c = client();
    let (token, org) = owner_and_org(&c, &pair.a.base).await;
    let (k, _) = key(&c, &pair.a.base, &token, &org, 1000).await;
    for base in pair.bases() {
        assert_eq!(me(&c, &base, &k).await.status(), 200);
    }
    own.kill();
    for i in 0..10 {
        let res = me(&c, &pair.bases()[i % 2], &k).await;
        assert_eq!(res.status(), 503, "request {i}");
        assert_eq!(res.headers()["retry-after"], "1");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    }
    own.restart();
    for base in pair.bases() {
        for tries in 0.. {
            match me(&c, &base, &k).await.status().as_u16() {
                200 => break,
                503 if tries < 100 => {}
                s => panic!("{base} answers {s} after Redis came back ({tries} tries)"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    pair.stop().await;
}

/// A signed widget call to `base`, with a given nonce.
async fn widget_chat(c: &Client, base: &str, widget: &str, s: &Value, nonce: &str) -> (u16, Value) {
    let path = format!("/v1/widgets/{widget}/chat");
    let body = json!({"message": "hello"}).to_string();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let secret = s["signing_secret"].as_str().unwrap();
    let sig = crate::widgets::hex_hmac(
        secret.as_bytes(),
        format!("{ts}.{nonce}.POST.{path}.{body}").as_bytes(),
    );
    send(
        c.post(format!("{base}{path}"))
            .header("origin", "https://shop.example.com")
            .bearer_auth(s["session_token"].as_str().unwrap())
            .header("x-gatehouse-timestamp", ts.to_string())
            .header("x-gatehouse-nonce", nonce)
            .header("x-gatehouse-signature", format!("v1={sig}"))
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widget_request_replayed_to_another_instance_is_refused_and_rotation_crosses_instances() {
    let pair = Pair::start(None, &[]).await;
    let c = client();
    let (token, org) = owner_and_org(&c, &pair.a.base).await;
    let (status, w) = send(
        c.post(format!("{}/v1/orgs/{org}/widgets", pair.a.base))
            .bearer_auth(&token)
            .json(&json!({"name": "Help", "allowed_origins": ["https://shop.example.com"]})),
    )
    .await;
    assert_eq!(status, 201, "{w}");
    let id = w["data"]["id"].as_str().unwrap().to_string();
    let (_, t) = send(
        c.post(format!("{}/v1/orgs/{org}/widgets/{id}/tokens", pair.a.base))
            .bearer_auth(&token),
    )
    .await;
    let (status, s) = send(
        c.post(format!("{}/v1/widgets/{id}/session", pair.a.base))
            .header("origin", "https://shop.example.com")
            .json(&json!({"token": t["data"]["token"]})),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    let s = s["data"].clone();
    // A session opened on A is good on B (the session key is shared through storage)…
    let (status, body) = widget_chat(&c, &pair.b.base, &id, &s, "nonce-for-instance-b-0001").await;
    assert_eq!(status, 200, "{body}");
    // … and a nonce used on A is refused on B: the replay cache is in Redis.
    let (status, body) = widget_chat(&c, &pair.a.base, &id, &s, "nonce-used-twice-00000001").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = widget_chat(&c, &pair.b.base, &id, &s, "nonce-used-twice-00000001").await;
    assert_eq!(
        (status, body["error"]["details"]["reason"].as_str()),
        (401, Some("replayed")),
        "{body}"
    );
    // Rotating the secret on A ends the session on B within a second.
    let (status, _) = send(
        c.post(format!(
            "{}/v1/orgs/{org}/widgets/{id}/rotate-secret",
            pair.a.base
        ))
        .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200);
    let rotated = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let (status, body) = widget_chat(
            &c,
            &pair.b.base,
            &id,
            &s,
            &format!("nonce-after-rotation-{n:04}"),
        )
        .await;
        if status == 401 {
            assert_eq!(
                body["error"]["details"]["reason"], "session_expired",
                "{body}"
            );
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            rotated.elapsed() < FANOUT_WITHIN,
            "B still accepts the old session {FANOUT_WITHIN:?} after rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pair.stop().await;
}
