//! The chat gateway against a real OpenAI-compatible mock server on a local port:
//! authentication, history, streaming, disconnects, upstream failures, thread isolation,
//! export and usage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, refusal, refused, Person, TestApp};
use crate::story;

const SECRET: &str = "sk-upstream-secret-1234";

/// A request body and its Authorization header.
type Asked = (Value, Option<String>);

/// A model server: records what it was asked, answers by the last message's text.
#[derive(Clone, Default)]
pub(crate) struct Mock {
    pub(crate) asked: Arc<Mutex<Vec<Asked>>>,
    dropped: Arc<AtomicBool>,
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn completions(
    axum::extract::State(mock): axum::extract::State<Mock>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    mock.asked.lock().unwrap().push((body.clone(), auth));
    let last = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    match last.as_str() {
        "fail" => {
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error, key {SECRET}"),
            )
                .into_response();
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        "plain" => {
            return Json(json!({
                "choices": [{"message": {"role": "assistant", "content": "A plain answer."}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4}
            }))
            .into_response();
        }
        _ => {}
    }
    let hang = last == "hang";
    let flag = DropFlag(mock.dropped.clone());
    let events = async_stream::stream! {
        let _flag = flag;
        for piece in ["Hello", ", ", "world"] {
            yield Ok::<_, std::convert::Infallible>(Event::default().data(
                json!({"choices": [{"delta": {"content": piece}}]}).to_string()));
            if hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        yield Ok(Event::default().data(
            json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}).to_string()));
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(events).into_response()
}

/// A recording model server on a free port: its base URL (`…/v1`) and what it was asked.
pub(crate) async fn mock_server() -> (String, Mock) {
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

struct Setup {
    app: TestApp,
    mock: Mock,
    owner: Person,
    org: String,
    key: String,
}

async fn setup(db: crate::helpers::Db) -> Setup {
    let (url, mock) = mock_server().await;
    let app = TestApp::spawn(db, move |c| {
        c.upstream_url = Some(url);
        c.upstream_model = "test-model".into();
        c.upstream_api_key = Some(gatehouse::config::SecretString::from(SECRET));
        c.upstream_timeout_ms = 1000;
    })
    .await;
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let (key, _) = app.key(&owner, &org, &["chat:write", "threads:read"]).await;
    Setup {
        app,
        mock,
        owner,
        org,
        key,
    }
}

async fn chat(app: &TestApp, key: &str, jwt: Option<&str>, body: Value) -> (u16, Value) {
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

story!(
    a_key_chats_and_the_second_turn_carries_the_history,
    setup: setup,
    |s: Setup| async move {
        let (status, body) = chat(
            &s.app,
            &s.key,
            None,
            json!({"message": "Hi there", "context": {"coachId": "coach_1", "n": [1, 2]}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["response"], "Hello, world");
        let thread = body["data"]["thread_id"].as_str().unwrap().to_string();
        assert!(thread.starts_with("thr_"));
        assert!(body["data"]["message_id"]
            .as_str()
            .unwrap()
            .starts_with("msg_"));
        let (status, body) = chat(
            &s.app,
            &s.key,
            None,
            json!({"message": "And then?", "thread_id": thread}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["thread_id"], thread.as_str());
        let asked = s.mock.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 2);
        let (first, auth) = &asked[0];
        assert_eq!(first["model"], "test-model");
        assert_eq!(
            first["context"],
            json!({"coachId": "coach_1", "n": [1, 2]}),
            "context unchanged"
        );
        assert_eq!(auth.as_deref(), Some(format!("Bearer {SECRET}").as_str()));
        assert_eq!(
            asked[1].0["messages"],
            json!([
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello, world"},
                {"role": "user", "content": "And then?"}
            ])
        );
        // The thread and its four messages are stored, owned by the organization.
        let (status, body) = s
            .app
            .call(Method::GET, &format!("/threads/{thread}"), &s.key, None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["data"]["user_id"].is_null());
        assert_eq!(body["data"]["org_id"], s.org.as_str());
        assert_eq!(body["data"]["messages"].as_array().unwrap().len(), 4);
        // The same chat at /api/chat, with the key as a bearer credential (seed 000).
        let res = s
            .app
            .client
            .post(s.app.url("/api/chat"))
            .bearer_auth(&s.key)
            .json(&json!({"message": "plain"}))
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["response"], "A plain answer.");
        s.app
    }
);

story!(
    a_users_token_next_to_the_key_makes_the_thread_theirs,
    setup: setup,
    |s: Setup| async move {
        let ann = s.app.person().await;
        let bob = s.app.person().await;
        let (status, body) =
            chat(&s.app, &s.key, Some(&ann.token), json!({"message": "mine"})).await;
        assert_eq!(status, 200, "{body}");
        let thread = body["data"]["thread_id"].as_str().unwrap().to_string();
        assert_eq!(s.mock.asked.lock().unwrap()[0].0["user"], ann.id.as_str());
        // Ann sees it with her own token; Bob does not, alone or through the app.
        let (_, body) = s.app.call(Method::GET, "/threads", &ann.token, None).await;
        assert_eq!(body["data"][0]["id"], thread.as_str());
        assert_eq!(body["data"][0]["user_id"], ann.id.as_str());
        let (status, refused) = s
            .app
            .call(Method::GET, &format!("/threads/{thread}"), &bob.token, None)
            .await;
        assert_eq!(refusal(status, &refused), (404, "not_found", ""), "{refused}");
        let (status, refused) = chat(
            &s.app,
            &s.key,
            Some(&bob.token),
            json!({"message": "let me in", "thread_id": thread}),
        )
        .await;
        assert_eq!(refusal(status, &refused), (404, "not_found", ""), "{refused}");
        // The key alone cannot continue a person's thread either.
        let (status, refused) = chat(
            &s.app,
            &s.key,
            None,
            json!({"message": "x", "thread_id": thread}),
        )
        .await;
        assert_eq!(refusal(status, &refused), (404, "not_found", ""), "{refused}");
        // Nor can another organization's key read or continue it.
        let other_org = s.app.org(&s.owner, "Other").await;
        let (other_key, _) = s
            .app
            .key(&s.owner, &other_org, &["chat:write", "threads:read"])
            .await;
        let (status, refused) = chat(
            &s.app,
            &other_key,
            Some(&ann.token),
            json!({"message": "x", "thread_id": thread}),
        )
        .await;
        assert_eq!(refusal(status, &refused), (404, "not_found", ""), "{refused}");
        let (status, refused) = s
            .app
            .call(Method::GET, &format!("/threads/{thread}"), &other_key, None)
            .await;
        assert_eq!(refusal(status, &refused), (404, "not_found", ""), "{refused}");
        let (_, body) = s.app.call(Method::GET, "/threads", &other_key, None).await;
        assert_eq!(body["data"], json!([]));
        // Ann continues it through the app; then deletes it.
        let (status, _) = chat(
            &s.app,
            &s.key,
            Some(&ann.token),
            json!({"message": "more", "thread_id": thread}),
        )
        .await;
        assert_eq!(status, 200);
        let (status, refused) = s
            .app
            .call(
                Method::DELETE,
                &format!("/threads/{thread}"),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(refusal(status, &refused), (404, "not_found", ""), "{refused}");
        let (status, _) = s
            .app
            .call(
                Method::DELETE,
                &format!("/threads/{thread}"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, refused) = s
            .app
            .call(Method::GET, &format!("/threads/{thread}"), &ann.token, None)
            .await;
        assert_eq!(refusal(status, &refused), (404, "not_found", ""), "{refused}");
        s.app
    }
);

story!(
    chat_needs_a_key_with_chat_write,
    setup: setup, |s: Setup| async move {
    let (status, body) = s
        .app
        .call(
            Method::POST,
            "/chat",
            &s.owner.token,
            Some(json!({"message": "hi"})),
        )
        .await;
    // A person's token alone: the organization's key is missing (docs/chat.md).
    assert_eq!(
        refusal(status, &body),
        (401, "unauthorized", "missing"),
        "{body}"
    );
    let (reader, _) = s.app.key(&s.owner, &s.org, &["threads:read"]).await;
    let (status, body) = chat(&s.app, &reader, None, json!({"message": "hi"})).await;
    assert_eq!(
        (status, body["error"]["details"]["required"].clone()),
        (403, json!("chat:write"))
    );
    let (writer, _) = s.app.key(&s.owner, &s.org, &["chat:write"]).await;
    let (status, body) = s.app.call(Method::GET, "/threads", &writer, None).await;
    assert_eq!(
        (status, body["error"]["details"]["required"].clone()),
        (403, json!("threads:read"))
    );
    // Values out of range are 422 with the field; a malformed id or shape is 400.
    for (bad, want) in [
        (json!({"message": ""}), (422, json!({"fields": {"message": "must be 1 byte to 32 KiB of text"}}))),
        (json!({"message": "x".repeat(40_000)}), (422, json!({"fields": {"message": "must be 1 byte to 32 KiB of text"}}))),
        (json!({"message": "x", "context": "nope"}), (422, json!({"fields": {"context": "must be a JSON object of at most 8 KiB"}}))),
        (json!({"message": "x", "thread_id": "t1"}), (400, json!({"reason": "malformed_id"}))),
        (json!({"message": "x", "extra": 1}), (400, Value::Null)),
    ] {
        let (status, body) = chat(&s.app, &s.key, None, bad.clone()).await;
        let code = if want.0 == 422 { "validation_failed" } else { "invalid_request" };
        assert_eq!(
            (status, body["error"]["code"].as_str(), &body["error"]["details"]),
            (want.0, Some(code), &want.1),
            "{bad}: {body}"
        );
    }
    assert!(
        s.mock.asked.lock().unwrap().is_empty(),
        "nothing reached the model server"
    );
    s.app
});

story!(
    streaming_relays_pieces_in_order_then_the_ids,
    setup: setup,
    |s: Setup| async move {
        let res = s
            .app
            .client
            .post(s.app.url("/v1/chat"))
            .header("x-api-key", &s.key)
            .json(&json!({"message": "stream please", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = res.text().await.unwrap();
        let events: Vec<(String, Value)> = text
            .split("\n\n")
            .filter(|b| b.contains("data:"))
            .map(|b| {
                let ev = b
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("")
                    .to_string();
                let data = b.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                (ev, serde_json::from_str(data).unwrap())
            })
            .collect();
        let deltas: Vec<&str> = events
            .iter()
            .filter(|(e, _)| e == "delta")
            .map(|(_, d)| d["content"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, ["Hello", ", ", "world"]);
        let (last_event, done) = events.last().unwrap();
        assert_eq!(last_event, "done");
        let thread = done["thread_id"].as_str().unwrap();
        let (_, body) = s
            .app
            .call(Method::GET, &format!("/threads/{thread}"), &s.key, None)
            .await;
        assert_eq!(body["data"]["messages"][1]["content"], "Hello, world");
        assert_eq!(body["data"]["messages"][1]["id"], done["message_id"]);
        s.app
    }
);

story!(
    a_client_that_goes_away_cancels_the_upstream_call,
    setup: setup,
    |s: Setup| async move {
        let res = s
            .app
            .client
            .post(s.app.url("/v1/chat"))
            .header("x-api-key", &s.key)
            .json(&json!({"message": "hang", "stream": true}))
            .send()
            .await
            .unwrap();
        let mut body = res.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("Hello"));
        assert!(!s.mock.dropped.load(Ordering::SeqCst));
        drop(body);
        let mut cancelled = false;
        for _ in 0..100 {
            if s.mock.dropped.load(Ordering::SeqCst) {
                cancelled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(cancelled, "the upstream stream was not dropped");
        // Nothing half-done was stored.
        let (_, body) = s.app.call(Method::GET, "/threads", &s.key, None).await;
        assert_eq!(body["data"], json!([]));
        s.app
    }
);

story!(
    upstream_failures_are_502_and_504_without_secrets,
    setup: setup,
    |s: Setup| async move {
        let (status, body) = chat(&s.app, &s.key, None, json!({"message": "fail"})).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "upstream_error");
        assert!(!body.to_string().contains(SECRET));
        assert!(!body.to_string().contains("internal error"));
        let (status, body) = chat(&s.app, &s.key, None, json!({"message": "slow"})).await;
        assert_eq!(status, 504, "{body}");
        assert_eq!(body["error"]["code"], "upstream_timeout");
        let (_, body) = s.app.call(Method::GET, "/threads", &s.key, None).await;
        assert_eq!(body["data"], json!([]), "a failed exchange stores nothing");
        s.app
    }
);

story!(
    export_streams_both_formats_and_usage_is_counted,
    setup: setup,
    |s: Setup| async move {
        let ann = s.app.person().await;
        chat(
            &s.app,
            &s.key,
            None,
            json!({"message": "first, \"quoted\""}),
        )
        .await;
        chat(
            &s.app,
            &s.key,
            Some(&ann.token),
            json!({"message": "=cmd()"}),
        )
        .await;
        chat(&s.app, &s.key, None, json!({"message": "plain"})).await;
        let (ndjson_status, ndjson) = {
            let res = s
                .app
                .v1(
                    Method::GET,
                    &format!("/orgs/{}/export?format=ndjson", s.org),
                    &s.owner.token,
                )
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        };
        assert_eq!(ndjson_status, 200);
        let lines: Vec<Value> = ndjson
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0]["content"], "first, \"quoted\"");
        assert_eq!(lines[0]["role"], "user");
        assert_eq!(lines[3]["user_id"], ann.id.as_str());
        assert_eq!(lines[6], json!({"type": "end", "count": 6}));
        let res = s
            .app
            .v1(
                Method::GET,
                &format!("/orgs/{}/export?format=csv", s.org),
                &s.owner.token,
            )
            .send()
            .await
            .unwrap();
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        let csv = res.text().await.unwrap();
        let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(rows.len(), 7);
        assert!(rows[0].starts_with("thread_id,"));
        assert!(rows[1].contains("\"first, \"\"quoted\"\"\""), "{}", rows[1]);
        assert!(
            rows[3].contains("'=cmd()"),
            "formulas are neutralised: {}",
            rows[3]
        );
        // Since a time after everything: nothing but the end line.
        let res = s
            .app
            .v1(
                Method::GET,
                &format!("/orgs/{}/export?since=4102444800000", s.org),
                &s.owner.token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.text().await.unwrap(),
            "{\"type\":\"end\",\"count\":0}\n"
        );
        // Export needs export:read; another organization's export is refused.
        let (status, refused) = s
            .app
            .call(
                Method::GET,
                &format!("/orgs/{}/export", s.org),
                &s.key,
                None,
            )
            .await;
        assert_eq!(refusal(status, &refused), (403, "forbidden", ""), "{refused}");
        assert_eq!(refused["error"]["details"]["required"], "export:read", "{refused}");
        let stranger = s.app.person().await;
        let (status, refused) = s
            .app
            .call(
                Method::GET,
                &format!("/orgs/{}/export", s.org),
                &stranger.token,
                None,
            )
            .await;
        assert_eq!(refusal(status, &refused), (403, "forbidden", "not_a_member"), "{refused}");
        let (status, refused) = s
            .app
            .call(
                Method::GET,
                &format!("/orgs/{}/export?format=xml", s.org),
                &s.owner.token,
                None,
            )
            .await;
        assert_eq!(refusal(status, &refused), (422, "validation_failed", ""), "{refused}");
        // Usage: three requests, with the tokens the model server reported.
        s.app.state.chat.usage.flush().await.unwrap();
        let (status, body) = s
            .app
            .call(
                Method::GET,
                &format!("/orgs/{}/usage?granularity=hour", s.org),
                &s.owner.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let rows = body["data"].as_array().unwrap();
        let sum = |f: &str| rows.iter().map(|r| r[f].as_i64().unwrap()).sum::<i64>();
        assert_eq!(sum("requests"), 3);
        assert_eq!(sum("prompt_tokens"), 7 + 7 + 3);
        assert_eq!(sum("completion_tokens"), 3 + 3 + 4);
        assert!(rows
            .iter()
            .all(|r| r["key_id"].as_str().unwrap().starts_with("key_")));
        let (_, body) = s
            .app
            .call(
                Method::GET,
                &format!("/orgs/{}/usage", s.org),
                &s.owner.token,
                None,
            )
            .await;
        assert_eq!(body["data"][0]["requests"], 3, "by day");
        let (status, refused) = s
            .app
            .call(
                Method::GET,
                &format!("/orgs/{}/usage?granularity=week", s.org),
                &s.owner.token,
                None,
            )
            .await;
        assert_eq!(refusal(status, &refused), (422, "validation_failed", ""), "{refused}");
        s.app
    }
);

async fn get_thread(s: &Setup, thread: &str) -> (u16, Value) {
    let res = s
        .app
        .client
        .get(s.app.url(&format!("/v1/threads/{thread}")))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    parts(res).await
}

story!(
    concurrent_turns_are_all_kept_and_a_deleted_thread_fails_alone,
    setup: setup,
    |s: Setup| async move {
        // Exchanges that arrive together are stored by one commit: none may be lost, and a
        // thread deleted meanwhile must not take the others' exchanges with it.
        let mut threads = Vec::new();
        for name in ["kept", "deleted"] {
            let (status, body) = chat(&s.app, &s.key, None, json!({ "message": name })).await;
            assert_eq!(status, 200, "{body}");
            threads.push(body["data"]["thread_id"].as_str().unwrap().to_string());
        }
        let (kept, doomed) = (threads[0].clone(), threads[1].clone());
        let turns = (0..12).map(|i| {
            let (app, key) = (&s.app, &s.key);
            let thread = if i % 2 == 0 { &kept } else { &doomed };
            async move {
                let body = json!({ "message": format!("turn {i}"), "thread_id": thread });
                (i, chat(app, key, None, body).await)
            }
        });
        let delete = async {
            let res = s
                .app
                .client
                .delete(s.app.url(&format!("/v1/threads/{doomed}")))
                .header("x-api-key", &s.key)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
        };
        let (answers, ()) = tokio::join!(futures_util::future::join_all(turns), delete);
        for (i, (status, body)) in &answers {
            if i % 2 == 0 {
                assert_eq!(*status, 200, "turn {i}: {body}");
            } else {
                assert!(
                    *status == 200 || *status == 404,
                    "turn {i}: {status} {body}"
                );
            }
        }
        let (status, body) = get_thread(&s, &kept).await;
        assert_eq!(status, 200, "{body}");
        let messages = body["data"]["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2 + 2 * 6, "{messages:?}");
        for i in (0..12).step_by(2) {
            let asked = format!("turn {i}");
            let n = messages
                .iter()
                .filter(|m| m["content"] == asked.as_str())
                .count();
            assert_eq!(n, 1, "{asked} stored once");
        }
        let (status, body) = get_thread(&s, &doomed).await;
        assert_eq!(refusal(status, &body), (404, "not_found", ""), "{body}");
        s.app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_model_server_the_echo_upstream_answers() {
    let app = TestApp::spawn(crate::helpers::Db::Sqlite, |_| {}).await;
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let (key, _) = app.key(&owner, &org, &["chat:write"]).await;
    let (status, body) = chat(&app, &key, None, json!({"message": "ping"})).await;
    assert_eq!(status, 200, "{body}");
    let response = body["data"]["response"].as_str().unwrap();
    assert!(response.starts_with("Echo upstream"), "{response}");
    assert!(response.ends_with("ping"));
    app.stop().await;
}

/// A customer backend that answers with what it received.
async fn echo_backend() -> String {
    async fn echo(req: axum::extract::Request) -> Json<Value> {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap();
        Json(json!({"method": method, "uri": uri, "headers": headers,
                    "body": String::from_utf8_lossy(&body)}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(echo))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forwards_with_a_verified_identity_that_cannot_be_forged() {
    let target = echo_backend().await;
    let app = TestApp::spawn(crate::helpers::Db::Sqlite, move |c| {
        c.proxy_target = Some(target);
        c.rate_limit_api_key = gatehouse::ratelimit::Rates::parse("3/60s").unwrap();
    })
    .await;
    let owner = app.person().await;
    let ann = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let (key, key_id) = app.key(&owner, &org, &["chat:write", "threads:read"]).await;
    let res = app
        .client
        .put(app.url("/api/orders/42?x=1"))
        .header("x-api-key", &key)
        .bearer_auth(&ann.token)
        .header("X-Gatehouse-Org", "org_forged")
        .header("x-gatehouse-user", "forged")
        .header("X-Gatehouse-Admin", "true")
        .header("x-custom", "kept")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-ratelimit-remaining"],
        "2",
        "limits applied"
    );
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["uri"], "/api/orders/42?x=1");
    assert_eq!(seen["body"], "payload");
    let h = &seen["headers"];
    assert_eq!(h["x-gatehouse-org"], org.as_str());
    assert_eq!(h["x-gatehouse-user"], ann.id.as_str());
    assert_eq!(h["x-gatehouse-key-id"], key_id.as_str());
    assert_eq!(h["x-gatehouse-scopes"], "chat:write,threads:read");
    assert!(
        h.get("x-gatehouse-admin").is_none(),
        "forged headers are stripped"
    );
    assert!(h.get("authorization").is_none() && h.get("x-api-key").is_none());
    assert_eq!(h["x-custom"], "kept");
    // No credential: refused before the backend; a forged header alone proves nothing.
    let res = app
        .client
        .get(app.url("/api/orders"))
        .header("x-gatehouse-org", &org)
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await, "401 unauthorized missing");
    // The key's limit holds on proxied routes too.
    for _ in 0..2 {
        app.client
            .get(app.url("/api/x"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
    }
    let res = app
        .client
        .get(app.url("/api/x"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await, "429 rate_limited");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_proxy_target_other_api_paths_are_not_found() {
    let app = TestApp::spawn(crate::helpers::Db::Sqlite, |_| {}).await;
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let (key, _) = app.key(&owner, &org, &["chat:write"]).await;
    let res = app
        .client
        .get(app.url("/api/orders"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    let (status, body) = parts(res).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    app.stop().await;
}

crate::story!(
    usage_refuses_extreme_ranges_cleanly,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        for q in [
            "from=-9223372036854775808&to=9223372036854775807",
            "to=-9223372036854775808",
            "from=5&to=5",
            "from=yesterday",
        ] {
            let (status, body) = app
                .call(
                    Method::GET,
                    &format!("/orgs/{org}/usage?{q}"),
                    &owner.token,
                    None,
                )
                .await;
            assert_eq!(status, 422, "{q}: {body}");
            assert_eq!(body["error"]["code"], "validation_failed");
        }
        app
    }
);
