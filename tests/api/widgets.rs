//! Widgets: management, the public config → session → signed chat flow, per-widget CORS,
//! and every rejection with its own reason. Signatures are computed here with hmac + sha2
//! from the formula in docs/widget.md (a fixed format: ARCHITECTURE.md, "Invariants"), not
//! with the server's own code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{refusal, Db, Person, TestApp};
use crate::story;

const ORIGIN: &str = "https://shop.example.com";
const OTHER_ORIGIN: &str = "https://copycat.example.net";

pub(crate) fn hex_hmac(key: &[u8], msg: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    hex::encode(m.finalize().into_bytes())
}

fn nonce() -> String {
    URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// A widget session as the page holds it.
#[derive(Clone)]
struct Sess {
    token: String,
    secret: String,
    visitor_id: String,
    expires_at: i64,
}

/// How a signed call is made; each field can be spoiled by a test.
struct Call<'a> {
    method: Method,
    path: String,
    body: String,
    origin: &'a str,
    timestamp: i64,
    nonce: String,
    /// Signed over this body instead of the one sent.
    signed_body: Option<String>,
    /// Signed with this secret instead of the session's.
    secret: Option<String>,
    /// Signed over this path instead of the one called.
    signed_path: Option<String>,
    /// Signed over this method instead of the one used.
    signed_method: Option<Method>,
    omit_signature: bool,
}

impl TestApp {
    async fn widget(&self, by: &Person, org: &str, body: Value) -> Value {
        let (status, w) = self
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets"),
                &by.token,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{w}");
        w["data"].clone()
    }

    async fn widget_token(&self, by: &Person, org: &str, id: &str) -> String {
        let (status, t) = self
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets/{id}/tokens"),
                &by.token,
                None,
            )
            .await;
        assert_eq!(status, 201, "{t}");
        assert!(t["data"]["embed"].as_str().unwrap().contains("data-key="));
        t["data"]["token"].as_str().unwrap().to_string()
    }

    async fn public(
        &self,
        method: Method,
        path: &str,
        origin: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, HeaderMap) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let headers = res.headers().clone();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null), headers)
    }

    async fn open(&self, widget: &str, origin: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = self
            .public(
                Method::POST,
                &format!("/v1/widgets/{widget}/session"),
                Some(origin),
                Some(body),
            )
            .await;
        (s, b)
    }

    async fn session(&self, widget: &str, body: Value) -> Sess {
        let (status, b) = self.open(widget, ORIGIN, body).await;
        assert_eq!(status, 201, "{b}");
        let d = &b["data"];
        Sess {
            token: d["session_token"].as_str().unwrap().into(),
            secret: d["signing_secret"].as_str().unwrap().into(),
            visitor_id: d["visitor_id"].as_str().unwrap().into(),
            expires_at: d["expires_at"].as_i64().unwrap(),
        }
    }

    fn call_for<'a>(&self, widget: &str, what: &str, body: Value) -> Call<'a> {
        let (method, body) = if what == "history" {
            (Method::GET, String::new())
        } else {
            (Method::POST, body.to_string())
        };
        Call {
            method,
            path: format!("/v1/widgets/{widget}/{what}"),
            body,
            origin: ORIGIN,
            timestamp: self.state.edge.clock.now_secs(),
            nonce: nonce(),
            signed_body: None,
            secret: None,
            signed_path: None,
            signed_method: None,
            omit_signature: false,
        }
    }

    async fn signed(&self, s: &Sess, c: Call<'_>) -> (u16, Value, HeaderMap) {
        let secret = c.secret.clone().unwrap_or_else(|| s.secret.clone());
        let signed_body = c.signed_body.clone().unwrap_or_else(|| c.body.clone());
        let msg = format!(
            "{}.{}.{}.{}.{}",
            c.timestamp,
            c.nonce,
            c.signed_method.as_ref().unwrap_or(&c.method).as_str(),
            c.signed_path.as_ref().unwrap_or(&c.path),
            signed_body
        );
        let mut req = self
            .client
            .request(c.method.clone(), self.url(&c.path))
            .header("origin", c.origin)
            .bearer_auth(&s.token)
            .header("x-gatehouse-timestamp", c.timestamp.to_string())
            .header("x-gatehouse-nonce", &c.nonce);
        if !c.omit_signature {
            req = req.header(
                "x-gatehouse-signature",
                format!("v1={}", hex_hmac(secret.as_bytes(), msg.as_bytes())),
            );
        }
        if !c.body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(c.body.clone());
        }
        let res = req.send().await.unwrap();
        let headers = res.headers().clone();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    async fn say(&self, widget: &str, s: &Sess, message: &str) -> Value {
        let c = self.call_for(widget, "chat", json!({ "message": message }));
        let (status, b, _) = self.signed(s, c).await;
        assert_eq!(status, 200, "{b}");
        b["data"].clone()
    }
}

fn reason(b: &Value) -> &str {
    b["error"]["details"]["reason"].as_str().unwrap_or("")
}

/// An owner, an organization and a widget allowing `ORIGIN` (and its token).
async fn setup(app: &TestApp) -> (Person, String, String, String) {
    let ann = app.person().await;
    let org = app.org(&ann, "Shop").await;
    let w = app
        .widget(
            &ann,
            &org,
            json!({"name": "Help", "allowed_origins": [ORIGIN, "https://*.example.org"],
                   "settings": {"title": "Ask us", "accent_color": "#FF0066"}}),
        )
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    let token = app.widget_token(&ann, &org, &id).await;
    (ann, org, id, token)
}

story!(
    widgets_are_managed_with_the_widget_permissions,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Shop").await;
        let w = app
        .widget(&ann, &org, json!({"name": "Help", "allowed_origins": ["HTTPS://Shop.Example.com:443", "https://shop.example.com"]}))
        .await;
        let id = w["id"].as_str().unwrap();
        assert!(w["secret"].as_str().unwrap().starts_with("wsec_"));
        assert_eq!(
            w["allowed_origins"],
            json!(["https://shop.example.com"]),
            "normalised, deduplicated"
        );
        assert_eq!(w["require_token"], true, "tokens are required by default");
        assert_eq!(w["settings"]["position"], "bottom-right");
        // The secret is shown at creation only.
        let (status, got) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/widgets/{id}"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert!(got["data"].get("secret").is_none(), "{got}");
        let (_, list) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/widgets"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        assert!(!list.to_string().contains("wsec_"));

        // Validation: a bare *, a path, too many origins, a bad colour.
        for (body, field) in [
            (
                json!({"name": "x", "allowed_origins": ["*"]}),
                "allowed_origins[0]",
            ),
            (
                json!({"name": "x", "allowed_origins": ["https://a.com/path"]}),
                "allowed_origins[0]",
            ),
            (
                json!({"name": "x", "allowed_origins": ["https://*.com"]}),
                "allowed_origins[0]",
            ),
            (
                json!({"name": "x", "settings": {"accent_color": "red"}}),
                "settings.accent_color",
            ),
            (
                json!({"name": "x", "settings": {"position": "top"}}),
                "settings.position",
            ),
            (json!({"name": ""}), "name"),
        ] {
            let (status, b) = app
                .call(
                    Method::POST,
                    &format!("/orgs/{org}/widgets"),
                    &ann.token,
                    Some(body),
                )
                .await;
            assert_eq!(refusal(status, &b), (422, "validation_failed", ""), "{b}");
            assert!(
                b["error"]["details"]["fields"].get(field).is_some(),
                "{field}: {b}"
            );
        }
        let many: Vec<String> = (0..51)
            .map(|i| format!("https://s{i}.example.com"))
            .collect();
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets"),
                &ann.token,
                Some(json!({"name": "x", "allowed_origins": many})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (422, "validation_failed", ""),
            "{refused}"
        );

        // Update keeps what is not given; rotation shows a new secret.
        let (status, up) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/widgets/{id}"),
                &ann.token,
                Some(json!({"settings": {"greeting": "Hello!"}, "require_token": false})),
            )
            .await;
        assert_eq!(status, 200, "{up}");
        assert_eq!(up["data"]["settings"]["greeting"], "Hello!");
        assert_eq!(up["data"]["settings"]["title"], "Chat with us");
        assert!(up["data"]["embed"]
            .as_str()
            .unwrap()
            .contains("data-widget-id"));
        let (status, rot) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets/{id}/rotate-secret"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_ne!(rot["data"]["secret"], w["secret"]);

        // A member reads but cannot change; another organization sees nothing.
        let bob = app.person().await;
        app.add(&ann, &org, &bob, "member").await;
        let (status, _) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/widgets/{id}"),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        for (m, path) in [
            (Method::POST, format!("/orgs/{org}/widgets/{id}/tokens")),
            (
                Method::POST,
                format!("/orgs/{org}/widgets/{id}/rotate-secret"),
            ),
            (Method::DELETE, format!("/orgs/{org}/widgets/{id}")),
        ] {
            let (status, b) = app.call(m, &path, &bob.token, None).await;
            assert_eq!(refusal(status, &b), (403, "forbidden", ""), "{b}");
            assert_eq!(b["error"]["details"]["required"], "widgets:write", "{b}");
        }
        let eve = app.person().await;
        let eve_org = app.org(&eve, "Elsewhere").await;
        for (m, path) in [
            (Method::GET, format!("/orgs/{eve_org}/widgets/{id}")),
            (Method::POST, format!("/orgs/{eve_org}/widgets/{id}/tokens")),
            (Method::DELETE, format!("/orgs/{eve_org}/widgets/{id}")),
        ] {
            let (status, b) = app.call(m, &path, &eve.token, None).await;
            assert_eq!(refusal(status, &b), (404, "not_found", ""), "{b}");
        }
        let (status, refused) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/widgets/wgt_nope"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (400, "invalid_request", "malformed_id"),
            "{refused}"
        );

        // The operator mints tokens from the command line; they open sessions like any other.
        let out = crate::process::command(&app.db.url, &[])
            .args(["widget", "token", "--org", &org, "--widget", id])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli_token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let (status, b) = app
            .open(id, "https://shop.example.com", json!({"token": cli_token}))
            .await;
        assert_eq!(status, 201, "{b}");
        let out = crate::process::command(&app.db.url, &[])
            .args(["widget", "token", "--org", &eve_org, "--widget", id])
            .output()
            .unwrap();
        assert!(!out.status.success(), "another organization's widget");

        // An API key with widgets:write manages widgets too.
        let (key, _) = app
            .key(&ann, &org, &["widgets:write", "widgets:read"])
            .await;
        let (status, _) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets"),
                &key,
                Some(json!({"name": "By key"})),
            )
            .await;
        assert_eq!(status, 201);

        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/widgets/{id}"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        let (status, refused, _) = app
            .public(
                Method::GET,
                &format!("/v1/widgets/{id}/config"),
                Some("https://shop.example.com"),
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (404, "not_found", ""),
            "a deleted widget is gone at once: {refused}"
        );
        app
    }
);

story!(
    a_visitor_chats_through_a_signed_session,
    |app: TestApp| async move {
        let (ann, org, id, token) = setup(&app).await;
        // Config: only for an allowed origin, which is reflected.
        let (status, cfg, h) = app
            .public(
                Method::GET,
                &format!("/v1/widgets/{id}/config"),
                Some(ORIGIN),
                None,
            )
            .await;
        assert_eq!(status, 200, "{cfg}");
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        assert_eq!(cfg["data"]["settings"]["title"], "Ask us");
        assert_eq!(cfg["data"]["settings"]["accent_color"], "#ff0066");
        assert!(
            !cfg.to_string().contains("wsec_"),
            "no secret in public config"
        );
        // A subdomain of a wildcard entry is allowed too.
        let (status, _, h) = app
            .public(
                Method::GET,
                &format!("/v1/widgets/{id}/config"),
                Some("https://help.example.org"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(h["access-control-allow-origin"], "https://help.example.org");
        // The preflight names the signature headers.
        let res = app
            .client
            .request(Method::OPTIONS, app.url(&format!("/v1/widgets/{id}/chat")))
            .header("origin", ORIGIN)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, x-gatehouse-signature",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
        assert!(res.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-gatehouse-signature"));

        let s = app.session(&id, json!({ "token": token })).await;
        assert!(s.token.starts_with("gws_") && s.secret.starts_with("gss_"));
        assert!(s.visitor_id.starts_with("vis_"));
        let lifetime = s.expires_at - app.state.edge.clock.now_ms();
        assert!(
            (899_000..=900_000).contains(&lifetime),
            "15 minutes: {lifetime}"
        );

        let first = app.say(&id, &s, "Where is my order?").await;
        assert!(
            first["response"]
                .as_str()
                .unwrap()
                .contains("Where is my order?"),
            "{first}"
        );
        let thread = first["thread_id"].as_str().unwrap().to_string();
        let second = app.say(&id, &s, "Order 42").await;
        assert_eq!(
            second["thread_id"],
            thread.as_str(),
            "the conversation continues"
        );

        // Streaming answers arrive as SSE deltas and a done event.
        let c = app.call_for(
            &id,
            "chat",
            json!({"message": "stream please", "stream": true}),
        );
        let (status, text, h) = app.signed(&s, c).await;
        assert_eq!(status, 200);
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = text.as_str().unwrap();
        assert!(
            text.contains("event: delta") && text.contains("event: done"),
            "{text}"
        );
        assert!(text.contains(&thread));

        // A new session for the same visitor continues the same thread; history redraws it.
        let again = app
            .session(&id, json!({ "token": token, "visitor_id": s.visitor_id }))
            .await;
        assert_eq!(again.visitor_id, s.visitor_id);
        let c = app.call_for(&id, "history", json!(null));
        let (status, hist, _) = app.signed(&again, c).await;
        assert_eq!(status, 200, "{hist}");
        assert_eq!(hist["data"]["thread_id"], thread.as_str());
        assert_eq!(hist["data"]["messages"].as_array().unwrap().len(), 6);
        let third = app.say(&id, &again, "Thanks").await;
        assert_eq!(third["thread_id"], thread.as_str());

        // Another visitor starts afresh and cannot continue the first one's thread.
        let stranger = app.session(&id, json!({ "token": token })).await;
        assert_ne!(stranger.visitor_id, s.visitor_id);
        let c = app.call_for(&id, "history", json!(null));
        let (_, hist, _) = app.signed(&stranger, c).await;
        assert_eq!(hist["data"]["thread_id"], Value::Null);
        let c = app.call_for(&id, "chat", json!({"message": "hi", "thread_id": thread}));
        let (status, b, _) = app.signed(&stranger, c).await;
        assert_eq!(refusal(status, &b), (404, "not_found", ""), "{b}");

        // Renewal: a fresh session for the same visitor.
        let c = app.call_for(&id, "session/renew", json!({}));
        let (status, renewed, _) = app.signed(&s, c).await;
        assert_eq!(status, 201, "{renewed}");
        assert_eq!(renewed["data"]["visitor_id"], s.visitor_id.as_str());
        assert_ne!(renewed["data"]["session_token"], s.token.as_str());

        // The organization's API key sees the visitor's thread.
        let (key, _) = app.key(&ann, &org, &["threads:read"]).await;
        let (status, list) = app.call(Method::GET, "/threads", &key, None).await;
        assert_eq!(status, 200, "{list}");
        let listed = list["data"].as_array().unwrap();
        let t = listed
            .iter()
            .find(|t| t["id"] == thread.as_str())
            .unwrap_or_else(|| panic!("the visitor's thread is not listed: {list}"));
        assert_eq!(t["widget_id"], id.as_str());
        assert_eq!(t["visitor"], format!("v:{}", s.visitor_id));
        let (status, full) = app
            .call(Method::GET, &format!("/threads/{thread}"), &key, None)
            .await;
        assert_eq!(status, 200, "{full}");
        let asked: Vec<&str> = full["data"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(
            asked,
            ["Where is my order?", "Order 42", "stream please", "Thanks"]
        );
        app
    }
);

story!(
    every_rejection_has_its_own_reason,
    |app: TestApp| async move {
        let (ann, org, id, token) = setup(&app).await;
        let session_path = format!("/v1/widgets/{id}/session");

        // origin_not_allowed: config, session, preflight, and a signed call from elsewhere.
        for origin in [
            Some(OTHER_ORIGIN),
            None,
            Some("null"),
            Some("https://example.org"),
        ] {
            let (status, b, h) = app
                .public(
                    Method::GET,
                    &format!("/v1/widgets/{id}/config"),
                    origin,
                    None,
                )
                .await;
            assert_eq!(
                (status, reason(&b)),
                (403, "origin_not_allowed"),
                "{origin:?}"
            );
            assert!(h.get("access-control-allow-origin").is_none());
        }
        let (status, b) = app.open(&id, OTHER_ORIGIN, json!({ "token": token })).await;
        assert_eq!((status, reason(&b)), (403, "origin_not_allowed"));
        let res = app
            .client
            .request(Method::OPTIONS, app.url(&session_path))
            .header("origin", OTHER_ORIGIN)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert!(res.headers().get("access-control-allow-origin").is_none());
        let s = app.session(&id, json!({ "token": token })).await;
        let mut c = app.call_for(&id, "chat", json!({"message": "hi"}));
        c.origin = OTHER_ORIGIN;
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (403, "origin_not_allowed"));
        // A session opened on one allowed origin cannot be used from another allowed origin.
        let mut c = app.call_for(&id, "chat", json!({"message": "hi"}));
        c.origin = "https://help.example.org";
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (403, "origin_not_allowed"));

        // bad_token: missing, garbage, another widget's, after rotation.
        let (status, b) = app.open(&id, ORIGIN, json!({})).await;
        assert_eq!((status, reason(&b)), (401, "bad_token"));
        let (status, b) = app
            .open(&id, ORIGIN, json!({"token": "bm90IGEgdG9rZW4"}))
            .await;
        assert_eq!((status, reason(&b)), (401, "bad_token"));
        let other = app
            .widget(
                &ann,
                &org,
                json!({"name": "Other", "allowed_origins": [ORIGIN]}),
            )
            .await;
        let other_token = app
            .widget_token(&ann, &org, other["id"].as_str().unwrap())
            .await;
        let (status, b) = app.open(&id, ORIGIN, json!({"token": other_token})).await;
        assert_eq!((status, reason(&b)), (401, "bad_token"));
        // A token claiming this widget but signed with another secret.
        let forged = {
            let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(&other_token).unwrap()).unwrap();
            let parts: Vec<&str> = raw.split(':').collect();
            URL_SAFE_NO_PAD.encode(format!("{}:{}:{}:{}", parts[0], id, parts[2], parts[3]))
        };
        let (status, b) = app.open(&id, ORIGIN, json!({"token": forged})).await;
        assert_eq!((status, reason(&b)), (401, "bad_token"));
        // Malformed input is a 4xx, never a 500.
        let (status, refused) = app
            .open(
                &id,
                ORIGIN,
                json!({"token": token, "visitor_id": "someone-else"}),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (422, "validation_failed", ""),
            "{refused}"
        );
        let (status, refused) = app
            .open(&id, ORIGIN, json!({"token": token, "user_id": "u1"}))
            .await;
        assert_eq!(
            refusal(status, &refused),
            (422, "validation_failed", ""),
            "{refused}"
        );
        let (status, _) = app.open(&id, ORIGIN, json!({"token": 5})).await;
        assert_eq!(status, 400);

        // bad_signature: a changed body, a wrong secret, no signature.
        let mut c = app.call_for(&id, "chat", json!({"message": "hi"}));
        c.signed_body = Some(json!({"message": "something else"}).to_string());
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (401, "bad_signature"));
        let mut c = app.call_for(&id, "chat", json!({"message": "hi"}));
        c.secret = Some("gss_guess".into());
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (401, "bad_signature"));
        let mut c = app.call_for(&id, "chat", json!({"message": "hi"}));
        c.omit_signature = true;
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (401, "bad_signature"));
        // The signature covers the method and the path.
        let mut c = app.call_for(&id, "chat", json!({"message": "hi"}));
        c.signed_path = Some(format!("/v1/widgets/{id}/session/renew"));
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (401, "bad_signature"));
        let mut c = app.call_for(&id, "chat", json!({"message": "hi"}));
        c.signed_method = Some(Method::PUT);
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (401, "bad_signature"));

        // stale_timestamp: more than five minutes either way.
        for skew in [-301, 301] {
            let mut c = app.call_for(&id, "chat", json!({"message": "hi"}));
            c.timestamp += skew;
            let (status, b, _) = app.signed(&s, c).await;
            assert_eq!((status, reason(&b)), (401, "stale_timestamp"), "{skew}");
        }

        // replayed: the same nonce twice in a session.
        let fixed = nonce();
        let mut c = app.call_for(&id, "chat", json!({"message": "once"}));
        c.nonce = fixed.clone();
        let (status, _, _) = app.signed(&s, c).await;
        assert_eq!(status, 200);
        let mut c = app.call_for(&id, "chat", json!({"message": "once"}));
        c.nonce = fixed.clone();
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (401, "replayed"));

        // A session token of another widget, or a forged one.
        let other_s = {
            let (st, b) = app
                .open(
                    other["id"].as_str().unwrap(),
                    ORIGIN,
                    json!({"token": other_token}),
                )
                .await;
            assert_eq!(st, 201);
            Sess {
                token: b["data"]["session_token"].as_str().unwrap().into(),
                secret: b["data"]["signing_secret"].as_str().unwrap().into(),
                visitor_id: String::new(),
                expires_at: 0,
            }
        };
        let c = app.call_for(&id, "chat", json!({"message": "hi"}));
        let (status, b, _) = app.signed(&other_s, c).await;
        assert_eq!((status, reason(&b)), (401, "bad_session"));
        let mut no_session = s.clone();
        no_session.token = String::new();
        let c = app.call_for(&id, "chat", json!({"message": "hi"}));
        let (status, b, _) = app.signed(&no_session, c).await;
        assert_eq!((status, reason(&b)), (401, "missing"), "{b}");

        // session_expired: after the widget's secret is rotated (and tokens with it).
        let (status, _) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets/{id}/rotate-secret"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        let c = app.call_for(&id, "chat", json!({"message": "hi"}));
        let (status, b, _) = app.signed(&s, c).await;
        assert_eq!((status, reason(&b)), (401, "session_expired"));
        let (status, b) = app.open(&id, ORIGIN, json!({"token": token})).await;
        assert_eq!(
            (status, reason(&b)),
            (401, "bad_token"),
            "rotation revokes every token"
        );

        // Each reason is counted.
        let metrics = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for r in [
            "origin_not_allowed",
            "bad_token",
            "bad_signature",
            "stale_timestamp",
            "replayed",
            "session_expired",
            "bad_session",
        ] {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with("gatehouse_widget_rejections_total")
                        && l.contains(&format!("reason=\"{r}\""))),
                "{r} not counted:\n{metrics}"
            );
        }
        app
    }
);

story!(
    identified_visitors_share_their_threads_across_devices,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Shop").await;
        let w = app
            .widget(
                &ann,
                &org,
                json!({"name": "Help", "allowed_origins": [ORIGIN]}),
            )
            .await;
        let (id, secret) = (w["id"].as_str().unwrap(), w["secret"].as_str().unwrap());
        let token = app.widget_token(&ann, &org, id).await;
        // The customer's backend computes user_hash = hex HMAC-SHA256(widget secret, user_id).
        let hash = hex_hmac(secret.as_bytes(), b"customer-77");
        let laptop = app
            .session(
                id,
                json!({"token": token, "user_id": "customer-77", "user_hash": hash}),
            )
            .await;
        let t = app.say(id, &laptop, "from the laptop").await["thread_id"].clone();
        let phone = app
            .session(
                id,
                json!({"token": token, "user_id": "customer-77", "user_hash": hash}),
            )
            .await;
        assert_ne!(
            phone.visitor_id, laptop.visitor_id,
            "another device, another visitor id"
        );
        let c = app.call_for(id, "history", json!(null));
        let (_, hist, _) = app.signed(&phone, c).await;
        assert_eq!(hist["data"]["thread_id"], t, "the same person's thread");
        // An anonymous session on the laptop does not see it; a wrong hash is refused.
        let anon = app
            .session(id, json!({"token": token, "visitor_id": laptop.visitor_id}))
            .await;
        let c = app.call_for(id, "history", json!(null));
        let (_, hist, _) = app.signed(&anon, c).await;
        assert_eq!(hist["data"]["thread_id"], Value::Null);
        let wrong = hex_hmac(secret.as_bytes(), b"customer-78");
        let (status, b) = app
            .open(
                id,
                ORIGIN,
                json!({"token": token, "user_id": "customer-77", "user_hash": wrong}),
            )
            .await;
        assert_eq!((status, reason(&b)), (401, "bad_user_hash"));
        app
    }
);

story!(
    a_widget_without_tokens_opens_on_origin_alone,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Shop").await;
        let w = app
            .widget(
                &ann,
                &org,
                json!({"name": "Open", "allowed_origins": [ORIGIN], "require_token": false}),
            )
            .await;
        let id = w["id"].as_str().unwrap();
        let res = app
            .client
            .post(app.url(&format!("/v1/widgets/{id}/session")))
            .header("origin", ORIGIN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "an empty body is enough");
        let s = app.session(id, json!({})).await;
        app.say(id, &s, "hello").await;
        let (status, b) = app.open(id, OTHER_ORIGIN, json!({})).await;
        assert_eq!((status, reason(&b)), (403, "origin_not_allowed"));
        app
    }
);

story!(
    widget_limits_apply_per_session_with_cors_on_the_refusal,
    |c: &mut gatehouse::config::Config| {
        c.rate_limit_widget_session =
            gatehouse::ratelimit::Rates::one(gatehouse::ratelimit::Rate::new(2, 60));
    },
    |app: TestApp| async move {
        let (_, _, id, token) = setup(&app).await;
        let s = app.session(&id, json!({"token": token})).await;
        app.say(&id, &s, "one").await;
        app.say(&id, &s, "two").await;
        let c = app.call_for(&id, "chat", json!({"message": "three"}));
        let (status, b, h) = app.signed(&s, c).await;
        assert_eq!(status, 429, "{b}");
        assert_eq!(b["error"]["code"], "rate_limited");
        assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
        assert_eq!(
            h["access-control-allow-origin"], ORIGIN,
            "the page can read why"
        );
        // Another session of the same visitor has its own window.
        let other = app
            .session(&id, json!({"token": token, "visitor_id": s.visitor_id}))
            .await;
        app.say(&id, &other, "four").await;
        app
    }
);

/// Sessions end on time; checked with a manual clock on both engines.
async fn sessions_expire(db: Db) {
    let clock = gatehouse::clock::Clock::manual(gatehouse::clock::Clock::System.now_ms());
    let app = TestApp::spawn_with_clock(db, clock, |_| {}).await;
    let (_, _, id, token) = setup(&app).await;
    let s = app.session(&id, json!({"token": token})).await;
    app.state.edge.clock.advance_ms(899_000);
    app.say(&id, &s, "still here").await;
    app.state.edge.clock.advance_ms(1_000);
    let c = app.call_for(&id, "chat", json!({"message": "too late"}));
    let (status, b, _) = app.signed(&s, c).await;
    assert_eq!((status, reason(&b)), (401, "session_expired"));
    let c = app.call_for(&id, "session/renew", json!({}));
    let (status, b, _) = app.signed(&s, c).await;
    assert_eq!(
        (status, reason(&b)),
        (401, "session_expired"),
        "an ended session cannot renew"
    );
    // Opening a new one continues the visitor's conversation.
    let again = app
        .session(&id, json!({"token": token, "visitor_id": s.visitor_id}))
        .await;
    let c = app.call_for(&id, "history", json!(null));
    let (_, hist, _) = app.signed(&again, c).await;
    assert_eq!(hist["data"]["messages"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_sessions_expire_after_15_minutes_on_sqlite() {
    sessions_expire(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_sessions_expire_after_15_minutes_on_postgres() {
    sessions_expire(Db::Postgres).await;
}

impl TestApp {
    /// `GET …/config` from the allowed origin, as the client at `ip` (behind a trusted proxy).
    async fn config_from(&self, widget: &str, ip: &str) -> (u16, Value) {
        let res = self
            .client
            .get(self.url(&format!("/v1/widgets/{widget}/config")))
            .header("origin", ORIGIN)
            .header("x-forwarded-for", ip)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

story!(
    widget_limits_apply_per_client_ip,
    |c: &mut gatehouse::config::Config| {
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.rate_limit_widget_ip =
            gatehouse::ratelimit::Rates::one(gatehouse::ratelimit::Rate::new(3, 60));
    },
    |app: TestApp| async move {
        let (_, _, id, token) = setup(&app).await;
        for _ in 0..3 {
            assert_eq!(app.config_from(&id, "203.0.113.7").await.0, 200);
        }
        let (status, b) = app.config_from(&id, "203.0.113.7").await;
        assert_eq!(
            (status, b["error"]["code"].as_str()),
            (429, Some("rate_limited"))
        );
        // Opening a session from that address is refused too; another address is not.
        let res = app
            .client
            .post(app.url(&format!("/v1/widgets/{id}/session")))
            .header("origin", ORIGIN)
            .header("x-forwarded-for", "203.0.113.7")
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        let (status, b) = crate::helpers::parts(res).await;
        assert_eq!(refusal(status, &b), (429, "rate_limited", ""), "{b}");
        assert_eq!(app.config_from(&id, "203.0.113.8").await.0, 200);
        app
    }
);

story!(
    widget_limits_apply_per_widget_across_addresses,
    |c: &mut gatehouse::config::Config| {
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.rate_limit_widget =
            gatehouse::ratelimit::Rates::one(gatehouse::ratelimit::Rate::new(3, 60));
    },
    |app: TestApp| async move {
        let (ann, org, id, _) = setup(&app).await;
        for i in 0..3 {
            let ip = format!("198.51.100.{i}");
            assert_eq!(app.config_from(&id, &ip).await.0, 200);
        }
        let (status, b) = app.config_from(&id, "198.51.100.9").await;
        assert_eq!(
            (status, b["error"]["code"].as_str()),
            (429, Some("rate_limited")),
            "a fresh address still counts against the widget"
        );
        let other = app
            .widget(
                &ann,
                &org,
                json!({"name": "Other", "allowed_origins": [ORIGIN]}),
            )
            .await;
        let other = other["id"].as_str().unwrap();
        assert_eq!(
            app.config_from(other, "198.51.100.9").await.0,
            200,
            "another widget has its own window"
        );
        app
    }
);

story!(
    the_widget_routes_are_described_with_their_ids_and_credentials,
    |app: TestApp| async move {
        let doc: Value = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let op = |path: &str, method: &str| doc["paths"][path][method].clone();
        let managed = [
            ("/v1/orgs/{org}/widgets", "get", "list_widgets"),
            ("/v1/orgs/{org}/widgets", "post", "create_widget"),
            ("/v1/orgs/{org}/widgets/{id}", "get", "get_widget"),
            ("/v1/orgs/{org}/widgets/{id}", "patch", "update_widget"),
            ("/v1/orgs/{org}/widgets/{id}", "delete", "delete_widget"),
            (
                "/v1/orgs/{org}/widgets/{id}/rotate-secret",
                "post",
                "rotate_widget_secret",
            ),
            ("/v1/orgs/{org}/widgets/{id}/tokens", "post", "mint_token"),
        ];
        for (path, method, id) in managed {
            let o = op(path, method);
            assert_eq!(o["operationId"], id, "{method} {path}");
            let params: Vec<&str> = o["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let wanted: Vec<&str> = if path.contains("{id}") {
                vec!["org", "id"]
            } else {
                vec!["org"]
            };
            assert_eq!(params, wanted, "{method} {path}");
            assert!(o["security"].as_array().unwrap().len() == 3, "{path}");
            assert!(o["responses"]["401"].is_object() && o["responses"]["403"].is_object());
        }
        for (path, method) in [
            ("/v1/widgets/{id}/config", "get"),
            ("/v1/widgets/{id}/session", "post"),
            ("/v1/widgets/{id}/session/renew", "post"),
            ("/v1/widgets/{id}/chat", "post"),
            ("/v1/widgets/{id}/history", "get"),
        ] {
            let o = op(path, method);
            let names: Vec<&str> = o["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert!(
                names.contains(&"id") && names.contains(&"Origin"),
                "{path}: {names:?}"
            );
            let signed = !path.ends_with("/config") && !path.ends_with("/session");
            assert_eq!(
                o["security"][0]["widget_session"].is_array(),
                signed,
                "{path}"
            );
            if signed {
                assert!(names.contains(&"X-Gatehouse-Signature"), "{path}");
            }
        }
        assert!(doc["components"]["securitySchemes"]["widget_session"].is_object());
        assert!(doc["paths"]["/widget.js"].is_null());
        app
    }
);
