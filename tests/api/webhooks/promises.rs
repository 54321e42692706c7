//! Delivery promises driven by the injected clock: `PATCH enabled:false` drops what was
//! pending, a 503's `Retry-After` postpones the retry, and five days of failures disable the
//! endpoint with an audit entry and a `webhook.endpoint_disabled` event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::clock::Clock;
use reqwest::Method;
use serde_json::{json, Value};

use super::{fast, setup, wait_for_log, Receiver, Reply};
use crate::helpers::{Db, TestApp};
use crate::story;

/// A server on a manual clock with fast deliveries.
async fn on_clock(db: Db) -> (TestApp, Clock) {
    let clock = Clock::manual(Clock::System.now_ms());
    let app = TestApp::spawn_with_clock(db, clock.clone(), fast).await;
    (app, clock)
}

async fn send_test(app: &TestApp, token: &str, org: &str, id: &str) {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/webhooks/{id}/test"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

async fn patch(app: &TestApp, token: &str, org: &str, id: &str, body: Value) -> Value {
    let (status, ep) = app
        .call(
            Method::PATCH,
            &format!("/orgs/{org}/webhooks/{id}"),
            token,
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{ep}");
    ep["data"].clone()
}

async fn access_token(app: &TestApp, email: &str, password: &str) -> String {
    let res = app.sign_in(email, password).await;
    assert_eq!(res.status(), 200);
    let s: Value = res.json().await.unwrap();
    s["access_token"].as_str().unwrap().to_string()
}

async fn create(app: &TestApp, token: &str, org: &str, body: Value) -> (u16, Value) {
    app.call(
        Method::POST,
        &format!("/orgs/{org}/webhooks"),
        token,
        Some(body),
    )
    .await
}

story!(
    disabling_an_endpoint_drops_its_pending_retries,
    setup: on_clock,
    |(app, clock): (TestApp, Clock)| async move {
        let receiver = Receiver::start().await;
        receiver.script(&[Reply::Status(500)]);
        let (token, org, ep) = setup(&app, &receiver, json!({})).await;
        let id = ep["id"].as_str().unwrap();
        send_test(&app, &token, &org, id).await;
        // The first attempt fails; its retry waits for the clock (1 s on the schedule).
        let first = receiver.until("the first attempt", |h| h.len() == 1).await;
        wait_for_log(&app, &token, &org, id, 1).await;

        let ep = patch(&app, &token, &org, id, json!({"enabled": false})).await;
        assert_eq!(ep["enabled"], false);
        // Enabled again at once: only what was pending when it was disabled is gone.
        patch(&app, &token, &org, id, json!({"enabled": true})).await;
        clock.advance_ms(60_000);

        // A later event reaches the endpoint: the worker has claimed everything due since
        // the clock moved. The dropped retry was not among it, then or since.
        send_test(&app, &token, &org, id).await;
        let hits = receiver.until("the later event", |h| h.len() >= 2).await;
        assert_ne!(hits[1].id(), first[0].id(), "the dropped retry was sent");
        let log = wait_for_log(&app, &token, &org, id, 2).await;
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(receiver.hits().len(), 2);
        assert_eq!(
            receiver.hits().iter().filter(|h| h.id() == first[0].id()).count(),
            1,
            "the message given up was sent again"
        );
        app
    }
);

story!(
    a_503_with_retry_after_postpones_the_retry_past_the_schedule,
    setup: on_clock,
    |(app, clock): (TestApp, Clock)| async move {
        let receiver = Receiver::start().await;
        receiver.script(&[Reply::RetryAfter(503, 120)]);
        let (token, org, ep) = setup(&app, &receiver, json!({})).await;
        let id = ep["id"].as_str().unwrap();
        // A second endpoint whose deliveries show that the worker has moved on.
        let other = Receiver::start().await;
        let (status, created) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks"),
                &token,
                Some(json!({"url": other.url})),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let other_id = created["data"]["id"].as_str().unwrap().to_string();

        send_test(&app, &token, &org, id).await;
        let first = receiver.until("the first attempt", |h| h.len() == 1).await;
        let log = wait_for_log(&app, &token, &org, id, 1).await;
        assert_eq!(log[0]["status_code"], 503);

        // Past the schedule's 1 s but before the 120 s asked for: no retry.
        clock.advance_ms(60_000);
        send_test(&app, &token, &org, &other_id).await;
        other.until("the other endpoint's event", |h| !h.is_empty()).await;
        wait_for_log(&app, &token, &org, &other_id, 1).await;
        assert_eq!(receiver.hits().len(), 1, "retried before Retry-After");

        // Once the 120 s are over, the same message comes again.
        clock.advance_ms(61_000);
        let hits = receiver.until("the retry", |h| h.len() >= 2).await;
        assert_eq!(hits[1].id(), first[0].id());
        app
    }
);

story!(
    an_endpoint_failing_for_five_days_is_disabled_audited_and_announced,
    setup: on_clock,
    |(app, clock): (TestApp, Clock)| async move {
        let receiver = Receiver::start().await;
        receiver.script(&[Reply::Status(500); 10]);
        let (email, password, _) = app.new_user().await;
        let token = access_token(&app, &email, &password).await;
        let (status, org) = app
            .call(Method::POST, "/orgs", &token, Some(json!({"name": "Failing"})))
            .await;
        assert_eq!(status, 201, "{org}");
        let org = org["data"]["id"].as_str().unwrap().to_string();
        let watcher = Receiver::start().await;
        let body = json!({"url": watcher.url, "event_types": ["webhook.endpoint_disabled"]});
        let (status, w) = create(&app, &token, &org, body).await;
        assert_eq!(status, 201, "{w}");
        let (status, ep) = create(&app, &token, &org, json!({"url": receiver.url})).await;
        assert_eq!(status, 201, "{ep}");
        let id = ep["data"]["id"].as_str().unwrap().to_string();

        send_test(&app, &token, &org, &id).await;
        receiver.until("the first attempt", |h| h.len() == 1).await;
        wait_for_log(&app, &token, &org, &id, 1).await;
        let (_, ep) = app
            .call(Method::GET, &format!("/orgs/{org}/webhooks/{id}"), &token, None)
            .await;
        assert_eq!(ep["data"]["enabled"], true, "{ep}");

        // Five days later the retry fails too: the endpoint is disabled.
        clock.advance_ms(5 * 86_400_000 + 2_000);
        receiver.until("the retry", |h| h.len() >= 2).await;
        let event = watcher.event("webhook.endpoint_disabled").await.json();
        assert_eq!(event["data"]["endpoint_id"], id.as_str(), "{event}");
        assert_eq!(event["data"]["reason"], "failing", "{event}");

        // The access token signed five days ago has expired: sign in again.
        let token = access_token(&app, &email, &password).await;
        let (status, ep) = app
            .call(Method::GET, &format!("/orgs/{org}/webhooks/{id}"), &token, None)
            .await;
        assert_eq!(status, 200, "{ep}");
        assert_eq!(ep["data"]["enabled"], false, "{ep}");
        assert_eq!(ep["data"]["disabled_reason"], "failing", "{ep}");
        let (status, audit) = app
            .call(Method::GET, &format!("/orgs/{org}/audit-log"), &token, None)
            .await;
        assert_eq!(status, 200, "{audit}");
        let disabled: Vec<&Value> = audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "webhook_endpoint.disabled")
            .collect();
        assert_eq!(disabled.len(), 1, "{audit}");
        assert_eq!(disabled[0]["actor"], "system");
        assert_eq!(disabled[0]["target"], id.as_str());
        assert_eq!(disabled[0]["details"]["reason"], "failing");

        // Nothing more is sent to it: a test event is refused as a conflict.
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks/{id}/test"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "conflict");
        app
    }
);
