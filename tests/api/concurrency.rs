//! Light concurrency on every write route family: 32 clients writing at once are each
//! answered (never 503 "Storage is busy" within milliseconds), and every acknowledged write
//! is there when read back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, Person, TestApp};
use crate::story;
use crate::webhooks::Receiver;

/// Clients writing at once.
const WRITERS: usize = 32;

/// Runs `writer(0..WRITERS)` concurrently and returns what each returned, in order.
async fn at_once<F, T>(writer: impl Fn(usize) -> F) -> Vec<T>
where
    F: Future<Output = T>,
{
    join_all((0..WRITERS).map(writer)).await
}

/// Sends one `/v1` write and insists on `want`: a 503 (or anything else) fails the story
/// with the route and the answer.
async fn write(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    want: u16,
) -> Value {
    let (status, answer) = app.call(method.clone(), path, token, body).await;
    assert_eq!(status, want, "{method} {path}: {answer}");
    answer["data"].clone()
}

/// An organization owned by a fresh person.
async fn owned_org(app: &TestApp) -> (Person, String) {
    let owner = app.person().await;
    let org = app.org(&owner, "Busy").await;
    (owner, org)
}

story!(
    thirty_two_clients_create_patch_and_revoke_keys_at_once,
    |app: TestApp| async move {
        keys(&app).await;
        app
    }
);

async fn keys(app: &TestApp) {
    let (owner, org) = owned_org(app).await;
    let (owner, org) = (&owner, &org);
    let ids = at_once(|i| async move {
        let keys = format!("/orgs/{org}/api-keys");
        let body = json!({"name": format!("key {i}"), "scopes": ["chat:write"]});
        let k = write(app, Method::POST, &keys, &owner.token, Some(body), 201).await;
        let id = k["id"].as_str().unwrap().to_string();
        let path = format!("{keys}/{id}");
        let body = json!({"name": format!("renamed {i}"), "metadata": {"writer": i}});
        write(app, Method::PATCH, &path, &owner.token, Some(body), 200).await;
        write(app, Method::DELETE, &path, &owner.token, None, 200).await;
        id
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let path = format!("/orgs/{org}/api-keys/{id}");
        let k = write(app, Method::GET, &path, &owner.token, None, 200).await;
        assert_eq!(k["name"], format!("renamed {i}"), "{k}");
        assert_eq!(k["metadata"], json!({"writer": i}), "{k}");
        assert!(k["revoked_at"].is_i64(), "{k}");
    }
    let keys = format!("/orgs/{org}/api-keys");
    let listed = write(app, Method::GET, &keys, &owner.token, None, 200).await;
    assert_eq!(listed.as_array().unwrap().len(), WRITERS);
}

story!(
    thirty_two_clients_change_member_roles_at_once,
    |app: TestApp| async move {
        members(&app).await;
        app
    }
);

async fn members(app: &TestApp) {
    let (owner, org) = owned_org(app).await;
    let (owner, org) = (&owner, &org);
    let people = join_all((0..WRITERS).map(|_| app.person())).await;
    let members = format!("/orgs/{org}/members");
    // Members join by invitation: each person accepts one (concurrently too).
    join_all(people.iter().map(|p| app.add(owner, org, p, "member"))).await;
    at_once(|i| {
        let path = format!("{members}/{}", people[i].id);
        async move {
            let body = json!({"role": "admin"});
            write(app, Method::PATCH, &path, &owner.token, Some(body), 200).await
        }
    })
    .await;
    let listed = write(app, Method::GET, &members, &owner.token, None, 200).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), WRITERS + 1);
    for p in &people {
        let m = listed.iter().find(|m| m["user_id"] == json!(p.id)).unwrap();
        assert_eq!(m["role"], "admin", "{m}");
    }
}

story!(
    thirty_two_clients_create_and_patch_widgets_at_once,
    |app: TestApp| async move {
        widgets(&app).await;
        app
    }
);

async fn widgets(app: &TestApp) {
    let (owner, org) = owned_org(app).await;
    let (owner, org) = (&owner, &org);
    let ids = at_once(|i| async move {
        let widgets = format!("/orgs/{org}/widgets");
        let body =
            json!({"name": format!("widget {i}"), "allowed_origins": ["https://shop.example.com"]});
        let w = write(app, Method::POST, &widgets, &owner.token, Some(body), 201).await;
        let id = w["id"].as_str().unwrap().to_string();
        let body =
            json!({"name": format!("patched {i}"), "settings": {"greeting": format!("hi {i}")}});
        let path = format!("{widgets}/{id}");
        write(app, Method::PATCH, &path, &owner.token, Some(body), 200).await;
        id
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let path = format!("/orgs/{org}/widgets/{id}");
        let w = write(app, Method::GET, &path, &owner.token, None, 200).await;
        assert_eq!(w["name"], format!("patched {i}"), "{w}");
        assert_eq!(w["settings"]["greeting"], format!("hi {i}"), "{w}");
    }
}

story!(
    thirty_two_clients_create_patch_and_test_webhooks_at_once,
    |c: &mut gatehouse::config::Config| c.webhooks_allow_private = true,
    |app: TestApp| async move {
        webhooks(&app).await;
        app
    }
);

async fn webhooks(app: &TestApp) {
    let receiver = Receiver::start().await;
    let (owner, org) = owned_org(app).await;
    let (owner, org, url) = (&owner, &org, &receiver.url);
    let sent = at_once(|i| async move {
        let hooks = format!("/orgs/{org}/webhooks");
        let body = json!({"url": url, "event_types": ["webhook.test"]});
        let e = write(app, Method::POST, &hooks, &owner.token, Some(body), 201).await;
        let id = e["id"].as_str().unwrap().to_string();
        let path = format!("{hooks}/{id}");
        let body = json!({"description": format!("endpoint {i}")});
        write(app, Method::PATCH, &path, &owner.token, Some(body), 200).await;
        let test = format!("{path}/test");
        let queued = write(app, Method::POST, &test, &owner.token, None, 202).await;
        (id, queued["message_id"].as_str().unwrap().to_string())
    })
    .await;
    for (i, (id, _)) in sent.iter().enumerate() {
        let path = format!("/orgs/{org}/webhooks/{id}");
        let e = write(app, Method::GET, &path, &owner.token, None, 200).await;
        assert_eq!(e["description"], format!("endpoint {i}"), "{e}");
    }
    // Every queued test event arrives.
    receiver
        .until("every test event", |hits| {
            sent.iter()
                .all(|(_, msg)| hits.iter().any(|h| h.id() == msg))
        })
        .await;
}

/// The questions stored in a thread, oldest first.
async fn questions(app: &TestApp, key: &str, thread: &str) -> Vec<String> {
    let path = format!("/threads/{thread}");
    let t = write(app, Method::GET, &path, key, None, 200).await;
    t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

/// Eight clients per thread post into four threads while each starts one of its own.
async fn chat_story(db: crate::helpers::Db) -> TestApp {
    let (url, _mock) = crate::chat::mock_server().await;
    let app = TestApp::spawn(db, move |c| {
        c.upstream_url = Some(url);
        c.upstream_model = "test-model".into();
    })
    .await;
    let (owner, org) = owned_org(&app).await;
    let (key, _) = app.key(&owner, &org, &["chat:write", "threads:read"]).await;
    let (app_ref, key) = (&app, &key);
    let chat = |body: Value| async move {
        let req = app_ref
            .client
            .post(app_ref.url("/v1/chat"))
            .header("x-api-key", key);
        let (status, answer) = parts(req.json(&body).send().await.unwrap()).await;
        assert_eq!(status, 200, "POST /v1/chat {body}: {answer}");
        answer["data"]["thread_id"].as_str().unwrap().to_string()
    };
    let mut shared = Vec::new();
    for t in 0..4 {
        shared.push(chat(json!({"message": format!("thread {t}")})).await);
    }
    let (shared, chat) = (&shared, &chat);
    let own = at_once(|i| async move {
        let thread = &shared[i % shared.len()];
        chat(json!({"message": format!("writer {i}"), "thread_id": thread})).await;
        chat(json!({"message": format!("alone {i}")})).await
    })
    .await;
    for (t, thread) in shared.iter().enumerate() {
        let mut got = questions(&app, key, thread).await;
        got.sort();
        let mut want: Vec<String> = (0..WRITERS)
            .filter(|i| i % shared.len() == t)
            .map(|i| format!("writer {i}"))
            .chain([format!("thread {t}")])
            .collect();
        want.sort();
        assert_eq!(got, want, "thread {t}");
    }
    for (i, thread) in own.iter().enumerate() {
        assert_eq!(questions(&app, key, thread).await, [format!("alone {i}")]);
    }
    app
}

crate::story!(
    thirty_two_clients_chat_into_threads_at_once,
    setup: chat_story,
    |app: TestApp| async move { app }
);
