//! Chat admission against a mock model server that reports `usage`: model allow-lists with
//! wildcards, `GET /v1/models`, token windows reserved and settled (with their headers),
//! `max_parallel` leases released when the client goes away (on one instance and across
//! two sharing Redis, and expiring when their holder dies), and the widgets' daily budgets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::StreamExt;
use gatehouse::clock::Clock;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    eventually, parts, redis_prefix, redis_url, refusal, Db, Person, TestApp, TestDb,
};
use crate::story;

/// Tokens the mock reports for the prompt of every answer.
const PROMPT_TOKENS: u64 = 10;
const T0: i64 = 1_900_000_000_000;
const ORIGIN: &str = "https://shop.example.com";

/// A model server that records the bodies it was asked and streams an answer whose usage is
/// `PROMPT_TOKENS` plus the number in a message `use N` (default 1); `hang` stops after the
/// first piece until the request is dropped.
#[derive(Clone, Default)]
struct Mock {
    asked: Arc<Mutex<Vec<Value>>>,
}

impl Mock {
    fn asked(&self) -> Vec<Value> {
        self.asked.lock().unwrap().clone()
    }
}

async fn completions(
    axum::extract::State(mock): axum::extract::State<Mock>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    mock.asked.lock().unwrap().push(body.clone());
    let last = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    let hang = last == "hang";
    let completion: u64 = last
        .strip_prefix("use ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let events = async_stream::stream! {
        yield Ok::<_, std::convert::Infallible>(Event::default().data(
            json!({"choices": [{"delta": {"content": "Hello"}}]}).to_string()));
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        yield Ok(Event::default().data(json!({"choices": [], "usage":
            {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion}}).to_string()));
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(events).into_response()
}

async fn mock_server() -> (String, Mock) {
    let mock = Mock::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), mock)
}

fn upstream(c: &mut gatehouse::config::Config, url: String) {
    c.upstream_url = Some(url);
    c.upstream_model = "gpt-4o-mini".into();
    c.upstream_timeout_ms = 5000;
}

/// Prices the upstream's model at one unit of money per token, input and output.
fn one_unit_per_token(c: &mut gatehouse::config::Config) {
    c.models.insert(
        "gpt-4o-mini".into(),
        gatehouse::config::ModelPrice {
            input_per_mtok: 1_000_000,
            output_per_mtok: 1_000_000,
        },
    );
}

/// The rows in the spend ledger, read from storage.
async fn ledger_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM spend_ledger")
        .fetch_one(&crate::helpers::sql(&app.db.url).await)
        .await
        .unwrap()
}

async fn app_with_mock(db: Db, clock: Clock) -> (TestApp, Mock) {
    let (url, mock) = mock_server().await;
    let app = TestApp::spawn_with_clock(db, clock, move |c| {
        upstream(c, url);
        c.chat_models = vec![
            "gpt-4o".into(),
            "gpt-4o-mini".into(),
            "anthropic/claude-3-5-sonnet".into(),
        ];
    })
    .await;
    (app, mock)
}

/// A key with `extra` settings (`allowed_models`, `token_limits`, `max_parallel`).
async fn key_with(app: &TestApp, by: &Person, org: &str, extra: Value) -> (String, String) {
    let mut body = json!({"name": "chat", "scopes": ["chat:write"]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, b) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/api-keys"),
            &by.token,
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    (
        b["data"]["key"].as_str().unwrap().to_string(),
        b["data"]["id"].as_str().unwrap().to_string(),
    )
}

async fn chat(app: &TestApp, key: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let res = app
        .client
        .post(app.url("/v1/chat"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let headers = res.headers().clone();
    let (status, body) = parts(res).await;
    (status, body, headers)
}

async fn org_limits(app: &TestApp, owner: &Person, org: &str, body: Value) -> Value {
    let (status, b) = app
        .call(
            Method::PATCH,
            &format!("/orgs/{org}/chat-limits"),
            &owner.token,
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    b["data"].clone()
}

story!(
    models_outside_the_allow_lists_are_refused_before_anything_is_reserved,
    setup: |db| app_with_mock(db, Clock::manual(T0)),
    |(app, mock): (TestApp, Mock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let limits = org_limits(&app, &owner, &org, json!({"allowed_models": ["gpt-4o*", "anthropic/*"]})).await;
        assert_eq!(limits["allowed_models"], json!(["gpt-4o*", "anthropic/*"]));
        assert_eq!(limits["max_parallel"], Value::Null);
        let (key, _) = key_with(&app, &owner, &org, json!({
            "allowed_models": ["gpt-4o-mini", "anthropic/*"],
            "max_parallel": 1,
            "token_limits": {"tokens_per_minute": 10000},
        })).await;

        // Allowed by both lists: asked for, with max_tokens.
        let (status, b, _) = chat(&app, &key, json!({"message": "hi", "model": "gpt-4o-mini", "max_tokens": 50})).await;
        assert_eq!(status, 200, "{b}");
        let asked = mock.asked();
        assert_eq!(asked[0]["model"], "gpt-4o-mini");
        assert_eq!(asked[0]["max_tokens"], 50);
        // The default model is upstream_model.
        let (status, _, _) = chat(&app, &key, json!({"message": "hi"})).await;
        assert_eq!(status, 200);
        assert_eq!(mock.asked()[1]["model"], "gpt-4o-mini");
        assert!(mock.asked()[1].get("max_tokens").is_none());
        // A wildcard across the provider's slash.
        let (status, _, _) = chat(&app, &key, json!({"message": "hi", "model": "anthropic/claude-3-5-sonnet"})).await;
        assert_eq!(status, 200);

        // The org's list allows gpt-4o, the key's does not: refused, naming the key's list.
        let (status, b, _) = chat(&app, &key, json!({"message": "hang", "model": "gpt-4o", "stream": true})).await;
        assert_eq!(refusal(status, &b), (403, "model_not_allowed", ""));
        assert_eq!(b["error"]["details"]["model"], "gpt-4o");
        assert_eq!(b["error"]["details"]["allowed"], json!(["gpt-4o-mini", "anthropic/*"]));
        // A key without a list of its own: the organization's refuses.
        let (open, _) = key_with(&app, &owner, &org, json!({})).await;
        let (status, b, _) = chat(&app, &open, json!({"message": "hi", "model": "mistral-large"})).await;
        assert_eq!(refusal(status, &b), (403, "model_not_allowed", ""));
        assert_eq!(b["error"]["details"]["allowed"], json!(["gpt-4o*", "anthropic/*"]));
        // Case matters; an empty list allows nothing.
        let (status, _, _) = chat(&app, &open, json!({"message": "hi", "model": "GPT-4o"})).await;
        assert_eq!(status, 403);
        let (status, b) = app.call(Method::PATCH, &format!("/orgs/{org}/api-keys/{}", key_id(&app, &owner, &org, &open).await), &owner.token,
            Some(json!({"allowed_models": []}))).await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(b["data"]["allowed_models"], json!([]));
        let (status, _, _) = chat(&app, &open, json!({"message": "hi", "model": "gpt-4o"})).await;
        assert_eq!(status, 403);

        // Nothing was asked or reserved for the refusals: the key's one lease is free (a
        // refusal that leaked it would answer concurrency_limited) and its token window
        // holds only what the three answers used.
        assert_eq!(mock.asked().len(), 3);
        let (status, b, h) = chat(&app, &key, json!({"message": "use 5", "max_tokens": 100})).await;
        assert_eq!(status, 200, "{b}");
        let used = 3 * (PROMPT_TOKENS + 1);
        let reserved = 100 + "use 5".len().div_ceil(4) as u64 + 4;
        let state = h["ratelimit"].to_str().unwrap();
        assert!(
            state.contains(&format!("\"key_tokens_60s\";r={};", 10_000 - used - reserved)),
            "{state}"
        );

        // Bad names and patterns are 422 naming the field.
        let (status, b, _) = chat(&app, &key, json!({"message": "hi", "model": "m".repeat(201)})).await;
        assert_eq!(refusal(status, &b), (422, "validation_failed", ""));
        assert!(b["error"]["details"]["fields"]["model"].is_string(), "{b}");
        let (status, b) = app.call(Method::PATCH, &format!("/orgs/{org}/chat-limits"), &owner.token,
            Some(json!({"allowed_models": ["bad pattern"]}))).await;
        assert_eq!(refusal(status, &b), (422, "validation_failed", ""));
        assert!(b["error"]["details"]["fields"]["allowed_models"].is_string(), "{b}");
        app
    }
);

async fn key_id(app: &TestApp, owner: &Person, org: &str, key: &str) -> String {
    let (_, b) = app
        .call(
            Method::GET,
            &format!("/orgs/{org}/api-keys"),
            &owner.token,
            None,
        )
        .await;
    let start = &key[..12];
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["start"] == start)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

story!(
    the_model_list_is_what_both_allow_lists_match,
    setup: |db| app_with_mock(db, Clock::System),
    |(app, _mock): (TestApp, Mock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let ids = |b: &Value| -> Vec<String> {
            b["data"]["data"].as_array().unwrap().iter()
                .map(|m| m["id"].as_str().unwrap().to_string()).collect()
        };
        let (open, _) = key_with(&app, &owner, &org, json!({})).await;
        let (status, b) = app.call(Method::GET, "/models", &open, None).await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(b["data"]["object"], "list");
        assert_eq!(ids(&b), ["gpt-4o-mini", "gpt-4o", "anthropic/claude-3-5-sonnet"]);
        assert_eq!(b["data"]["data"][0]["default"], true);
        assert_eq!(b["data"]["data"][1]["default"], false);
        assert_eq!(b["data"]["data"][0]["object"], "model");

        org_limits(&app, &owner, &org, json!({"allowed_models": ["gpt-4o*"]})).await;
        let (_, b) = app.call(Method::GET, "/models", &open, None).await;
        assert_eq!(ids(&b), ["gpt-4o-mini", "gpt-4o"]);
        let (narrow, _) = key_with(&app, &owner, &org, json!({"allowed_models": ["*mini", "anthropic/*"]})).await;
        let (_, b) = app.call(Method::GET, "/models", &narrow, None).await;
        assert_eq!(ids(&b), ["gpt-4o-mini"]);
        // Clearing the organization's list widens it again.
        let limits = org_limits(&app, &owner, &org, json!({"allowed_models": null})).await;
        assert_eq!(limits["allowed_models"], Value::Null);
        let (_, b) = app.call(Method::GET, "/models", &narrow, None).await;
        assert_eq!(ids(&b), ["gpt-4o-mini", "anthropic/claude-3-5-sonnet"]);
        // A person's token alone is not a key.
        let (status, b) = app.call(Method::GET, "/models", &owner.token, None).await;
        assert_eq!(refusal(status, &b), (401, "unauthorized", "missing"));
        app
    }
);

story!(
    token_windows_settle_to_usage_and_refuse_with_headers,
    setup: |db| app_with_mock(db, Clock::manual(T0)),
    |(app, _mock): (TestApp, Mock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (key, _) = key_with(&app, &owner, &org, json!({"token_limits": {"tokens_per_minute": 1000}})).await;
        // Each chat reserves its prompt estimate (6) + 300 and uses 10 + 40 = 50. Settled, 14
        // fit in the minute (1000 - 13 * 50 >= 306); left reserved, only 3 would.
        let body = json!({"message": "use 40", "max_tokens": 300});
        let mut admitted = 0;
        loop {
            let (status, b, h) = chat(&app, &key, body.clone()).await;
            if status != 200 {
                assert_eq!(refusal(status, &b), (429, "rate_limited", ""));
                assert_eq!(b["error"]["details"]["limit"], 1000);
                assert_eq!(b["error"]["details"]["window"], 60);
                let retry = h["retry-after"].to_str().unwrap().parse::<u64>().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
                let policy = h["ratelimit-policy"].to_str().unwrap();
                assert!(policy.contains("\"key_tokens_60s\";q=1000;w=60"), "{policy}");
                assert!(policy.contains("\"api_key_60s\""), "{policy}");
                break;
            }
            admitted += 1;
            assert!(admitted <= 20, "never refused");
        }
        assert_eq!(admitted, 14);
        // The window refills with time.
        app.state.edge.clock.advance_ms(60_000);
        let (status, b, _) = chat(&app, &key, body.clone()).await;
        assert_eq!(status, 200, "{b}");

        // The organization's window spans its keys.
        org_limits(&app, &owner, &org, json!({"token_limits": {"tokens_per_day": 400}})).await;
        let (a, _) = key_with(&app, &owner, &org, json!({})).await;
        let (b_key, _) = key_with(&app, &owner, &org, json!({})).await;
        let (status, _, _) = chat(&app, &a, json!({"message": "use 40", "max_tokens": 300})).await;
        assert_eq!(status, 200);
        // 350 left: a reservation of 6 + 380 does not fit, one of 6 + 300 does.
        let (status, b, _) = chat(&app, &b_key, json!({"message": "use 40", "max_tokens": 380})).await;
        assert_eq!(refusal(status, &b), (429, "rate_limited", ""));
        assert_eq!(b["error"]["details"]["limit"], 400);
        assert_eq!(b["error"]["details"]["window"], 86_400);
        let (status, _, _) = chat(&app, &b_key, json!({"message": "use 40", "max_tokens": 300})).await;
        assert_eq!(status, 200);
        // Limits are checked: 0 is not a window.
        let (status, b) = app.call(Method::PATCH, &format!("/orgs/{org}/chat-limits"), &owner.token,
            Some(json!({"token_limits": {"tokens_per_minute": 0}}))).await;
        assert_eq!(refusal(status, &b), (422, "validation_failed", ""));
        app
    }
);

/// A streamed chat under way on `base`, held by a task: aborting the task drops the
/// connection, as a client going away does.
async fn under_way(base: &str, key: &str) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (base, key) = (base.to_string(), key.to_string());
    let task = tokio::spawn(async move {
        let res = reqwest::Client::new()
            .post(format!("{base}/v1/chat"))
            .header("x-api-key", &key)
            .json(&json!({"message": "hang", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut stream = res.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("Hello"));
        let _ = tx.send(());
        // Hold the connection until aborted.
        while stream.next().await.is_some() {}
    });
    rx.await.unwrap();
    task
}

story!(
    leases_bound_answers_under_way_and_free_when_the_client_goes_away,
    setup: |db| app_with_mock(db, Clock::System),
    |(app, _mock): (TestApp, Mock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (key, _) = key_with(&app, &owner, &org, json!({"max_parallel": 1})).await;
        let held = under_way(&app.base, &key).await;
        let (status, b, h) = chat(&app, &key, json!({"message": "hi"})).await;
        assert_eq!(refusal(status, &b), (429, "concurrency_limited", ""));
        assert_eq!(b["error"]["details"], json!({"scope": "key", "max_parallel": 1}));
        assert_eq!(h["retry-after"], "1");
        // The client goes away mid-stream: the lease is released.
        held.abort();
        eventually(Duration::from_secs(5), "the lease is released after the client left", || async {
            chat(&app, &key, json!({"message": "hi"})).await.0 == 200
        }).await;
        // A completed answer releases it too: a second one right after is admitted.
        let (status, _, _) = chat(&app, &key, json!({"message": "hi"})).await;
        assert_eq!(status, 200);

        // The organization's bound spans its keys.
        org_limits(&app, &owner, &org, json!({"max_parallel": 1})).await;
        let (other, _) = key_with(&app, &owner, &org, json!({})).await;
        let held = under_way(&app.base, &other).await;
        let (status, b, _) = chat(&app, &key, json!({"message": "hi"})).await;
        assert_eq!(refusal(status, &b), (429, "concurrency_limited", ""));
        assert_eq!(b["error"]["details"], json!({"scope": "org", "max_parallel": 1}));
        held.abort();
        eventually(Duration::from_secs(5), "the org's lease is released", || async {
            chat(&app, &key, json!({"message": "hi"})).await.0 == 200
        }).await;
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_token_windows_are_shared_by_two_instances_on_redis() {
    let (url, _mock) = mock_server().await;
    let db = TestDb::new(Db::Sqlite).await;
    let second = db.alias();
    let prefix = redis_prefix();
    // One clock for both, passed to Redis's scripts: no window refills while the test runs.
    let clock = Clock::manual(T0);
    let tweak = |url: String, prefix: String| {
        move |c: &mut gatehouse::config::Config| {
            upstream(c, url);
            c.redis_url = Some(gatehouse::config::SecretString::from(redis_url()));
            c.redis_prefix = prefix;
        }
    };
    let a =
        TestApp::spawn_on_with_clock(db, clock.clone(), tweak(url.clone(), prefix.clone())).await;
    let b = TestApp::spawn_on_with_clock(second, clock, tweak(url, prefix)).await;
    let owner = a.person().await;
    let org = a.org(&owner, "Acme").await;
    let (key, _) = key_with(
        &a,
        &owner,
        &org,
        json!({"max_parallel": 1, "token_limits": {"tokens_per_minute": 1000}}),
    )
    .await;

    // A stream under way on one instance holds the key's one lease on the other.
    let held = under_way(&a.base, &key).await;
    let (status, body, _) = chat(&b, &key, json!({"message": "hi", "max_tokens": 100})).await;
    assert_eq!(refusal(status, &body), (429, "concurrency_limited", ""));
    held.abort();
    eventually(
        Duration::from_secs(5),
        "the other instance sees the lease released",
        || async {
            chat(&b, &key, json!({"message": "use 1", "max_tokens": 1}))
                .await
                .0
                == 200
        },
    )
    .await;

    // Token windows reserved on one instance and settled there are what the other sees.
    // So far: the dropped stream settled its estimate (prompt 5 + "Hello" 2) and the last
    // chat used 11; each chat below reserves 306 and uses 50, alternating instances.
    let spent = 7 + 11;
    let mut admitted = 0;
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (status, body, _) =
            chat(app, &key, json!({"message": "use 40", "max_tokens": 300})).await;
        if status != 200 {
            assert_eq!(refusal(status, &body), (429, "rate_limited", ""));
            break;
        }
        admitted += 1;
    }
    // Admitted while 1000 - spent - 50 * (k - 1) >= 306.
    assert_eq!(admitted, (1000 - spent - 306) / 50 + 1);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_expires_on_redis() {
    use gatehouse::ratelimit::{LeaseError, LeaseSpec, Leases, RedisLink};
    let link = RedisLink::open_url(&redis_url(), &redis_prefix(), Duration::from_secs(1))
        .await
        .unwrap();
    let clock = Clock::manual(T0);
    let one = || {
        vec![LeaseSpec {
            scope: "key",
            subject: "key_1".into(),
            max: 1,
        }]
    };
    // Two instances, one Redis; the first dies holding its lease.
    let a = Leases::new(Some(link.clone()), clock.clone(), Duration::from_secs(30));
    let b = Leases::new(Some(link), clock.clone(), Duration::from_secs(30));
    a.acquire("org:o", &one()).await.unwrap().abandon();
    assert_eq!(
        b.acquire("org:o", &one()).await.err(),
        Some(LeaseError::Full(0))
    );
    clock.advance_ms(29_999);
    assert_eq!(
        b.acquire("org:o", &one()).await.err(),
        Some(LeaseError::Full(0))
    );
    clock.advance_ms(1);
    let lease = b.acquire("org:o", &one()).await.unwrap();
    // A released lease frees its place at once.
    drop(lease);
    eventually(
        Duration::from_secs(3),
        "the released lease frees its place",
        || async { b.acquire("org:o", &one()).await.is_ok() },
    )
    .await;
}

/// An open widget session on `app` (no token needed): (token, signing secret).
async fn visitor(app: &TestApp, widget: &str) -> (String, String) {
    let res = app
        .client
        .post(app.url(&format!("/v1/widgets/{widget}/session")))
        .header("origin", ORIGIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, b) = parts(res).await;
    assert_eq!(status, 201, "{b}");
    (
        b["data"]["session_token"].as_str().unwrap().to_string(),
        b["data"]["signing_secret"].as_str().unwrap().to_string(),
    )
}

async fn widget_chat(
    app: &TestApp,
    widget: &str,
    s: &(String, String),
    body: Value,
) -> (u16, Value) {
    let path = format!("/v1/widgets/{widget}/chat");
    let body = body.to_string();
    let ts = app.state.edge.clock.now_secs();
    let nonce = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let sig = crate::widgets::hex_hmac(
        s.1.as_bytes(),
        format!("{ts}.{nonce}.POST.{path}.{body}").as_bytes(),
    );
    let res = app
        .client
        .post(app.url(&path))
        .header("origin", ORIGIN)
        .bearer_auth(&s.0)
        .header("x-gatehouse-timestamp", ts.to_string())
        .header("x-gatehouse-nonce", nonce)
        .header("x-gatehouse-signature", format!("v1={sig}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    parts(res).await
}

story!(
    widgets_have_conservative_daily_budgets_and_their_own_model,
    setup: |db| app_with_mock(db, Clock::manual(T0)),
    |(app, mock): (TestApp, Mock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (status, w) = app.call(Method::POST, &format!("/orgs/{org}/widgets"), &owner.token,
            Some(json!({"name": "Help", "allowed_origins": [ORIGIN], "require_token": false}))).await;
        assert_eq!(status, 201, "{w}");
        let id = w["data"]["id"].as_str().unwrap().to_string();
        // The defaults apply and are shown.
        assert_eq!(w["data"]["token_limits"], json!({"tokens_per_day": 200_000, "visitor_tokens_per_day": 20_000}));
        assert_eq!(w["data"]["model"], Value::Null);

        // A visitor's own day: 200 tokens; the widget's, all visitors together: 260.
        let (status, w) = app.call(Method::PATCH, &format!("/orgs/{org}/widgets/{id}"), &owner.token,
            Some(json!({"token_limits": {"tokens_per_day": 260, "visitor_tokens_per_day": 200}, "model": "gpt-4o"}))).await;
        assert_eq!(status, 200, "{w}");
        assert_eq!(w["data"]["token_limits"], json!({"tokens_per_day": 260, "visitor_tokens_per_day": 200}));
        assert_eq!(w["data"]["model"], "gpt-4o");
        let first = visitor(&app, &id).await;
        let (status, b) = widget_chat(&app, &id, &first, json!({"message": "use 40", "max_tokens": 100})).await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(mock.asked().last().unwrap()["model"], "gpt-4o");
        // The visitor has 150 left: its history (18) and 190 more do not fit.
        let (status, b) = widget_chat(&app, &id, &first, json!({"message": "use 40", "max_tokens": 190})).await;
        assert_eq!(refusal(status, &b), (429, "rate_limited", ""));
        assert_eq!(b["error"]["details"]["limit"], 200);
        assert_eq!(b["error"]["details"]["window"], 86_400);
        // Another visitor has a day of their own.
        let second = visitor(&app, &id).await;
        let (status, b) = widget_chat(&app, &id, &second, json!({"message": "use 40", "max_tokens": 150})).await;
        assert_eq!(status, 200, "{b}");
        // The widget has 160 left for everyone: a third visitor's 6 + 160 does not fit.
        let third = visitor(&app, &id).await;
        let (status, b) = widget_chat(&app, &id, &third, json!({"message": "use 1", "max_tokens": 160})).await;
        assert_eq!(refusal(status, &b), (429, "rate_limited", ""));
        assert_eq!(b["error"]["details"]["limit"], 260);
        let (status, b) = widget_chat(&app, &id, &third, json!({"message": "use 1", "max_tokens": 20})).await;
        assert_eq!(status, 200, "{b}");
        // `null` restores the defaults.
        let (status, w) = app.call(Method::PATCH, &format!("/orgs/{org}/widgets/{id}"), &owner.token,
            Some(json!({"token_limits": null}))).await;
        assert_eq!(status, 200);
        assert_eq!(w["data"]["token_limits"], json!({"tokens_per_day": 200_000, "visitor_tokens_per_day": 20_000}));

        // The widget's model is its own: a body naming another is refused.
        let (status, b) = widget_chat(&app, &id, &third, json!({"message": "hi", "model": "gpt-4o-mini"})).await;
        assert_eq!(refusal(status, &b), (403, "model_not_allowed", ""));
        assert_eq!(b["error"]["details"]["allowed"], json!(["gpt-4o"]));
        // Checked against the organization's list when saved, and again at use.
        org_limits(&app, &owner, &org, json!({"allowed_models": ["gpt-4o"]})).await;
        let (status, b) = app.call(Method::PATCH, &format!("/orgs/{org}/widgets/{id}"), &owner.token,
            Some(json!({"model": "claude-3"}))).await;
        assert_eq!(refusal(status, &b), (422, "validation_failed", ""));
        assert!(b["error"]["details"]["fields"]["model"].is_string(), "{b}");
        org_limits(&app, &owner, &org, json!({"allowed_models": ["anthropic/*"]})).await;
        let (status, b) = widget_chat(&app, &id, &third, json!({"message": "hi"})).await;
        assert_eq!(refusal(status, &b), (403, "model_not_allowed", ""));
        assert_eq!(b["error"]["details"]["model"], "gpt-4o");
        app
    }
);

/// The mock model server and fast webhook deliveries to `receiver`.
async fn app_with_hooks(db: Db) -> (TestApp, crate::webhooks::Receiver) {
    let (url, _mock) = mock_server().await;
    let receiver = crate::webhooks::Receiver::start().await;
    let app = TestApp::spawn(db, move |c| {
        upstream(c, url);
        c.webhooks_allow_private = true;
        c.webhooks_poll_interval_ms = 50;
        c.webhooks_retry_schedule = vec![0, 1, 1, 1];
        c.webhooks_timeout_ms = 2000;
    })
    .await;
    (app, receiver)
}

story!(
    a_token_window_refusal_raises_rate_limit_exceeded_naming_the_window,
    setup: app_with_hooks,
    |(app, receiver): (TestApp, crate::webhooks::Receiver)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (status, b) = app.call(Method::POST, &format!("/orgs/{org}/webhooks"), &owner.token,
            Some(json!({"url": receiver.url, "event_types": ["rate_limit.exceeded"]}))).await;
        assert_eq!(status, 201, "{b}");
        let (key, key_id) = key_with(&app, &owner, &org, json!({"token_limits": {"tokens_per_minute": 1000}})).await;
        // Each reserves 306 and settles 50: refused after 14, then again (one event per window).
        let body = json!({"message": "use 40", "max_tokens": 300});
        let mut refused = 0;
        for _ in 0..17 {
            let (status, b, _) = chat(&app, &key, body.clone()).await;
            if status != 200 {
                assert_eq!(refusal(status, &b), (429, "rate_limited", ""));
                refused += 1;
            }
        }
        assert_eq!(refused, 3);
        let hit = receiver.event("rate_limit.exceeded").await.json();
        assert_eq!(hit["data"]["key_id"], json!(key_id), "{hit}");
        assert_eq!(hit["data"]["org_id"], json!(org));
        assert_eq!(hit["data"]["policy"], "key_tokens");
        assert_eq!(hit["data"]["window"], "tokens_per_minute");
        assert_eq!(hit["data"]["unit"], "tokens");
        assert_eq!(hit["data"]["limit"], 1000);
        assert_eq!(hit["data"]["window_seconds"], 60);
        assert!(hit["data"]["retry_after"].as_u64().unwrap() >= 1, "{hit}");

        // The organization's day window refuses another key: its own event, naming that key.
        org_limits(&app, &owner, &org, json!({"token_limits": {"tokens_per_day": 400}})).await;
        let (other, other_id) = key_with(&app, &owner, &org, json!({})).await;
        let (status, b, _) = chat(&app, &other, json!({"message": "use 40", "max_tokens": 380})).await;
        assert_eq!(status, 200, "{b}");
        let (status, b, _) = chat(&app, &other, json!({"message": "use 40", "max_tokens": 380})).await;
        assert_eq!(refusal(status, &b), (429, "rate_limited", ""));
        let hits = receiver.until("the organization's token event", |h| {
            h.iter().any(|h| h.event_type() == "rate_limit.exceeded" && h.json()["data"]["policy"] == "org_tokens")
        }).await;
        let limited: Vec<Value> = hits.iter().filter(|h| h.event_type() == "rate_limit.exceeded").map(|h| h.json()).collect();
        let org_hit = limited.iter().find(|h| h["data"]["policy"] == "org_tokens").unwrap();
        assert_eq!(org_hit["data"]["key_id"], json!(other_id));
        assert_eq!(org_hit["data"]["window"], "tokens_per_day");
        assert_eq!(org_hit["data"]["limit"], 400);
        assert_eq!(org_hit["data"]["window_seconds"], 86_400);
        assert_eq!(limited.len(), 2, "one event per window: {limited:?}");
        app
    }
);

story!(
    one_reservation_setting_caps_the_answer_for_budgets_and_token_windows,
    setup: |db| async move {
        let (url, mock) = mock_server().await;
        let app = TestApp::spawn(db, move |c| {
            upstream(c, url);
            c.chat_reserve_tokens = 700;
            one_unit_per_token(c);
        }).await;
        (app, mock)
    },
    |(app, mock): (TestApp, Mock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (key, _) = key_with(&app, &owner, &org, json!({
            "token_limits": {"tokens_per_minute": 100_000},
            "budgets": [{"amount": 1_000_000_000, "period": "day"}],
        })).await;
        let (status, b, h) = chat(&app, &key, json!({"message": "hi"})).await;
        assert_eq!(status, 200, "{b}");
        // Sent upstream as the answer's cap (a budget applies) ...
        assert_eq!(mock.asked()[0]["max_tokens"], 700);
        // ... and reserved in the token window: the prompt's estimate (1 + 4) and 700.
        let state = h["ratelimit"].to_str().unwrap();
        assert!(state.contains(&format!("\"key_tokens_60s\";r={};", 100_000 - 5 - 700)), "{state}");
        app
    }
);

story!(
    a_chat_refused_by_a_token_window_writes_nothing_to_the_spend_ledger,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Refusals").await;
        org_limits(
            &app,
            &owner,
            &org,
            json!({"token_limits": {"tokens_per_day": 400}}),
        )
        .await;
        let (key, _) = key_with(&app, &owner, &org, json!({})).await;
        let (status, _, _) =
            chat(&app, &key, json!({"message": "use 40", "max_tokens": 300})).await;
        assert_eq!(status, 200);
        assert_eq!(ledger_rows(&app).await, 1, "the answered chat's row");
        // Refused by the day window: nothing was used and no budget holds a reservation, so
        // there is nothing to settle (a flood of refusals must not become a flood of writes).
        for _ in 0..5 {
            let (status, b, _) =
                chat(&app, &key, json!({"message": "use 40", "max_tokens": 380})).await;
            assert_eq!(refusal(status, &b), (429, "rate_limited", ""));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ledger_rows(&app).await, 1);
        app
    }
);

story!(
    a_chat_refused_after_its_budget_reservation_writes_nothing_and_gives_the_reservation_back,
    setup: |db| async move {
        let (url, mock) = mock_server().await;
        let app = TestApp::spawn(db, move |c| {
            upstream(c, url);
            one_unit_per_token(c);
        }).await;
        (app, mock)
    },
    |(app, _mock): (TestApp, Mock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Refusals").await;
        // One token costs one unit: a chat reserves its prompt and 380 tokens, so a budget of
        // 1,000 holds two reservations at most and a leaked one would soon answer 402.
        let (key, _) = key_with(&app, &owner, &org, json!({
            "token_limits": {"tokens_per_day": 400},
            "budgets": [{"amount": 1_000, "period": "day"}],
        })).await;
        let (status, b, _) =
            chat(&app, &key, json!({"message": "use 40", "max_tokens": 300})).await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(ledger_rows(&app).await, 1, "the answered chat's row");
        // Each refusal by the day window comes after the budget's reservation: it is given
        // back (never a 402 from reservations piling up) and no zero row is written.
        for _ in 0..6 {
            let (status, b, _) =
                chat(&app, &key, json!({"message": "use 40", "max_tokens": 380})).await;
            assert_eq!(refusal(status, &b), (429, "rate_limited", ""), "{b}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ledger_rows(&app).await, 1);
        app
    }
);
