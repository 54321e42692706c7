//! Money budgets against the mock OpenAI-compatible upstream (which reports `usage`, streamed
//! and not): reserve then settle, 402 `budget_exhausted`, 403 `model_unpriced`, organization
//! and end-user budgets, prices over the API, `budget.threshold`, a client gone mid-stream,
//! and the echo upstream's token counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::chat::Mock;
use crate::helpers::{eventually, parts, refusal, Person, TestApp};
use crate::story;

/// 1 micro-unit per prompt token, 2 per completion token.
pub(crate) fn priced(c: &mut gatehouse::config::Config) {
    c.models.insert(
        "test-model".into(),
        gatehouse::config::ModelPrice {
            input_per_mtok: 1_000_000,
            output_per_mtok: 2_000_000,
        },
    );
}

struct Setup {
    app: TestApp,
    mock: Mock,
    owner: Person,
    org: String,
}

async fn setup(db: crate::helpers::Db) -> Setup {
    let (url, mock) = crate::chat::mock_server().await;
    let app = TestApp::spawn(db, move |c| {
        c.upstream_url = Some(url);
        c.upstream_model = "test-model".into();
        c.upstream_timeout_ms = 5000;
        priced(c);
    })
    .await;
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    Setup {
        app,
        mock,
        owner,
        org,
    }
}

/// A key with `chat:write` and these budgets: (key, id).
async fn key_with(s: &Setup, budgets: Value) -> (String, String) {
    let (status, body) = s
        .app
        .call(
            Method::POST,
            &format!("/orgs/{}/api-keys", s.org),
            &s.owner.token,
            Some(json!({"name": "spender", "scopes": ["chat:write"], "budgets": budgets})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["budgets"], budgets);
    (
        body["data"]["key"].as_str().unwrap().to_string(),
        body["data"]["id"].as_str().unwrap().to_string(),
    )
}

pub(crate) async fn chat(app: &TestApp, key: &str, jwt: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url("/v1/chat"))
        .header("x-api-key", key)
        .json(&body);
    if let Some(t) = jwt {
        req = req.bearer_auth(t);
    }
    parts(req.send().await.unwrap()).await
}

/// A streamed chat read to its end: the names of its events.
pub(crate) async fn streamed(app: &TestApp, key: &str, body: Value) -> (u16, Vec<String>) {
    let mut body = body;
    body["stream"] = json!(true);
    let res = app
        .client
        .post(app.url("/v1/chat"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let events = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_string)
        .collect();
    (status, events)
}

/// The organization's settled spend as `/usage` reports it (the ledger's numbers).
async fn usage_cost(s: &Setup) -> i64 {
    let (status, body) = s
        .app
        .call(
            Method::GET,
            &format!("/orgs/{}/usage", s.org),
            &s.owner.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost"].as_i64().unwrap())
        .sum()
}

// The mock streams usage {prompt 7, completion 3} (cost 7 + 6 = 13) and answers "plain" with
// one JSON document and usage {3, 4} (cost 3 + 8 = 11). A chat of "hi" with max_tokens 10
// reserves (2 bytes + 4 + 8) + 2 × 10 = 34.
story!(
    a_key_budget_reserves_the_worst_case_settles_the_reported_usage_and_refuses_past_it,
    setup: setup,
    |s: Setup| async move {
        let budgets = json!([{"amount": 60, "period": "day"}]);
        let (key, key_id) = key_with(&s, budgets).await;
        let (status, body) = chat(&s.app, &key, None, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(status, 200, "{body}");
        // "plain" reserves (5 + 4 + 8) + 20 = 37: 13 + 37 <= 60.
        let (status, body) = chat(&s.app, &key, None, json!({"message": "plain", "max_tokens": 10})).await;
        assert_eq!(status, 200, "{body}");
        let (status, events) = streamed(&s.app, &key, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!((status, events.last().map(String::as_str)), (200, Some("done")));
        // 13 + 11 + 13 = 37 settled: 37 + 34 > 60.
        let (status, body) = chat(&s.app, &key, None, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(refusal(status, &body), (402, "budget_exhausted", ""), "{body}");
        let b = &body["error"]["details"]["budget"];
        assert_eq!(
            (b["scope"].as_str(), b["id"].as_str(), b["period"].as_str(), b["amount"].as_i64(), b["spent"].as_i64()),
            (Some("key"), Some(key_id.as_str()), Some("day"), Some(60), Some(37)),
            "{body}"
        );
        let now = gatehouse::clock::Clock::System.now_ms();
        let reset = b["resets_at"].as_i64().unwrap();
        assert!(reset > now && reset % 86_400_000 == 0, "next UTC midnight: {reset}");
        // The upstream was asked for the model with the reservation's max_tokens, usage on.
        let asked = s.mock.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 3, "the refused chat never went upstream");
        assert_eq!(asked[0].0["model"], "test-model");
        assert_eq!(asked[0].0["max_tokens"], 10);
        assert_eq!(asked[0].0["stream_options"]["include_usage"], true);
        // One set of numbers: the usage report and the spend report read the ledger.
        assert_eq!(usage_cost(&s).await, 37);
        let (status, body) = s
            .app
            .call(Method::GET, &format!("/orgs/{}/spend", s.org), &s.owner.token, None)
            .await;
        assert_eq!(status, 200, "{body}");
        let rows = body["data"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{body}");
        assert_eq!(
            (rows[0]["model"].as_str(), rows[0]["requests"].as_i64(), rows[0]["prompt_tokens"].as_i64(), rows[0]["completion_tokens"].as_i64(), rows[0]["cost"].as_i64()),
            (Some("test-model"), Some(3), Some(17), Some(10), Some(37))
        );
        // Its range reads as the usage report's: RFC 3339 times, and 31 days at most by hour.
        let day_ago = s.app.state.edge.clock.now_ms() - 86_400_000;
        let day_ago = time::OffsetDateTime::from_unix_timestamp(day_ago / 1000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let (status, body) = s
            .app
            .call(Method::GET, &format!("/orgs/{}/spend?from={day_ago}", s.org), &s.owner.token, None)
            .await;
        assert_eq!((status, body["data"].as_array().map(Vec::len)), (200, Some(1)), "{body}");
        let (status, body) = s
            .app
            .call(Method::GET, &format!("/orgs/{}/spend?granularity=hour&from={}", s.org, s.app.state.edge.clock.now_ms() - 40 * 86_400_000), &s.owner.token, None)
            .await;
        assert_eq!(refusal(status, &body), (422, "validation_failed", ""), "{body}");
        let (status, body) = s
            .app
            .call(Method::GET, &format!("/orgs/{}/api-keys/{key_id}/budgets", s.org), &s.owner.token, None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["data"][0]["spent"].as_i64(), body["data"][0]["remaining"].as_i64()),
            (Some(37), Some(23))
        );
        // Raising the budget lets the key chat again, at once.
        let (status, body) = s
            .app
            .call(
                Method::PATCH,
                &format!("/orgs/{}/api-keys/{key_id}", s.org),
                &s.owner.token,
                Some(json!({"budgets": [{"amount": 1000, "period": "month"}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = chat(&s.app, &key, None, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(status, 200, "{body}");
        s.app
    }
);

story!(
    a_model_without_a_price_is_refused_only_when_a_budget_applies,
    setup: setup,
    |s: Setup| async move {
        let (free, _) = s.app.key(&s.owner, &s.org, &["chat:write"]).await;
        let (status, body) = chat(&s.app, &free, None, json!({"message": "hi", "model": "mystery"})).await;
        assert_eq!(status, 200, "no budget, no price needed: {body}");
        let (key, _) = key_with(&s, json!([{"amount": 1000000, "period": "total"}])).await;
        let (status, body) = chat(&s.app, &key, None, json!({"message": "hi", "model": "mystery"})).await;
        assert_eq!(refusal(status, &body), (403, "model_unpriced", ""), "{body}");
        assert_eq!(body["error"]["details"]["model"], "mystery");
        // The organization prices it; the same chat goes through and costs that price.
        let (status, body) = s
            .app
            .call(
                Method::PUT,
                &format!("/orgs/{}/models/mystery/price", s.org),
                &s.owner.token,
                Some(json!({"input_per_mtok": 0, "output_per_mtok": 10000000})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["source"], "org");
        let (status, body) = chat(&s.app, &key, None, json!({"message": "hi", "model": "mystery"})).await;
        assert_eq!(status, 200, "{body}");
        let (_, body) = s
            .app
            .call(Method::GET, &format!("/orgs/{}/prices", s.org), &s.owner.token, None)
            .await;
        let models: Vec<(&str, &str)> = body["data"]["prices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["model"].as_str().unwrap(), p["source"].as_str().unwrap()))
            .collect();
        assert_eq!(models, vec![("mystery", "org"), ("test-model", "config")]);
        // The unpriced chat cost 0; the priced one 3 × 10 = 30.
        assert_eq!(usage_cost(&s).await, 30);
        let (status, _) = s
            .app
            .call(Method::DELETE, &format!("/orgs/{}/models/mystery/price", s.org), &s.owner.token, None)
            .await;
        assert_eq!(status, 204);
        let (status, body) = chat(&s.app, &key, None, json!({"message": "hi", "model": "mystery"})).await;
        assert_eq!(refusal(status, &body), (403, "model_unpriced", ""), "{body}");
        s.app
    }
);

story!(
    organization_and_end_user_budgets_refuse_with_their_scope_and_alert_once_per_threshold,
    setup: setup,
    |s: Setup| async move {
        let (key, _) = s.app.key(&s.owner, &s.org, &["chat:write"]).await;
        let (status, body) = s
            .app
            .call(
                Method::PUT,
                &format!("/orgs/{}/budgets", s.org),
                &s.owner.token,
                Some(json!({
                    "budgets": [{"amount": 100, "period": "month"}, {"amount": 20, "period": "day", "soft": true}],
                    "end_user_budgets": [{"amount": 60, "period": "week"}],
                })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        // Ann, as an end user, spends 13 per chat against her 60 a week: 3 chats (39) then
        // 39 + 34 > 60.
        let ann = s.app.person().await;
        for _ in 0..3 {
            let (status, body) = chat(&s.app, &key, Some(&ann.token), json!({"message": "hi", "max_tokens": 10})).await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = chat(&s.app, &key, Some(&ann.token), json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(refusal(status, &body), (402, "budget_exhausted", ""), "{body}");
        let b = &body["error"]["details"]["budget"];
        let ann_id = format!("u:{}", ann.id);
        assert_eq!((b["scope"].as_str(), b["id"].as_str(), b["spent"].as_i64()), (Some("end_user"), Some(ann_id.as_str()), Some(39)));
        // Without a person, the organization's 100 a month: 39 + 13 × 3 = 78, then 78 + 34 > 100.
        for _ in 0..3 {
            let (status, body) = chat(&s.app, &key, None, json!({"message": "hi", "max_tokens": 10})).await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = chat(&s.app, &key, None, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(refusal(status, &body), (402, "budget_exhausted", ""), "{body}");
        assert_eq!(body["error"]["details"]["budget"]["scope"], "org");
        // The soft daily 20 never refused, and alerted at 50, 80 and 100 % once each; the
        // monthly 100 at 50 % (39 + 13 = 52 ≥ 50) but not 80 (78 < 80); Ann's 60 at 50 % only.
        let (status, body) = s.app.call(Method::GET, &format!("/orgs/{}/budgets", s.org), &s.owner.token, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["budgets"][0]["spent"], 78);
        assert_eq!(body["data"]["budgets"][0]["remaining"], 22);
        let org_id = s.org.clone();
        let expected = vec![
            (format!("eu:{org_id}/{ann_id}:week"), 50),
            (format!("org:{org_id}:day"), 50),
            (format!("org:{org_id}:day"), 80),
            (format!("org:{org_id}:day"), 100),
            (format!("org:{org_id}:month"), 50),
        ];
        let app = &s.app;
        let token = s.owner.token.clone();
        let alerts = || async {
            let (_, body) = app
                .call(Method::GET, &format!("/orgs/{org_id}/audit-log?action=budget.threshold"), &token, None)
                .await;
            let mut got: Vec<(String, i64)> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["target"].as_str().unwrap().to_string(), e["details"]["threshold"].as_i64().unwrap()))
                .collect();
            got.sort();
            got
        };
        eventually(Duration::from_secs(10), "the threshold alerts are recorded", || async {
            alerts().await == expected
        })
        .await;
        s.app
    }
);

story!(
    a_client_gone_mid_stream_is_settled_and_its_reservation_released,
    setup: setup,
    |s: Setup| async move {
        // Room for exactly one reservation of 34 at a time.
        let (key, _) = key_with(&s, json!([{"amount": 40, "period": "day"}])).await;
        let res = s
            .app
            .client
            .post(s.app.url("/v1/chat"))
            .header("x-api-key", &key)
            .json(&json!({"message": "hang", "max_tokens": 10, "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let mut body = res.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("Hello"));
        // While it streams, its reservation holds the room.
        let (status, b) = chat(&s.app, &key, None, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(refusal(status, &b), (402, "budget_exhausted", ""), "{b}");
        drop(body);
        // Gone: the cost of what was streamed (estimated: no usage came) is settled and the
        // reservation released.
        let s_ref = &s;
        eventually(Duration::from_secs(10), "the dropped stream is settled", || async move {
            usage_cost(s_ref).await > 0
        })
        .await;
        let spent = usage_cost(&s).await;
        // "hang" is 4 bytes (1 token + 1 per message), "Hello" 5 bytes (2 tokens): 2 + 4.
        assert_eq!(spent, 6);
        let (status, b) = chat(&s.app, &key, None, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(status, 200, "{b}");
        s.app
    }
);

story!(
    the_echo_upstream_reports_token_counts_so_a_dev_server_shows_spend,
    |c: &mut gatehouse::config::Config| {
        c.models.insert(
            "default".into(),
            gatehouse::config::ModelPrice {
                input_per_mtok: 1_000_000,
                output_per_mtok: 1_000_000,
            },
        );
    },
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Echo").await;
        let (key, _) = app.key(&owner, &org, &["chat:write"]).await;
        let (status, body) = chat(
            &app,
            &key,
            None,
            json!({"message": "12345678", "max_tokens": 1000}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let answer = body["data"]["response"].as_str().unwrap().to_string();
        let (status, body) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/spend"),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let row = &body["data"][0];
        assert_eq!(row["model"], "default");
        // A quarter of the bytes, rounded up: 8 bytes sent, the answer's bytes received.
        assert_eq!(row["prompt_tokens"], 2);
        assert_eq!(
            row["completion_tokens"].as_u64(),
            Some((answer.len() as u64).div_ceil(4))
        );
        assert_eq!(
            row["cost"].as_u64(),
            Some(2 + (answer.len() as u64).div_ceil(4))
        );
        // max_tokens cuts the echo's answer.
        let (status, body) = chat(
            &app,
            &key,
            None,
            json!({"message": "12345678", "max_tokens": 2}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["response"].as_str().unwrap().len(), 8);
        app
    }
);

story!(
    bad_budgets_and_prices_are_named_in_422s,
    setup: setup,
    |s: Setup| async move {
        for budgets in [
            json!([{"amount": 0, "period": "day"}]),
            json!([{"amount": 5, "period": "day"}, {"amount": 6, "period": "day"}]),
            json!([]),
        ] {
            let (status, body) = s
                .app
                .call(
                    Method::POST,
                    &format!("/orgs/{}/api-keys", s.org),
                    &s.owner.token,
                    Some(json!({"name": "k", "scopes": [], "budgets": budgets})),
                )
                .await;
            assert_eq!(refusal(status, &body), (422, "validation_failed", ""), "{body}");
            assert!(body["error"]["details"]["fields"]["budgets"].is_string(), "{body}");
        }
        let (status, body) = s
            .app
            .call(
                Method::PUT,
                &format!("/orgs/{}/budgets", s.org),
                &s.owner.token,
                Some(json!({"end_user_budgets": [{"amount": -1, "period": "week"}]})),
            )
            .await;
        assert_eq!(refusal(status, &body), (422, "validation_failed", ""), "{body}");
        assert!(body["error"]["details"]["fields"]["end_user_budgets"].is_string(), "{body}");
        let (status, body) = s
            .app
            .call(
                Method::PUT,
                &format!("/orgs/{}/models/m/price", s.org),
                &s.owner.token,
                Some(json!({"input_per_mtok": -1, "output_per_mtok": 0})),
            )
            .await;
        assert_eq!(refusal(status, &body), (422, "validation_failed", ""), "{body}");
        let (status, body) = chat(&s.app, &s.app.key(&s.owner, &s.org, &["chat:write"]).await.0, None, json!({"message": "hi", "max_tokens": 0})).await;
        assert_eq!(refusal(status, &body), (422, "validation_failed", ""), "{body}");
        s.app
    }
);

/// Rolls key `id` of `s.org` with an hour's grace: (new key, new id).
async fn roll(s: &Setup, id: &str) -> (String, String) {
    let (status, body) = s
        .app
        .call(
            Method::POST,
            &format!("/orgs/{}/api-keys/{id}/roll", s.org),
            &s.owner.token,
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["data"]["key"].as_str().unwrap().to_string(),
        body["data"]["id"].as_str().unwrap().to_string(),
    )
}

story!(
    a_rolled_key_continues_its_budgets_spend_with_the_old_key_during_grace,
    setup: setup,
    |s: Setup| async move {
        let (old, old_id) = key_with(&s, json!([{"amount": 60, "period": "day"}])).await;
        let (status, body) = chat(&s.app, &old, None, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(status, 200, "{body}");
        let (new, new_id) = roll(&s, &old_id).await;
        // The spend before the roll counts after it: the new key starts at 13, not 0.
        let spent = |id: String| {
            let s = &s;
            async move {
                let (status, body) = s.app
                    .call(Method::GET, &format!("/orgs/{}/api-keys/{id}/budgets", s.org), &s.owner.token, None)
                    .await;
                assert_eq!(status, 200, "{body}");
                body["data"][0]["spent"].as_i64().unwrap()
            }
        };
        assert_eq!(spent(new_id.clone()).await, 13);
        // Both keys spend the one budget during the grace period: 13 + 11 + 13 = 37.
        let (status, body) = chat(&s.app, &new, None, json!({"message": "plain", "max_tokens": 10})).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = chat(&s.app, &old, None, json!({"message": "hi", "max_tokens": 10})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(spent(new_id.clone()).await, 37);
        assert_eq!(spent(old_id.clone()).await, 37);
        // 37 + 34 > 60: refused on either key, naming the key that asked.
        for (key, id) in [(&new, &new_id), (&old, &old_id)] {
            let (status, body) = chat(&s.app, key, None, json!({"message": "hi", "max_tokens": 10})).await;
            assert_eq!(refusal(status, &body), (402, "budget_exhausted", ""), "{body}");
            assert_eq!(body["error"]["details"]["budget"]["spent"], 37);
            assert_eq!(body["error"]["details"]["budget"]["id"], json!(id));
        }
        // The ledger still says which key spent what.
        let (status, body) = s.app
            .call(Method::GET, &format!("/orgs/{}/spend", s.org), &s.owner.token, None)
            .await;
        assert_eq!(status, 200, "{body}");
        let by_key = |id: &str| -> i64 {
            body["data"].as_array().unwrap().iter()
                .filter(|r| r["key_id"] == id).map(|r| r["cost"].as_i64().unwrap()).sum()
        };
        assert_eq!((by_key(&old_id), by_key(&new_id)), (26, 11), "{body}");
        s.app
    }
);

/// An OAuth client's chat: `POST /v1/chat` with its access token alone.
async fn client_chat(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    parts(
        app.client
            .post(app.url("/v1/chat"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Sets an organization's budgets as its owner.
async fn put_budgets(s: &Setup, org: &str, budgets: Value) -> Value {
    let (status, body) = s
        .app
        .call(
            Method::PUT,
            &format!("/orgs/{org}/budgets"),
            &s.owner.token,
            Some(budgets),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Client budgets: each OAuth client of an organization separately, in that organization
/// only. The mock's "hi" costs 13 and reserves 34 (see above).
async fn client_budgets_story(s: Setup) -> TestApp {
    use crate::oauth_principal::{authorize, register};
    let beta = s.app.org(&s.owner, "Beta").await;
    let daily = json!([{"amount": 60, "period": "day"}]);
    let body = put_budgets(&s, &s.org, json!({"client_budgets": daily})).await;
    assert_eq!(body["data"]["client_budgets"], daily);
    assert_eq!(body["data"]["budgets"], Value::Null);
    put_budgets(&s, &beta, json!({"client_budgets": daily})).await;
    let ann = s.app.person().await;
    s.app.add(&s.owner, &s.org, &ann, "member").await;
    let first = register(&s.app, "First").await;
    let second = register(&s.app, "Second").await;
    let token = |t: Value| t["access_token"].as_str().unwrap().to_string();
    let first_acme = token(authorize(&s.app, &s.owner, &first, &s.org, "chat:write", "v1").await);
    let first_ann = token(authorize(&s.app, &ann, &first, &s.org, "chat:write", "v1").await);
    let second_acme = token(authorize(&s.app, &s.owner, &second, &s.org, "chat:write", "v1").await);
    // Another scope set, so that the owner's remembered consent in Acme is not reused.
    let first_beta = token(
        authorize(
            &s.app,
            &s.owner,
            &first,
            &beta,
            "chat:write keys:read",
            "v1",
        )
        .await,
    );
    let claims = |t: &str| -> Value {
        use base64::Engine;
        let payload = t.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims(&first_beta)["org_id"], beta.as_str());
    assert_eq!(claims(&first_acme)["org_id"], s.org.as_str());
    let hi = json!({"message": "hi", "max_tokens": 10});
    // The first client, for the owner and for Ann together: 13 each; the third fits only
    // because the first two gave back all but their cost (26 + 34 = 60).
    for t in [&first_acme, &first_ann, &first_acme] {
        let (status, body) = client_chat(&s.app, t, hi.clone()).await;
        assert_eq!(status, 200, "{body}");
    }
    // 39 + 34 > 60: refused for either person, naming the client.
    for t in [&first_acme, &first_ann] {
        let (status, body) = client_chat(&s.app, t, hi.clone()).await;
        assert_eq!(
            refusal(status, &body),
            (402, "budget_exhausted", ""),
            "{body}"
        );
        let b = &body["error"]["details"]["budget"];
        assert_eq!(
            (
                b["scope"].as_str(),
                b["id"].as_str(),
                b["spent"].as_i64(),
                b["amount"].as_i64()
            ),
            (Some("client"), Some(first.as_str()), Some(39), Some(60)),
            "{body}"
        );
    }
    // A smaller chat still fits (39 + 14 + 6 = 59): a refusal held nothing back.
    let (status, body) = client_chat(
        &s.app,
        &first_acme,
        json!({"message": "hi", "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Another client of the same organization has a budget of its own.
    let (status, body) = client_chat(&s.app, &second_acme, hi.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The same client in another organization: that organization's budget, untouched.
    let (status, body) = client_chat(&s.app, &first_beta, hi.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The ledger names the client: the spend report per client.
    let (status, body) = s
        .app
        .call(
            Method::GET,
            &format!("/orgs/{}/spend?granularity=day", s.org),
            &s.owner.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let per_client = |id: &str| -> i64 {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["client_id"] == id)
            .map(|r| r["cost"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(
        (per_client(&first), per_client(&second)),
        (52, 13),
        "{body}"
    );
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["key_id"].is_null()),
        "{body}"
    );
    // The alerts: the first client's budget at 50 % (52 of 60) and 80 % (48), not 100 %.
    let org_id = s.org.clone();
    let expected = vec![
        (format!("oc:{org_id}/{first}:day"), 50),
        (format!("oc:{org_id}/{first}:day"), 80),
    ];
    let app = &s.app;
    let owner = s.owner.token.clone();
    eventually(
        Duration::from_secs(10),
        "the client's threshold alerts are recorded",
        || async {
            let (_, body) = app
                .call(
                    Method::GET,
                    &format!("/orgs/{org_id}/audit-log?action=budget.threshold"),
                    &owner,
                    None,
                )
                .await;
            let mut got: Vec<(String, i64)> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["target"].as_str().unwrap().to_string(),
                        e["details"]["threshold"].as_i64().unwrap(),
                    )
                })
                .collect();
            got.sort();
            got == expected
        },
    )
    .await;
    // Lifting the client budgets lets the first client chat again; the organization's
    // budget still counts its spend (52 + 13 + 34 > 90).
    put_budgets(
        &s,
        &s.org,
        json!({"budgets": [{"amount": 90, "period": "day"}]}),
    )
    .await;
    let (status, body) = client_chat(&s.app, &first_acme, hi.clone()).await;
    assert_eq!(
        refusal(status, &body),
        (402, "budget_exhausted", ""),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["budget"]["scope"], "org");
    put_budgets(&s, &s.org, json!({"budgets": null})).await;
    let (status, body) = client_chat(&s.app, &first_acme, hi).await;
    assert_eq!(status, 200, "{body}");
    s.app
}

story!(
    an_oauth_client_over_its_budget_is_refused_while_another_client_and_another_org_still_chat,
    setup: setup,
    client_budgets_story
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_budgets_are_counted_in_redis_on_postgres_on_redis() {
    let (url, mock) = crate::chat::mock_server().await;
    let app = TestApp::spawn(crate::helpers::Db::Postgres, move |c| {
        c.upstream_url = Some(url);
        c.upstream_model = "test-model".into();
        c.upstream_timeout_ms = 5000;
        c.redis_url = Some(gatehouse::config::SecretString::from(
            crate::helpers::redis_url(),
        ));
        c.redis_prefix = crate::helpers::redis_prefix();
        priced(c);
    })
    .await;
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let s = Setup {
        app,
        mock,
        owner,
        org,
    };
    client_budgets_story(s).await.stop().await;
}

/// A client's budget counters lost with Redis are seeded again from the ledger, which names
/// the client of every settled chat: what was settled is never forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_budget_lost_with_redis_is_recounted_from_the_ledger_on_postgres_on_redis() {
    use crate::oauth_principal::access;
    let (url, _mock) = crate::chat::mock_server().await;
    let prefix = crate::helpers::redis_prefix();
    let p = prefix.clone();
    let app = TestApp::spawn(crate::helpers::Db::Postgres, move |c| {
        c.upstream_url = Some(url);
        c.upstream_model = "test-model".into();
        c.upstream_timeout_ms = 5000;
        c.redis_url = Some(gatehouse::config::SecretString::from(
            crate::helpers::redis_url(),
        ));
        c.redis_prefix = p;
        priced(c);
    })
    .await;
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/orgs/{org}/budgets"),
            &owner.token,
            Some(json!({"client_budgets": [{"amount": 60, "period": "month"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (token, client) = access(&app, &owner, &org, "chat:write").await;
    let hi = json!({"message": "hi", "max_tokens": 10});
    for _ in 0..3 {
        let (status, body) = client_chat(&app, &token, hi.clone()).await;
        assert_eq!(status, 200, "{body}");
    }
    // Redis forgets this server's budget counters.
    let mut conn = redis::Client::open(crate::helpers::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*spend*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.contains(&client)), "{keys:?}");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, body) = client_chat(&app, &token, hi).await;
    assert_eq!(
        refusal(status, &body),
        (402, "budget_exhausted", ""),
        "{body}"
    );
    let got = &body["error"]["details"]["budget"];
    assert_eq!(
        (
            got["scope"].as_str(),
            got["id"].as_str(),
            got["spent"].as_i64()
        ),
        (Some("client"), Some(client.as_str()), Some(39)),
        "{body}"
    );
    app.stop().await;
}
