//! Signed webhooks: endpoints, Standard Webhooks signatures, retries, rotation, the delivery
//! log, the SSRF guard, crash durability and exactly-once delivery across two instances.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gatehouse::config::Config;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, refusal, Db, TestApp};
use crate::story;

mod process;
mod promises;
mod receiver;
mod ssrf_dns;

pub use receiver::{verifies, Hit, Receiver, Reply};

/// Fast deliveries for tests: private targets allowed, 50 ms polls, retries after 1 s.
fn fast(c: &mut Config) {
    c.webhooks_allow_private = true;
    c.webhooks_poll_interval_ms = 50;
    c.webhooks_retry_schedule = vec![0, 1, 1, 1];
    c.webhooks_timeout_ms = 2000;
}

/// An organization with an owner and an endpoint at `receiver`; returns (owner token, org,
/// endpoint JSON with its secret).
async fn setup(app: &TestApp, receiver: &Receiver, body: Value) -> (String, String, Value) {
    let owner = app.person().await;
    let org = app.org(&owner, "Hooks").await;
    let mut body = body;
    body["url"] = json!(receiver.url);
    let (status, created) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/webhooks"),
            &owner.token,
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    (owner.token, org, created["data"].clone())
}

story!(
    an_endpoint_shows_its_secret_once_and_receives_signed_events,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        let (token, org, ep) = setup(&app, &receiver, json!({"description": "prod"})).await;
        let secret = ep["secret"].as_str().unwrap().to_string();
        let id = ep["id"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);
        assert!(id.starts_with("whk_"));
        assert_eq!(ep["event_types"], json!(null));
        assert_eq!(ep["enabled"], json!(true));
        for path in [
            format!("/orgs/{org}/webhooks"),
            format!("/orgs/{org}/webhooks/{id}"),
        ] {
            let res = app.v1(Method::GET, &path, &token).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let text = res.text().await.unwrap();
            assert!(!text.contains(&secret[6..]), "{path} leaks the secret");
            assert!(text.contains(&id));
        }
        let (status, created) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &token,
                Some(json!({"name": "k", "scopes": ["chat:write"]})),
            )
            .await;
        assert_eq!(status, 201);
        let key = created["data"]["key"].as_str().unwrap();
        let hit = receiver.event("api_key.created").await;
        assert!(hit.id().starts_with("msg_"));
        assert!(verifies(&secret, &hit), "{:?}", hit.headers);
        let ts: i64 = hit.headers["webhook-timestamp"].parse().unwrap();
        assert!((ts - app.state.edge.clock.now_secs()).abs() < 30);
        assert_eq!(hit.headers["content-type"], "application/json");
        let body = hit.json();
        assert_eq!(body["data"]["id"], created["data"]["id"]);
        assert_eq!(body["data"]["org_id"], json!(org));
        assert!(body["timestamp"].is_string());
        assert!(!hit.body.contains(key) && !hit.body.contains(&key[..12]));
        // The delivery log shows the attempt once the worker has recorded it (the receiver
        // saw the request before the worker read the answer).
        let log = wait_for_log(&app, &token, &org, &id, 1).await;
        let first = &log[0];
        assert_eq!(first["message_id"], json!(hit.id()));
        assert_eq!(first["status_code"], 200);
        assert_eq!(first["response"], "answer body");
        assert_eq!(first["succeeded"], true);
        assert!(first["latency_ms"].as_i64().unwrap() >= 0);
        // A test event, then a replay of it with the same id.
        let (status, queued) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks/{id}/test"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 202, "{queued}");
        let test = receiver.event("webhook.test").await;
        assert_eq!(test.id(), queued["data"]["message_id"].as_str().unwrap());
        // Its attempt is in the log once the worker has recorded the answer (the receiver saw
        // the request first).
        let log = wait_for_log(&app, &token, &org, &id, 2).await;
        let delivery = log
            .iter()
            .find(|a| a["message_id"] == json!(test.id()))
            .unwrap()["delivery_id"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, _) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks/deliveries/{delivery}/retry"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 202);
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
            metrics.contains("gatehouse_webhook_attempts_total{outcome=\"succeeded\"}"),
            "{metrics}"
        );
        let (_, doc) = parts(
            app.client
                .get(app.url("/openapi.json"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        for path in [
            "/v1/orgs/{org}/webhooks",
            "/v1/orgs/{org}/webhooks/{id}",
            "/v1/orgs/{org}/webhooks/{id}/rotate-secret",
            "/v1/orgs/{org}/webhooks/{id}/test",
            "/v1/orgs/{org}/webhooks/{id}/deliveries",
            "/v1/orgs/{org}/webhooks/deliveries/{id}/retry",
        ] {
            assert!(
                doc["paths"][path].is_object(),
                "{path} missing from openapi"
            );
        }
        receiver
            .until("the replay", |h| {
                h.iter().filter(|h| h.id() == test.id()).count() == 2
            })
            .await;
        app
    }
);

story!(
    a_receiver_failing_twice_gets_the_event_three_times_with_one_id,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        receiver.script(&[Reply::Status(500), Reply::Status(500)]);
        let (token, org, ep) = setup(&app, &receiver, json!({})).await;
        let (secret, id) = (ep["secret"].as_str().unwrap(), ep["id"].as_str().unwrap());
        app.call(
            Method::POST,
            &format!("/orgs/{org}/webhooks/{id}/test"),
            &token,
            None,
        )
        .await;
        let hits = receiver.until("three attempts", |h| h.len() >= 3).await;
        assert!(hits.iter().all(|h| h.id() == hits[0].id()));
        assert!(hits.iter().all(|h| verifies(secret, h)));
        assert!(hits.iter().all(|h| h.body == hits[0].body));
        // Each retry is signed afresh, at least a second apart.
        let ts: Vec<i64> = hits
            .iter()
            .map(|h| h.headers["webhook-timestamp"].parse().unwrap())
            .collect();
        assert!(ts[1] > ts[0] && ts[2] > ts[1], "{ts:?}");
        let log = wait_for_log(&app, &token, &org, id, 3).await;
        let attempts: Vec<(i64, i64, bool)> = log
            .iter()
            .map(|a| {
                (
                    a["attempt"].as_i64().unwrap(),
                    a["status_code"].as_i64().unwrap(),
                    a["succeeded"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            attempts,
            vec![(3, 200, true), (2, 500, false), (1, 500, false)]
        );
        assert!(log.iter().all(|a| a["delivery_status"] == "succeeded"));
        assert!(log.iter().all(|a| a["message_id"] == json!(hits[0].id())));
        // Nothing after the success: a later event arrives, and the first one not again.
        settle(&app, &receiver, &token, &org, id).await;
        let again = receiver
            .hits()
            .iter()
            .filter(|h| h.id() == hits[0].id())
            .count();
        assert_eq!(again, 3, "nothing after the success");
        app
    }
);

story!(
    a_redirect_is_a_failure_and_retry_after_is_honoured,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        receiver.script(&[Reply::Status(302), Reply::RetryAfter(429, 3)]);
        let (token, org, ep) = setup(&app, &receiver, json!({})).await;
        let id = ep["id"].as_str().unwrap();
        app.call(
            Method::POST,
            &format!("/orgs/{org}/webhooks/{id}/test"),
            &token,
            None,
        )
        .await;
        let hits = receiver.until("three attempts", |h| h.len() >= 3).await;
        let ts: Vec<i64> = hits
            .iter()
            .map(|h| h.headers["webhook-timestamp"].parse().unwrap())
            .collect();
        // The schedule says 1 s; the endpoint asked for 3.
        assert!(ts[2] - ts[1] >= 3, "{ts:?}");
        let log = wait_for_log(&app, &token, &org, id, 3).await;
        let codes: Vec<i64> = log
            .iter()
            .map(|a| a["status_code"].as_i64().unwrap())
            .collect();
        assert_eq!(codes, vec![200, 429, 302]);
        app
    }
);

/// A target that became private after it was accepted (here written straight to storage, as
/// a DNS change would make it) is refused when the delivery is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_target_is_refused_at_delivery_too() {
    let app = TestApp::spawn(Db::Sqlite, |c| {
        c.webhooks_poll_interval_ms = 50;
        c.webhooks_retry_schedule = vec![0];
    })
    .await;
    let receiver = Receiver::start().await;
    let owner = app.person().await;
    let org = app.org(&owner, "Rebound").await;
    let now = app.state.edge.clock.now_ms();
    let named = receiver.url.replace("127.0.0.1", "localhost");
    for (i, url) in [receiver.url.clone(), named].into_iter().enumerate() {
        let id = format!("whk_{}", uuid::Uuid::new_v4().simple());
        let e = gatehouse::store::WebhookEndpoint {
            id: id.clone(),
            org_id: org.clone(),
            url,
            description: String::new(),
            event_types: None,
            enabled: true,
            secret: gatehouse::config::SecretString::from(
                gatehouse::webhooks::signing::new_secret(),
            ),
            previous_secret: None,
            previous_secret_expires_at: None,
            failing_since: None,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        };
        let audit = gatehouse::store::Audit {
            actor: "test".into(),
            ip: None,
            now,
        };
        app.state
            .runtime
            .store
            .create_webhook_endpoint(&e, &audit)
            .await
            .unwrap();
        let (status, _) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks/{id}/test"),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 202);
        let log = wait_for_log(&app, &owner.token, &org, &id, 1).await;
        assert_eq!(log[0]["status_code"], json!(null), "{i}: {log:?}");
        assert_eq!(log[0]["succeeded"], false);
        let why = log[0]["response"].as_str().unwrap();
        assert!(why.contains("private"), "{i}: {why}");
    }
    // Each attempt's log row is written after its request would have been sent, and the
    // receiver records a request as it arrives; the schedule `[0]` allows no retry. So with
    // both rows in, a request that reached the private address would be among the hits.
    assert!(
        receiver.hits().is_empty(),
        "nothing reached the private address"
    );
    app.stop().await;
}

/// The endpoint's delivery log once it has `n` attempts.
async fn wait_for_log(app: &TestApp, token: &str, org: &str, id: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (status, log) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/webhooks/{id}/deliveries"),
                token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        let list = log["data"].as_array().unwrap().clone();
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the delivery log never reached {n} attempts");
}

/// Sends a `webhook.test` event to endpoint `id` and waits until `receiver` has it: the
/// worker has claimed and sent everything that was due before it, so a "nothing else
/// arrived" check made afterwards rests on an event, not on a guess about timing.
async fn settle(app: &TestApp, receiver: &Receiver, token: &str, org: &str, id: &str) {
    let (status, queued) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/webhooks/{id}/test"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let message = queued["data"]["message_id"].as_str().unwrap().to_string();
    receiver
        .until("the later webhook.test", |h| {
            h.iter().any(|h| h.id() == message)
        })
        .await;
}

story!(
    a_rotated_secret_signs_beside_the_old_one,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        let (token, org, ep) = setup(&app, &receiver, json!({})).await;
        let (old, id) = (ep["secret"].as_str().unwrap(), ep["id"].as_str().unwrap());
        let (status, rotated) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks/{id}/rotate-secret"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{rotated}");
        let new = rotated["data"]["secret"].as_str().unwrap();
        assert!(new.starts_with("whsec_") && new != old);
        let until = rotated["data"]["previous_secret_expires_at"]
            .as_i64()
            .unwrap();
        let day = until - app.state.edge.clock.now_ms();
        assert!((86_300_000..=86_400_000).contains(&day), "{day}");
        app.call(
            Method::POST,
            &format!("/orgs/{org}/webhooks/{id}/test"),
            &token,
            None,
        )
        .await;
        let hit = receiver.event("webhook.test").await;
        assert_eq!(hit.headers["webhook-signature"].split(' ').count(), 2);
        assert!(verifies(old, &hit) && verifies(new, &hit));
        app
    }
);

story!(
    events_follow_the_endpoint_filter_and_carry_ids,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        let body = json!({"event_types": ["member.added", "member.role_changed", "member.removed", "thread.created", "api_key.revoked", "api_key.rolled"]});
        let (token, org, ep) = setup(&app, &receiver, body).await;
        let owner_token = token.clone();
        let bob = app.person().await;
        let (key, key_id) = {
            let (s, b) = app
                .call(
                    Method::POST,
                    &format!("/orgs/{org}/api-keys"),
                    &owner_token,
                    Some(json!({"name": "k", "scopes": ["chat:write"]})),
                )
                .await;
            assert_eq!(s, 201);
            (
                b["data"]["key"].as_str().unwrap().to_string(),
                b["data"]["id"].as_str().unwrap().to_string(),
            )
        };
        app.add_by_token(&owner_token, &org, &bob, "member").await;
        app.call(
            Method::PATCH,
            &format!("/orgs/{org}/members/{}", bob.id),
            &owner_token,
            Some(json!({"role": "admin"})),
        )
        .await;
        app.call(
            Method::DELETE,
            &format!("/orgs/{org}/members/{}", bob.id),
            &owner_token,
            None,
        )
        .await;
        let (status, _) = app
            .call(
                Method::POST,
                "/chat",
                &key,
                Some(json!({"message": "hello"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, rolled) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys/{key_id}/roll"),
                &owner_token,
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 201, "{rolled}");
        let new_id = rolled["data"]["id"].as_str().unwrap();
        app.call(
            Method::DELETE,
            &format!("/orgs/{org}/api-keys/{new_id}"),
            &owner_token,
            None,
        )
        .await;
        let added = receiver.event("member.added").await.json();
        assert_eq!(added["data"]["user_id"], json!(bob.id));
        assert_eq!(added["data"]["role"], "member");
        let changed = receiver.event("member.role_changed").await.json();
        assert_eq!(
            (
                changed["data"]["from"].clone(),
                changed["data"]["to"].clone()
            ),
            (json!("member"), json!("admin"))
        );
        receiver.event("member.removed").await;
        let thread = receiver.event("thread.created").await.json();
        assert!(thread["data"]["id"].as_str().unwrap().starts_with("thr_"));
        assert_eq!(thread["data"]["key_id"], json!(key_id));
        let r = receiver.event("api_key.rolled").await.json();
        assert_eq!(r["data"]["replaces"], json!(key_id));
        let revoked = receiver.event("api_key.revoked").await.json();
        assert_eq!(revoked["data"]["id"], json!(new_id));
        // A later event arrives: what came before it and was not subscribed never will.
        settle(&app, &receiver, &token, &org, ep["id"].as_str().unwrap()).await;
        let types: Vec<String> = receiver.hits().iter().map(Hit::event_type).collect();
        assert!(
            !types.contains(&"api_key.created".to_string()),
            "not subscribed: {types:?}"
        );
        assert_eq!(
            types.len(),
            7,
            "six subscribed events and the test: {types:?}"
        );
        app
    }
);

story!(
    a_key_over_its_limit_raises_one_event_per_window,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        let (token, org, ep) = setup(
            &app,
            &receiver,
            json!({"event_types": ["rate_limit.exceeded"]}),
        )
        .await;
        let (status, created) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &token,
                Some(json!({"name": "k", "rate_limits": [{"limit": 2, "window_seconds": 3600}]})),
            )
            .await;
        assert_eq!(status, 201);
        let key = created["data"]["key"].as_str().unwrap();
        let mut refused = 0;
        for _ in 0..8 {
            if app.me(key).await.status() == 429 {
                refused += 1;
            }
        }
        assert_eq!(refused, 6);
        let hit = receiver.event("rate_limit.exceeded").await.json();
        assert_eq!(hit["data"]["key_id"], created["data"]["id"]);
        assert_eq!(hit["data"]["limit"], 2);
        assert_eq!(hit["data"]["window_seconds"], 3600);
        // A later event arrives after the refusals' events were recorded and sent.
        settle(&app, &receiver, &token, &org, ep["id"].as_str().unwrap()).await;
        let limited = receiver
            .hits()
            .iter()
            .filter(|h| h.event_type() == "rate_limit.exceeded")
            .count();
        assert_eq!(limited, 1, "one event for six refusals");
        app
    }
);

story!(
    a_410_disables_the_endpoint_and_says_so,
    fast,
    |app: TestApp| async move {
        let gone = Receiver::start().await;
        gone.script(&[Reply::Status(410)]);
        let watcher = Receiver::start().await;
        let (token, org, ep) = setup(&app, &gone, json!({})).await;
        let id = ep["id"].as_str().unwrap();
        let (status, _) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks"),
                &token,
                Some(json!({"url": watcher.url, "event_types": ["webhook.endpoint_disabled"]})),
            )
            .await;
        assert_eq!(status, 201);
        app.call(
            Method::POST,
            &format!("/orgs/{org}/webhooks/{id}/test"),
            &token,
            None,
        )
        .await;
        let disabled = watcher.event("webhook.endpoint_disabled").await.json();
        assert_eq!(disabled["data"]["endpoint_id"], json!(id));
        assert_eq!(disabled["data"]["reason"], "gone");
        let (_, ep) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/webhooks/{id}"),
                &token,
                None,
            )
            .await;
        assert_eq!(ep["data"]["enabled"], false);
        assert_eq!(ep["data"]["disabled_reason"], "gone");
        assert_eq!(gone.hits().len(), 1, "410 is not retried");
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks/{id}/test"),
                &token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (409, "conflict", ""),
            "{refused}"
        );
        let (_, audit) = app
            .call(Method::GET, &format!("/orgs/{org}/audit-log"), &token, None)
            .await;
        assert!(audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "webhook_endpoint.disabled" && e["actor"] == "system"));
        // Enabling it again clears the reason.
        let (status, ep) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/webhooks/{id}"),
                &token,
                Some(json!({"enabled": true, "description": "back"})),
            )
            .await;
        assert_eq!(status, 200, "{ep}");
        assert_eq!(ep["data"]["disabled_reason"], json!(null));
        assert_eq!(ep["data"]["description"], "back");
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_five_days_is_disabled() {
    let clock = gatehouse::clock::Clock::manual(gatehouse::clock::Clock::System.now_ms());
    let app = TestApp::spawn_with_clock(Db::Sqlite, clock.clone(), fast).await;
    let receiver = Receiver::start().await;
    receiver.script(&[Reply::Status(500); 10]);
    let (token, org, ep) = setup(&app, &receiver, json!({})).await;
    let id = ep["id"].as_str().unwrap();
    app.call(
        Method::POST,
        &format!("/orgs/{org}/webhooks/{id}/test"),
        &token,
        None,
    )
    .await;
    receiver.until("the first attempt", |h| !h.is_empty()).await;
    // The attempt's log row is written in the transaction that starts the failure streak.
    wait_for_log(&app, &token, &org, id, 1).await;
    let e = app
        .state
        .runtime
        .store
        .webhook_endpoint(&org, id)
        .await
        .unwrap();
    assert!(e.enabled && e.failing_since.is_some());
    clock.advance_ms(5 * 86_400_000 + 2000);
    receiver.until("the retry", |h| h.len() >= 2).await;
    for _ in 0..100 {
        let e = app
            .state
            .runtime
            .store
            .webhook_endpoint(&org, id)
            .await
            .unwrap();
        if !e.enabled {
            assert_eq!(e.disabled_reason.as_deref(), Some("failing"));
            app.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the endpoint was not disabled after failing for 5 days");
}

story!(
    input_is_checked_and_other_organizations_endpoints_are_not_found,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        let (token, org, ep) = setup(&app, &receiver, json!({})).await;
        let id = ep["id"].as_str().unwrap();
        let path = format!("/orgs/{org}/webhooks");
        for (body, field) in [
            (json!({"url": "ftp://example.com/x"}), "url"),
            (json!({"url": "not a url"}), "url"),
            (
                json!({"url": format!("https://example.com/{}", "x".repeat(2100))}),
                "url",
            ),
            (
                json!({"url": receiver.url, "event_types": []}),
                "event_types",
            ),
            (
                json!({"url": receiver.url, "event_types": ["nope"]}),
                "event_types",
            ),
            (
                json!({"url": receiver.url, "description": "d".repeat(201)}),
                "description",
            ),
        ] {
            let (status, res) = app
                .call(Method::POST, &path, &token, Some(body.clone()))
                .await;
            assert_eq!(status, 422, "{body} → {res}");
            assert!(
                res["error"]["details"]["fields"][field].is_string(),
                "{res}"
            );
        }
        let (status, refused) = app
            .call(
                Method::POST,
                &path,
                &token,
                Some(json!({"url": receiver.url, "surprise": 1})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (400, "invalid_request", ""),
            "{refused}"
        );
        let (status, refused) = app
            .call(Method::GET, &format!("{path}/not-an-id"), &token, None)
            .await;
        assert_eq!(
            refusal(status, &refused),
            (400, "invalid_request", "malformed_id"),
            "{refused}"
        );
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("{path}/deliveries/whd_x/retry"),
                &token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (400, "invalid_request", "malformed_id"),
            "{refused}"
        );
        // Another organization sees none of it.
        let eve = app.person().await;
        let eve_org = app.org(&eve, "Other").await;
        let theirs = format!("/orgs/{eve_org}/webhooks/{id}");
        for (method, suffix) in [
            (Method::GET, ""),
            (Method::PATCH, ""),
            (Method::DELETE, ""),
            (Method::POST, "/rotate-secret"),
            (Method::POST, "/test"),
            (Method::GET, "/deliveries"),
        ] {
            let body = (method == Method::PATCH).then(|| json!({"description": "x"}));
            let (status, res) = app
                .call(
                    method.clone(),
                    &format!("{theirs}{suffix}"),
                    &eve.token,
                    body,
                )
                .await;
            assert_eq!(
                refusal(status, &res),
                (404, "not_found", ""),
                "{method} {suffix}: {res}"
            );
        }
        let (status, refused) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/webhooks/{id}"),
                &eve.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (403, "forbidden", "not_a_member"),
            "not a member: {refused}"
        );
        // Members read but do not write.
        let mia = app.person().await;
        let owner = app.person().await;
        let _ = owner;
        app.add_by_token(&token, &org, &mia, "member").await;
        let (status, _) = app.call(Method::GET, &path, &mia.token, None).await;
        assert_eq!(status, 200);
        let (status, res) = app
            .call(
                Method::POST,
                &path,
                &mia.token,
                Some(json!({"url": receiver.url})),
            )
            .await;
        assert_eq!(
            (status, res["error"]["details"]["required"].clone()),
            (403, json!("webhooks:write"))
        );
        // A key with webhooks:write manages endpoints; deletion removes it.
        let (status, k) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &token,
                Some(json!({"name": "hooks", "scopes": ["webhooks:read", "webhooks:write"]})),
            )
            .await;
        assert_eq!(status, 201);
        let key = k["data"]["key"].as_str().unwrap();
        let (status, _) = app
            .call(Method::DELETE, &format!("{path}/{id}"), key, None)
            .await;
        assert_eq!(status, 204);
        let (status, refused) = app
            .call(Method::GET, &format!("{path}/{id}"), key, None)
            .await;
        assert_eq!(
            refusal(status, &refused),
            (404, "not_found", ""),
            "{refused}"
        );
        app
    }
);

story!(
    private_targets_are_refused_unless_allowed,
    |_c: &mut Config| {},
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Guarded").await;
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://10.0.0.1/hook",
            "http://192.168.1.10/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
        ] {
            let (status, res) = app
                .call(
                    Method::POST,
                    &format!("/orgs/{org}/webhooks"),
                    &owner.token,
                    Some(json!({ "url": url })),
                )
                .await;
            assert_eq!(status, 422, "{url}: {res}");
            assert!(res["error"]["details"]["fields"]["url"].is_string());
        }
        app
    }
);

story!(
    widget_changes_are_webhook_events_without_the_secret,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        let body = json!({"event_types": ["widget.created", "widget.updated", "widget.deleted"]});
        let (token, org, _) = setup(&app, &receiver, body).await;
        let (status, w) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets"),
                &token,
                Some(json!({"name": "Help", "allowed_origins": ["https://shop.example.com"]})),
            )
            .await;
        assert_eq!(status, 201, "{w}");
        let id = w["data"]["id"].as_str().unwrap().to_string();
        let secret = w["data"]["secret"].as_str().unwrap().to_string();
        let (status, _) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/widgets/{id}"),
                &token,
                Some(json!({"name": "Help desk"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, body) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/widgets/{id}"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let created = receiver.event("widget.created").await.json();
        assert_eq!(created["data"]["id"], json!(id));
        assert_eq!(
            created["data"]["allowed_origins"],
            json!(["https://shop.example.com"])
        );
        let updated = receiver.event("widget.updated").await.json();
        assert_eq!(updated["data"]["name"], "Help desk");
        receiver.event("widget.deleted").await;
        for hit in receiver.hits() {
            assert!(
                !hit.json().to_string().contains(&secret),
                "a widget secret in a webhook"
            );
        }
        app
    }
);

story!(
    invitations_raise_created_accepted_and_revoked_events,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        let body = json!({"event_types": ["invitation.created", "invitation.accepted", "invitation.revoked", "member.added"]});
        let (token, org, _) = setup(&app, &receiver, body).await;
        let bob = app.person().await;
        app.add_by_token(&token, &org, &bob, "member").await;
        let created = receiver.event("invitation.created").await.json();
        assert_eq!(created["data"]["email"], json!(bob.email));
        assert_eq!(created["data"]["role"], "member");
        assert!(created["data"].get("token").is_none());
        let accepted = receiver.event("invitation.accepted").await.json();
        assert_eq!(accepted["data"]["user_id"], json!(bob.id));
        assert_eq!(
            accepted["data"]["invitation_id"],
            created["data"]["invitation_id"]
        );
        let added = receiver.event("member.added").await.json();
        assert_eq!(added["data"]["user_id"], json!(bob.id));
        let carl = app.person().await;
        let (status, inv) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/invitations"),
                &token,
                Some(json!({"email": carl.email, "role": "member"})),
            )
            .await;
        assert_eq!(status, 201);
        let id = inv["data"]["id"].as_str().unwrap();
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/invitations/{id}"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let revoked = receiver.event("invitation.revoked").await.json();
        assert_eq!(revoked["data"]["invitation_id"], json!(id));
        app
    }
);

/// Whether `id` is `prefix` and the 32 hex digits of a UUID v7 (time-ordered).
fn is_v7(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|hex| uuid::Uuid::try_parse(hex).ok())
        .is_some_and(|u| u.get_version_num() == 7)
}

story!(
    webhook_ids_are_time_ordered_and_every_route_is_described,
    fast,
    |app: TestApp| async move {
        let receiver = Receiver::start().await;
        let (token, org, ep) = setup(&app, &receiver, json!({})).await;
        let id = ep["id"].as_str().unwrap().to_string();
        assert!(is_v7(&id, "whk_"), "{id}");
        let (status, queued) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks/{id}/test"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 202, "{queued}");
        let message = queued["data"]["message_id"].as_str().unwrap().to_string();
        assert!(is_v7(&message, "msg_"), "{message}");
        assert_eq!(receiver.event("webhook.test").await.id(), message);
        let attempt = wait_for_log(&app, &token, &org, &id, 1).await[0].clone();
        assert!(is_v7(attempt["id"].as_str().unwrap(), "wha_"), "{attempt}");
        let delivery = attempt["delivery_id"].as_str().unwrap().to_string();
        assert!(is_v7(&delivery, "whd_"), "{attempt}");
        let (status, retried) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks/deliveries/{delivery}/retry"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 202, "{retried}");
        assert_eq!(
            retried["data"],
            json!({"delivery_id": delivery, "status": "pending"})
        );

        let (status, doc) = parts(
            app.client
                .get(app.url("/openapi.json"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        let base = "/v1/orgs/{org}/webhooks";
        for (path, methods) in [
            (base.to_string(), &["get", "post"][..]),
            (format!("{base}/{{id}}"), &["get", "patch", "delete"][..]),
            (format!("{base}/{{id}}/rotate-secret"), &["post"][..]),
            (format!("{base}/{{id}}/test"), &["post"][..]),
            (format!("{base}/{{id}}/deliveries"), &["get"][..]),
            (format!("{base}/deliveries/{{id}}/retry"), &["post"][..]),
        ] {
            for method in methods {
                let op = &doc["paths"][&path][method];
                assert!(op["operationId"].is_string(), "{method} {path}: {op}");
                assert_eq!(op["security"].as_array().map(Vec::len), Some(3), "{op}");
                for status in ["401", "403", "404"] {
                    assert!(op["responses"][status].is_object(), "{method} {path}");
                }
            }
        }
        assert_eq!(
            doc["paths"][format!("{base}/{{id}}/rotate-secret")]["post"]["operationId"],
            "rotate_endpoint_secret"
        );
        let params = &doc["paths"][format!("{base}/deliveries/{{id}}/retry")]["post"]["parameters"];
        assert_eq!(
            params[0]["schema"]["pattern"], "^org_[0-9a-f]{32}$",
            "{params}"
        );
        assert_eq!(
            params[1]["schema"]["pattern"], "^whd_[0-9a-f]{32}$",
            "{params}"
        );
        app
    }
);
