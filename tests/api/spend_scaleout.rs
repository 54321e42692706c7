//! Money budgets across two real `gatehouse serve` processes on one PostgreSQL database and
//! one Redis: 40 concurrent streamed chats end within the budget, and `kill -9` of an
//! instance mid-stream loses no settled cost and holds its reservation only for its lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use reqwest::Client;
use serde_json::json;

use crate::helpers::{
    eventually, redis_prefix, redis_url, tempdir, wait_until_subscribed, Db, TestDb,
};
use crate::process::{owner_org_key, send, start_with, Server};

/// 1 micro-unit per prompt token, 2 per completion token (the environment form of `models`).
const MODELS: &str = "{test-model={input_per_mtok=1000000,output_per_mtok=2000000}}";

struct Pair {
    a: Server,
    b: Server,
    db: TestDb,
    _dir: tempdir::Dir,
    prefix: String,
}

async fn pair(upstream: &str, lease_seconds: &str) -> Pair {
    let redis = redis_url();
    let db = TestDb::new(Db::Postgres).await;
    let _dir = tempdir::Dir::new();
    let prefix = redis_prefix();
    let env = [
        ("GATEHOUSE_REDIS_URL", redis.as_str()),
        ("GATEHOUSE_REDIS_PREFIX", prefix.as_str()),
        ("GATEHOUSE_RATE_LIMIT_ORG", "100000/60s"),
        ("GATEHOUSE_RATE_LIMIT_API_KEY", "100000/60s"),
        ("GATEHOUSE_LOG", "info"),
        // A loaded machine can stall a process: a Redis call that times out would be
        // decided in memory, which is exact for one instance only.
        ("GATEHOUSE_REDIS_TIMEOUT_MS", "2000"),
        ("GATEHOUSE_PUBLIC_URL", "http://gatehouse.test"),
        ("GATEHOUSE_UPSTREAM_URL", upstream),
        ("GATEHOUSE_UPSTREAM_MODEL", "test-model"),
        ("GATEHOUSE_MODELS", MODELS),
        ("GATEHOUSE_SPEND_LEASE_SECONDS", lease_seconds),
    ];
    let a = start_with(&db.url, &_dir, &env).await;
    let b = start_with(&db.url, &_dir, &env).await;
    wait_until_subscribed(&redis, &prefix, 2).await;
    Pair {
        a,
        b,
        db,
        _dir,
        prefix,
    }
}

/// A person, their organization with this monthly budget, and a chat key: (token, org, key).
async fn org_with_budget(c: &Client, base: &str, amount: i64) -> (String, String, String) {
    let (token, org, key, _) = owner_org_key(c, base, &["chat:write"]).await;
    let (status, b) = send(
        c.put(format!("{base}/v1/orgs/{org}/budgets"))
            .bearer_auth(&token)
            .json(&json!({"budgets": [{"amount": amount, "period": "month"}]})),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    (token, org, key)
}

/// The organization's settled spend this month, from the ledger (on `base`).
async fn spent(c: &Client, base: &str, token: &str, org: &str) -> i64 {
    let (status, body) = send(
        c.get(format!("{base}/v1/orgs/{org}/budgets"))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["budgets"][0]["spent"].as_i64().unwrap()
}

/// A streamed chat of "hi" with max_tokens 10 (reserves 34, costs 13), read to its end:
/// its status and last event.
async fn stream_chat(c: &Client, base: &str, key: &str, message: &str) -> (u16, String) {
    let res = c
        .post(format!("{base}/v1/chat"))
        .header("x-api-key", key)
        .json(&json!({"message": message, "max_tokens": 10, "stream": true}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .next_back()
        .unwrap_or("")
        .to_string();
    (status, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_streamed_chats_on_two_instances_end_within_the_budget() {
    let (upstream, _mock) = crate::chat::mock_server().await;
    let p = pair(&upstream, "300").await;
    let c = Client::new();
    let (token, org, key) = org_with_budget(&c, &p.a.base, 300).await;
    let bases = [p.a.base.clone(), p.b.base.clone()];
    let results: Vec<(u16, String)> = stream::iter(0..40)
        .map(|i| {
            let (c, base, key) = (c.clone(), bases[i % 2].clone(), key.clone());
            async move { stream_chat(&c, &base, &key, "hi").await }
        })
        .buffer_unordered(40)
        .collect()
        .await;
    let done = results
        .iter()
        .filter(|r| *r == &(200, "done".to_string()))
        .count();
    let refused = results.iter().filter(|r| r.0 == 402).count();
    assert_eq!(done + refused, 40, "{results:?}");
    assert!(refused > 0, "40 × 13 > 300: the budget must refuse some");
    let settled = spent(&c, &p.b.base, &token, &org).await;
    assert!(settled <= 300, "settled spend {settled} exceeds the budget");
    assert_eq!(
        settled,
        13 * done as i64,
        "every answered chat settled once"
    );
    let Pair { a, b, db, .. } = p;
    drop((a, b));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_loses_no_settled_cost_and_frees_its_reservation_after_the_lease() {
    let (upstream, _mock) = crate::chat::mock_server().await;
    let mut p = pair(&upstream, "5").await;
    let c = Client::new();
    // 70: two chats settle 26; a "hang" reserves 36 (26 + 36 ≤ 70); while it is held a
    // chat reserving 34 does not fit (96 > 70); once released it does (60 ≤ 70).
    let (token, org, key) = org_with_budget(&c, &p.a.base, 70).await;
    for _ in 0..2 {
        assert_eq!(
            stream_chat(&c, &p.a.base, &key, "hi").await,
            (200, "done".into())
        );
    }
    let res = c
        .post(format!("{}/v1/chat", p.a.base))
        .header("x-api-key", &key)
        .json(&json!({"message": "hang", "max_tokens": 10, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Hello"));
    p.a.child.kill().unwrap(); // SIGKILL mid-stream: nothing is flushed
    p.a.child.wait().unwrap();
    drop(body);
    // What A settled survives; its reservation is still held on B's side of Redis...
    assert_eq!(spent(&c, &p.b.base, &token, &org).await, 26);
    let (status, b) = send(
        c.post(format!("{}/v1/chat", p.b.base))
            .header("x-api-key", &key)
            .json(&json!({"message": "hi", "max_tokens": 10})),
    )
    .await;
    assert_eq!(
        status, 402,
        "the dead instance's reservation holds until its lease ends: {b}"
    );
    // ...until its lease (5 s) ends: then the counter is recounted from the ledger.
    let (cc, base, k) = (&c, p.b.base.clone(), key.clone());
    eventually(
        Duration::from_secs(60),
        "the dead reservation is released",
        || {
            let base = base.clone();
            let k = k.clone();
            async move {
                let (status, _) = send(
                    cc.post(format!("{base}/v1/chat"))
                        .header("x-api-key", &k)
                        .json(&json!({"message": "hi", "max_tokens": 10})),
                )
                .await;
                status == 200
            }
        },
    )
    .await;
    assert_eq!(spent(&c, &p.b.base, &token, &org).await, 39);
    let Pair { a, b, db, .. } = p;
    drop((a, b));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_counters_lost_with_redis_are_rebuilt_from_the_ledger() {
    let (upstream, _mock) = crate::chat::mock_server().await;
    let p = pair(&upstream, "300").await;
    let c = Client::new();
    // 60: three chats settle 39 (the third reserves 26 + 34 = 60); a fourth does not fit.
    let (token, org, key) = org_with_budget(&c, &p.a.base, 60).await;
    for i in 0..3 {
        let base = if i % 2 == 0 { &p.a.base } else { &p.b.base };
        assert_eq!(
            stream_chat(&c, base, &key, "hi").await,
            (200, "done".into())
        );
    }
    let refused = |base: String| {
        let (c, key) = (c.clone(), key.clone());
        async move {
            let (status, body) = send(
                c.post(format!("{base}/v1/chat"))
                    .header("x-api-key", &key)
                    .json(&json!({"message": "hi", "max_tokens": 10})),
            )
            .await;
            (status, body["error"]["details"]["budget"]["spent"].clone())
        }
    };
    assert_eq!(refused(p.a.base.clone()).await, (402, json!(39)));
    // Redis loses the counters (only this deployment's keys are deleted).
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:spend:*", p.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the counters live in Redis");
    let _: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Both instances count from the ledger again: still 39, still refused.
    assert_eq!(refused(p.b.base.clone()).await, (402, json!(39)));
    assert_eq!(refused(p.a.base.clone()).await, (402, json!(39)));
    assert_eq!(spent(&c, &p.a.base, &token, &org).await, 39);
    let Pair { a, b, db, .. } = p;
    drop((a, b));
    db.cleanup().await;
}
