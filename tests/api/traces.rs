//! Tracing: the real binary exports its spans over OTLP/HTTP to a small collector in the test,
//! which decodes them with `opentelemetry-proto`; a caller's `traceparent` is continued and
//! passed on to the model server, the `/api` backend and webhook endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::{json, Value};

use crate::helpers::{eventually, tempdir, Db, TestDb, PK};
use crate::process::{start_with, Server};

/// OTLP's span kinds (`opentelemetry.proto.trace.v1.Span.SpanKind`).
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// One exported span, ids in hex.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Span>>>;

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// `POST /v1/traces` as an OpenTelemetry collector takes it: a protobuf
/// `ExportTraceServiceRequest`, answered by an empty `ExportTraceServiceResponse`.
async fn receive(State(spans): State<Spans>, body: Bytes) -> Response {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "not OTLP protobuf").into_response();
    };
    let mut seen = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(a.value.as_ref()))
            .unwrap_or_default();
        for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            seen.push(Span {
                service: service.clone(),
                trace: hex::encode(&s.trace_id),
                id: hex::encode(&s.span_id),
                parent: hex::encode(&s.parent_span_id),
                name: s.name,
                kind: s.kind,
                attrs: s
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(a.value.as_ref())))
                    .collect(),
            });
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn collector() -> (String, Spans) {
    let spans = Spans::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    (serve(app).await, spans)
}

/// The paths Gatehouse called and the `traceparent` each carried.
type Calls = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// The model server (`…/chat/completions`, one JSON answer), the `/api` backend and a webhook
/// endpoint in one: records each call's path and `traceparent`.
async fn peer() -> (String, Calls) {
    let calls = Calls::default();
    let seen = calls.clone();
    let app = Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_string();
            let tp = req
                .headers()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push((path.clone(), tp));
            if path.ends_with("/chat/completions") {
                Json(json!({
                    "choices": [{"message": {"role": "assistant", "content": "hello"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1}
                }))
            } else {
                Json(json!({"ok": true}))
            }
        }
    });
    (serve(app).await, calls)
}

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

fn random_hex(bytes: usize) -> String {
    hex::encode(
        (0..bytes)
            .map(|_| rand::random::<u8>() | 1)
            .collect::<Vec<_>>(),
    )
}

/// The `traceparent` Gatehouse sent on its call to a path ending in `suffix`.
fn sent(calls: &Calls, suffix: &str) -> Option<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| p.ends_with(suffix))
        .map(|(_, tp)| tp.clone().unwrap_or_default())
}

/// A person with an organization, a `chat:write` key and a webhook endpoint at `{peer}/hook`,
/// which has been sent a test event.
struct Tenant {
    token: String,
    key: String,
}

async fn tenant(server: &Server, peer: &str) -> Tenant {
    let c = reqwest::Client::new();
    let email = format!("trace-{}@example.com", uuid::Uuid::new_v4().simple());
    let s: Value = c
        .post(format!("{}/auth/v1/signup", server.base))
        .header("apikey", PK)
        .json(&json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = s["access_token"].as_str().unwrap().to_string();
    let call = |path: String, body: Value| {
        let c = c.clone();
        let token = token.clone();
        let url = format!("{}/v1{path}", server.base);
        async move {
            let res = c.post(url).bearer_auth(token).json(&body).send().await;
            let res = res.unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            assert!((200..300).contains(&status), "{status} {body}");
            body
        }
    };
    let org = call("/orgs".into(), json!({"name": "Traced"})).await["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = call(
        format!("/orgs/{org}/api-keys"),
        json!({"name": "k", "scopes": ["chat:write"]}),
    )
    .await["data"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let hook = call(
        format!("/orgs/{org}/webhooks"),
        json!({"url": format!("{peer}/hook")}),
    )
    .await["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    call(format!("/orgs/{org}/webhooks/{hook}/test"), json!({})).await;
    Tenant { token, key }
}

/// A chat turn and an `/api` call, each continuing a trace of the caller's; returns the
/// callers' (trace id, span id) of each.
async fn traced_calls(server: &Server, t: &Tenant) -> ((String, String), (String, String)) {
    let c = reqwest::Client::new();
    let chat = (random_hex(16), random_hex(8));
    let res = c
        .post(format!("{}/v1/chat", server.base))
        .header("x-api-key", &t.key)
        .header("traceparent", traceparent(&chat.0, &chat.1))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    let api = (random_hex(16), random_hex(8));
    let res = c
        .get(format!("{}/api/echo/secret-path-segment", server.base))
        .header("x-api-key", &t.key)
        .header("traceparent", traceparent(&api.0, &api.1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    (chat, api)
}

fn ancestors_include(spans: &[Span], of: &Span, ancestor: &Span) -> bool {
    let mut at = of.clone();
    for _ in 0..32 {
        if at.parent == ancestor.id {
            return true;
        }
        match spans.iter().find(|s| s.id == at.parent) {
            Some(p) => at = p.clone(),
            None => return false,
        }
    }
    false
}

/// The log lines (JSON) of the server.
fn log_lines(server: &Server) -> Vec<Value> {
    std::fs::read_to_string(&server.log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_callers_trace_goes_on_through_storage_the_model_server_and_the_api_backend() {
    traced_story(&[]).await;
}

#[tokio::test]
async fn rate_limit_decisions_in_redis_are_spans_of_the_request_on_redis() {
    let redis = crate::helpers::redis_url();
    let prefix = crate::helpers::redis_prefix();
    let (all, chat) = traced_story(&[
        ("GATEHOUSE_REDIS_URL", redis.as_str()),
        ("GATEHOUSE_REDIS_PREFIX", prefix.as_str()),
    ])
    .await;
    let decision = all
        .iter()
        .find(|s| s.name == "EVALSHA rate limit" && ancestors_include(&all, s, &chat))
        .unwrap_or_else(|| panic!("no Redis span under the chat request: {all:#?}"));
    assert_eq!(decision.kind, CLIENT);
    assert_eq!(decision.attrs["db.system.name"], "redis");
}

/// The story every traced test runs, on a server with `extra` settings: returns the spans
/// exported and the chat request's server span.
async fn traced_story(extra: &[(&str, &str)]) -> (Vec<Span>, Span) {
    let (otlp, spans) = collector().await;
    let (peer, calls) = peer().await;
    let db = TestDb::new(Db::Sqlite).await;
    let dir = tempdir::Dir::new();
    let upstream_url = format!("{peer}/v1");
    let mut env = vec![
        ("GATEHOUSE_OTLP_ENDPOINT", otlp.as_str()),
        ("GATEHOUSE_UPSTREAM_URL", upstream_url.as_str()),
        ("GATEHOUSE_PROXY_TARGET", peer.as_str()),
        ("GATEHOUSE_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("GATEHOUSE_LOG_FORMAT", "json"),
        // The batch exporter sends every 100 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    env.extend_from_slice(extra);
    let server = start_with(&db.url, &dir, &env).await;
    // Health checks and a scrape (the start waited on /healthz too), before the calls whose
    // spans the story waits for: they are never exported.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let res = reqwest::get(format!("{}{probe}", server.base))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{probe}");
    }
    let t = tenant(&server, &peer).await;
    let ((chat_trace, chat_parent), (api_trace, api_parent)) = traced_calls(&server, &t).await;

    let server_span = |trace: &str, name: &str| {
        let all = spans.lock().unwrap().clone();
        all.into_iter()
            .find(|s| s.trace == trace && s.kind == SERVER && s.name == name)
    };
    eventually(
        Duration::from_secs(20),
        "the chat's spans arrive",
        || async {
            let all = spans.lock().unwrap().clone();
            all.iter()
                .any(|s| s.trace == chat_trace && s.name == "POST chat/completions")
                && all
                    .iter()
                    .any(|s| s.trace == chat_trace && s.kind == SERVER)
                && all
                    .iter()
                    .any(|s| s.trace == api_trace && s.name == "GET /api")
                && all.iter().any(|s| s.trace == api_trace && s.kind == SERVER)
        },
    )
    .await;
    let all = spans.lock().unwrap().clone();

    // The request span continues the caller's trace, named by the route pattern.
    let chat = server_span(&chat_trace, "POST /v1/chat").expect("the chat's server span");
    assert_eq!(chat.parent, chat_parent);
    assert_eq!(chat.service, "gatehouse");
    assert_eq!(chat.attrs["http.route"], "/v1/chat");
    assert_eq!(chat.attrs["http.response.status_code"], "200");

    // Storage and the model server are spans under it.
    let store: Vec<&Span> = all
        .iter()
        .filter(|s| s.trace == chat_trace && s.name.starts_with("Store::"))
        .collect();
    assert!(
        store.iter().any(|s| ancestors_include(&all, s, &chat)),
        "no storage span under the request: {all:#?}"
    );
    let upstream = all
        .iter()
        .find(|s| s.trace == chat_trace && s.name == "POST chat/completions")
        .unwrap();
    assert_eq!(upstream.kind, CLIENT);
    assert!(ancestors_include(&all, upstream, &chat), "{all:#?}");
    // The model server was called with the upstream span as the parent.
    assert_eq!(
        sent(&calls, "/v1/chat/completions").as_deref(),
        Some(traceparent(&chat_trace, &upstream.id).as_str())
    );

    // The `/api` backend continues the same trace as the caller of `/api`.
    let api = server_span(&api_trace, "GET /api/{*rest}").expect("the /api server span");
    assert_eq!(api.parent, api_parent);
    let proxied = all
        .iter()
        .find(|s| s.trace == api_trace && s.name == "GET /api")
        .unwrap();
    assert_eq!(proxied.kind, CLIENT);
    assert_eq!(proxied.parent, api.id);
    assert_eq!(
        sent(&calls, "/api/echo/secret-path-segment").as_deref(),
        Some(traceparent(&api_trace, &proxied.id).as_str())
    );

    // Webhook deliveries are traced too, and the endpoint can continue that trace.
    eventually(
        Duration::from_secs(20),
        "the delivery's span arrives",
        || async {
            let Some(tp) = sent(&calls, "/hook") else {
                return false;
            };
            let all = spans.lock().unwrap().clone();
            all.iter().any(|s| {
                s.name == "webhook delivery"
                    && s.kind == CLIENT
                    && tp.contains(&s.id)
                    && tp.contains(&s.trace)
            })
        },
    )
    .await;

    // No raw path, credential or body reaches a span.
    let all = spans.lock().unwrap().clone();
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert!(
            !all.iter().any(|s| s.name.ends_with(probe)),
            "{probe} was exported as a span: {all:#?}"
        );
    }
    let dump = format!("{all:?}");
    for secret in [
        "secret-path-segment",
        t.key.as_str(),
        t.token.as_str(),
        "\"hi\"",
    ] {
        assert!(!dump.contains(secret), "{secret} was exported");
    }

    // The JSON logs of the request carry its trace id first.
    let lines = log_lines(&server);
    assert!(
        lines.iter().any(|l| l["trace_id"] == chat_trace.as_str()
            && l["fields"]["message"] == "request"
            && l["span"]["route"] == "/v1/chat"),
        "no log line with the trace id {chat_trace}"
    );
    (all, chat)
}

#[tokio::test]
async fn without_an_otlp_endpoint_nothing_is_propagated_and_logs_still_name_the_callers_trace() {
    let (peer, calls) = peer().await;
    let db = TestDb::new(Db::Sqlite).await;
    let dir = tempdir::Dir::new();
    let server = start_with(
        &db.url,
        &dir,
        &[
            ("GATEHOUSE_UPSTREAM_URL", &format!("{peer}/v1")),
            ("GATEHOUSE_PROXY_TARGET", &peer),
            ("GATEHOUSE_WEBHOOKS_ALLOW_PRIVATE", "true"),
            ("GATEHOUSE_LOG_FORMAT", "json"),
        ],
    )
    .await;
    let t = tenant(&server, &peer).await;
    let ((chat_trace, _), (api_trace, api_parent)) = traced_calls(&server, &t).await;
    // Gatehouse adds no trace context of its own: the model server gets none, and the `/api`
    // backend the caller's header as it came.
    assert_eq!(sent(&calls, "/v1/chat/completions").as_deref(), Some(""));
    assert_eq!(
        sent(&calls, "/api/echo/secret-path-segment").as_deref(),
        Some(traceparent(&api_trace, &api_parent).as_str())
    );
    eventually(Duration::from_secs(20), "the test delivery", || async {
        sent(&calls, "/hook").is_some()
    })
    .await;
    assert_eq!(sent(&calls, "/hook").as_deref(), Some(""));
    let lines = log_lines(&server);
    assert!(
        lines
            .iter()
            .any(|l| l["trace_id"] == chat_trace.as_str() && l["fields"]["message"] == "request"),
        "no log line with the caller's trace id {chat_trace}"
    );
}

#[tokio::test]
async fn spans_still_queued_are_sent_when_the_server_stops() {
    let (otlp, spans) = collector().await;
    let db = TestDb::new(Db::Sqlite).await;
    let dir = tempdir::Dir::new();
    let mut server = start_with(
        &db.url,
        &dir,
        &[
            ("GATEHOUSE_OTLP_ENDPOINT", otlp.as_str()),
            // No scheduled export during the test: only the shutdown sends.
            ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
        ],
    )
    .await;
    let trace = random_hex(16);
    let res = reqwest::Client::new()
        .get(format!("{}/v1/me", server.base))
        .header("traceparent", traceparent(&trace, &random_hex(8)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Off this (single-threaded) runtime: the collector answers on it meanwhile.
    let _server = tokio::task::spawn_blocking(move || {
        crate::promises_process::terminate(&mut server);
        server
    })
    .await
    .unwrap();
    let all = spans.lock().unwrap().clone();
    assert!(
        all.iter()
            .any(|s| s.trace == trace && s.kind == SERVER && s.name == "GET /v1/me"),
        "the request's span was not sent at shutdown: {all:#?}"
    );
}
