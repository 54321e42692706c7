//! Money fails closed: with Redis configured and gone, a chat under a spend budget or a
//! `max_parallel` bound is refused (503 `service_unavailable` with `Retry-After`), never
//! served on a per-instance count; a chat under neither is still answered; and once Redis is
//! back, both are admitted again. The Redis is the test's own, killed by the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, parts, redis_prefix, refusal, Db, OwnRedis, Person, TestApp};

async fn key_with(app: &TestApp, owner: &Person, org: &str, extra: Value) -> String {
    let mut body = json!({"name": "spender", "scopes": ["chat:write"]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, b) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/api-keys"),
            &owner.token,
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    b["data"]["key"].as_str().unwrap().to_string()
}

async fn chat(app: &TestApp, key: &str) -> (u16, Value, Option<String>) {
    let res = app
        .client
        .post(app.url("/v1/chat"))
        .header("x-api-key", key)
        .json(&json!({"message": "hi", "max_tokens": 10}))
        .send()
        .await
        .unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = parts(res).await;
    (status, body, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_leases_refuse_while_redis_is_unreachable() {
    let mut redis = OwnRedis::start();
    let (url, mock) = crate::chat::mock_server().await;
    let redis_url = redis.url();
    let app = TestApp::spawn(Db::Sqlite, move |c| {
        c.upstream_url = Some(url);
        c.upstream_model = "test-model".into();
        c.upstream_timeout_ms = 5000;
        c.redis_url = Some(gatehouse::config::SecretString::from(redis_url));
        c.redis_prefix = redis_prefix();
        crate::spend::priced(c);
    })
    .await;
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let budgeted = key_with(
        &app,
        &owner,
        &org,
        json!({"budgets": [{"amount": 1_000_000, "period": "day"}]}),
    )
    .await;
    let bounded = key_with(&app, &owner, &org, json!({"max_parallel": 2})).await;
    let free = key_with(&app, &owner, &org, json!({})).await;
    for key in [&budgeted, &bounded, &free] {
        assert_eq!(chat(&app, key).await.0, 200);
    }
    let asked = mock.asked.lock().unwrap().len();

    redis.kill();
    for key in [&budgeted, &bounded] {
        for _ in 0..3 {
            let (status, body, retry) = chat(&app, key).await;
            assert_eq!(
                refusal(status, &body),
                (503, "service_unavailable", ""),
                "{body}"
            );
            assert_eq!(retry.as_deref(), Some("1"));
        }
    }
    // Nothing refused reached the model server.
    assert_eq!(mock.asked.lock().unwrap().len(), asked);
    // A chat that spends no governed money is not held hostage by Redis.
    assert_eq!(chat(&app, &free).await.0, 200);

    redis.restart();
    for key in [&budgeted, &bounded] {
        eventually(
            Duration::from_secs(10),
            "the chat is admitted once Redis answers again",
            || async { chat(&app, key).await.0 == 200 },
        )
        .await;
    }
    app.stop().await;
}
