//! Bad input gets a clear 4xx in the right format: never a 5xx, a panic or a hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, refused, TestApp};
use crate::story;

fn claims(app: &TestApp, exp: i64) -> gatehouse::auth::jwt::Claims {
    gatehouse::auth::jwt::Claims {
        iss: format!("{}/auth/v1", app.base),
        sub: uuid::Uuid::new_v4().to_string(),
        aud: "authenticated".into(),
        exp,
        iat: 0,
        email: "x@example.com".into(),
        phone: String::new(),
        role: "authenticated".into(),
        aal: "aal1".into(),
        amr: vec![],
        session_id: uuid::Uuid::new_v4().to_string(),
        is_anonymous: false,
        app_metadata: json!({}),
        user_metadata: json!({}),
    }
}

fn assert_envelope_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(body["meta"]["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
}

story!(
    malformed_bodies_on_auth_v1_are_bad_json,
    |app: TestApp| async move {
        let res = app
            .auth(Method::POST, "/signup")
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!((status, body["code"].clone()), (400, json!("bad_json")));
        let res = app
            .auth(Method::POST, "/signup")
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(refused(res).await, "400 bad_json");
        let res = app
            .auth(Method::POST, "/signup")
            .json(&json!({"email": 12, "password": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(res).await, "400 bad_json");
        let res = app
            .auth(Method::POST, "/signup")
            .json(&json!({"email": "a".repeat(5000), "password": "long enough pw"}))
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("validation_failed"))
        );
        let res = app
            .auth(Method::POST, "/token")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("unsupported_grant_type"))
        );
        app
    }
);

story!(
    a_random_refresh_token_is_not_found,
    |app: TestApp| async move {
        for t in ["random", &"x".repeat(2000), "", "🦀"] {
            let (status, body) = parts(app.refresh(t).await).await;
            assert_eq!(status, 400, "{t:?}");
            assert!(
                body["code"] == "refresh_token_not_found" || body["code"] == "validation_failed",
                "{body}"
            );
        }
        app
    }
);

story!(
    bodies_over_the_limit_are_refused,
    |c: &mut gatehouse::config::Config| c.body_limit_bytes = 2048,
    |app: TestApp| async move {
        let big = json!({"email": "a@example.com", "password": "x".repeat(4096)});
        let res = app
            .auth(Method::POST, "/signup")
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(res).await, "413 request_too_large");
        let res = app
            .client
            .post(app.url("/v1/session"))
            .json(&big)
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_envelope_error(status, &body, 413, "payload_too_large");
        app
    }
);

story!(
    v1_bodies_are_validated_into_the_envelope,
    |app: TestApp| async move {
        let res = app
            .client
            .post(app.url("/v1/session"))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_envelope_error(status, &body, 400, "invalid_request");
        let res = app
            .client
            .post(app.url("/v1/session"))
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_envelope_error(status, &body, 415, "unsupported_media_type");
        let res = app
            .client
            .post(app.url("/v1/session"))
            .json(&json!({"email": "a@example.com"}))
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_envelope_error(status, &body, 400, "invalid_request");
        let res = app
            .client
            .post(app.url("/v1/session"))
            .json(&json!({"email": "a@example.com", "password": "x", "admin": true}))
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_envelope_error(status, &body, 400, "invalid_request");
        app
    }
);

story!(
    bad_tokens_on_v1_are_unauthorized_with_a_reason,
    |app: TestApp| async move {
        let (status, body) = parts(app.client.get(app.url("/v1/me")).send().await.unwrap()).await;
        assert_envelope_error(status, &body, 401, "unauthorized");
        assert_eq!(body["error"]["details"]["reason"], "missing");

        let (status, body) = parts(app.me("not-a-jwt").await).await;
        assert_envelope_error(status, &body, 401, "unauthorized");
        assert_eq!(body["error"]["details"]["reason"], "malformed");

        let expired = app.state.accounts.jwt.sign(&claims(&app, 1_000)).unwrap();
        let (status, body) = parts(app.me(&expired).await).await;
        assert_envelope_error(status, &body, 401, "unauthorized");
        assert_eq!(body["error"]["details"]["reason"], "expired");

        let (_, _, s) = app.new_user().await;
        let good = s["access_token"].as_str().unwrap();
        let mut pieces: Vec<String> = good.split('.').map(str::to_string).collect();
        let mut payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&pieces[1]).unwrap()).unwrap();
        payload["sub"] = json!(uuid::Uuid::new_v4().to_string());
        pieces[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        let tampered = pieces.join(".");
        assert_eq!(
            refused(app.me(&tampered).await).await,
            "401 unauthorized malformed"
        );

        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            pieces[1]
        );
        assert_eq!(
            refused(app.me(&none).await).await,
            "401 unauthorized malformed"
        );
        let res = app
            .auth(Method::GET, "/user")
            .bearer_auth(&none)
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!((status, body["code"].clone()), (403, json!("bad_jwt")));

        let stranger = gatehouse::auth::jwt::JwtKeys::new(
            &[gatehouse::auth::jwt::generate_key(1).unwrap()],
            None,
            format!("{}/auth/v1", app.base),
        )
        .unwrap();
        let foreign = stranger.sign(&claims(&app, 4_000_000_000)).unwrap();
        assert_eq!(parts(app.me(&foreign).await).await.0, 401);
        let res = app.auth(Method::GET, "/user").send().await.unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(
            (status, body["code"].clone()),
            (401, json!("no_authorization"))
        );
        app
    }
);

story!(
    every_response_carries_a_request_id,
    |app: TestApp| async move {
        for path in [
            "/healthz",
            "/readyz",
            "/nope",
            "/v1/me",
            "/openapi.json",
            "/auth/v1/health",
        ] {
            let res = app.client.get(app.url(path)).send().await.unwrap();
            assert!(res.headers().get("x-request-id").is_some(), "{path}");
        }
        let (status, body) = parts(app.client.get(app.url("/nope")).send().await.unwrap()).await;
        assert_envelope_error(status, &body, 404, "not_found");
        let (status, body) = parts(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
        assert_eq!((status, body["status"].clone()), (200, json!("ready")));
        app
    }
);

// Which routes a server serves, and whether `/openapi.json` lists them all. axum cannot list
// its routes, so the served set is found in two ways that together leave no gap:
// - every method of every path is probed without credentials: a method the router does not
//   serve on a path it knows answers 405, a path it does not know the fallback's 404
//   "No such route."; anything else (401, 400, 200…) means a handler ran. So the methods of
//   each described path must be exactly the served ones (a method added to a path without an
//   annotation, or an annotation with no route, fails);
// - a path only reaches the router through `.route("…")` (a plain route, outside the
//   description) or `routes!(…)` (its annotation's path, in the description). So the paths in
//   `.route(` calls under src/http must be in the description or in `UNDESCRIBED`, the
//   routes that are not API operations, and `UNDESCRIBED` must be exactly those served.

/// Served routes that are not in `/openapi.json`, and why: the dashboard's page and assets
/// and the widget's script are files for browsers, not API operations; `/api/{*rest}` forwards
/// whatever the backend at `proxy_target` serves, which a description of Gatehouse cannot
/// know (and OpenAPI path parameters cannot hold the slashes of a catch-all).
const UNDESCRIBED: &[(&str, &[&str])] = &[
    ("/dashboard", &["GET"]),
    ("/dashboard/", &["GET"]),
    ("/dashboard/app.js", &["GET"]),
    ("/dashboard/app.css", &["GET"]),
    ("/dashboard/config.json", &["GET"]),
    ("/widget.js", &["GET"]),
    ("/api/{*rest}", &["GET", "POST", "PUT", "PATCH", "DELETE"]),
];

/// Files whose router is nested, with the prefix their `.route(` paths get.
const NESTED: &[(&str, &str)] = &[("auth_v1.rs", "/auth/v1"), ("auth_email.rs", "/auth/v1")];

const PROBED: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

async fn spec(app: &TestApp) -> Value {
    let (status, doc) = parts(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    doc
}

/// A concrete path for a template: typed ids from their example, the catch-all and any
/// other parameter as a plain segment.
fn concrete(doc: &Value, template: &str) -> String {
    let ops = doc["paths"][template]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let example = |name: &str| -> Option<String> {
        ops.values()
            .filter_map(|op| op["parameters"].as_array())
            .flatten()
            .find(|p| p["name"] == name && p["in"] == "path")
            .and_then(|p| p["schema"]["examples"][0].as_str().map(str::to_string))
    };
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if name.starts_with('*') => "x".to_string(),
                Some(name) => example(name).unwrap_or_else(|| "x".to_string()),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The methods (of [`PROBED`]) the server routes on `path`.
async fn served_methods(app: &TestApp, path: &str) -> Vec<String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut served = Vec::new();
    for method in PROBED {
        // The publishable key, so /auth/v1's gate lets the request reach the router's 405.
        let res = client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .header("apikey", crate::helpers::PK)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        let fallback = status == 404 && body.contains("No such route.");
        if status != 405 && !fallback {
            served.push(method.to_string());
        }
    }
    served
}

fn described_methods(doc: &Value, path: &str) -> Vec<String> {
    let mut methods: Vec<String> = doc["paths"][path]
        .as_object()
        .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect())
        .unwrap_or_default();
    methods.retain(|m| PROBED.contains(&m.as_str()));
    methods.sort();
    methods
}

/// The paths of every `.route("…"` call under src/http (with the nested files' prefix).
fn plain_route_paths() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let prefix = NESTED
            .iter()
            .find(|(f, _)| *f == file)
            .map_or("", |(_, p)| *p);
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices(".route(") {
            let rest = text[at + ".route(".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                panic!("{file}: a .route( whose path is not a string literal");
            };
            let literal = &rest[..rest.find('"').unwrap()];
            paths.push(format!("{prefix}{literal}"));
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

story!(
    every_described_operation_is_served_and_every_served_method_described,
    |app: TestApp| async move {
        let doc = spec(&app).await;
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() > 50, "{} paths", paths.len());
        for template in paths.keys() {
            let mut served = served_methods(&app, &concrete(&doc, template)).await;
            served.sort();
            assert_eq!(
                served,
                described_methods(&doc, template),
                "{template}: served methods vs described ones"
            );
        }
        app
    }
);

story!(
    the_routes_outside_the_description_are_exactly_the_listed_ones,
    |app: TestApp| async move {
        let doc = spec(&app).await;
        for (path, methods) in UNDESCRIBED {
            assert!(
                doc["paths"][path].is_null(),
                "{path} is described: take it off UNDESCRIBED"
            );
            let served = served_methods(&app, &concrete(&doc, path)).await;
            assert_eq!(&served, methods, "{path}");
        }
        let plain = plain_route_paths();
        for path in &plain {
            assert!(
                doc["paths"][path].is_object() || UNDESCRIBED.iter().any(|(p, _)| p == path),
                "{path} is served by a plain .route( and not in /openapi.json: declare it with \
                 routes!(…) and #[utoipa::path], or add it to UNDESCRIBED with the reason"
            );
        }
        for (path, _) in UNDESCRIBED {
            assert!(
                plain.iter().any(|p| p == path),
                "{path} is on UNDESCRIBED but no .route( serves it"
            );
        }
        app
    }
);

story!(
    the_description_names_each_operation_once_with_a_success_and_its_credentials,
    |app: TestApp| async move {
        let doc = spec(&app).await;
        let mut ids = std::collections::BTreeMap::new();
        let mut problems = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                if !PROBED.contains(&method.to_uppercase().as_str()) {
                    continue;
                }
                let at = format!("{} {path}", method.to_uppercase());
                match op["operationId"].as_str() {
                    Some(id) => {
                        if let Some(other) = ids.insert(id.to_string(), at.clone()) {
                            problems.push(format!("{at}: operationId {id} is also {other}'s"));
                        }
                    }
                    None => problems.push(format!("{at}: no operationId")),
                }
                // A page a browser opens from a link (GET /auth/v1/verify) succeeds with a
                // redirect: a GET's 3xx that declares its `Location` counts as its success.
                let success = op["responses"].as_object().is_some_and(|r| {
                    r.iter().any(|(s, answer)| {
                        s.starts_with('2')
                            || (method == "get"
                                && s.starts_with('3')
                                && answer["headers"]["Location"].is_object())
                    })
                });
                if !success {
                    problems.push(format!("{at}: no 2xx response"));
                }
                if path.starts_with("/v1/") && !op["security"].is_array() {
                    problems.push(format!("{at}: no security (use security(()) for none)"));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        app
    }
);

story!(
    a_v1_body_must_be_an_object_not_an_array,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (status, key) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &ann.token,
                Some(json!({"name": "k", "scopes": []})),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        let key_id = key["data"]["id"].as_str().unwrap().to_string();
        for (method, path) in [
            (Method::PATCH, format!("/orgs/{org}")),
            (Method::PATCH, format!("/orgs/{org}/api-keys/{key_id}")),
            (Method::POST, format!("/orgs/{org}/api-keys/{key_id}/roll")),
        ] {
            let (status, body) = app
                .call(method, &path, &ann.token, Some(json!([null, null])))
                .await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["error"]["code"], "invalid_request", "{path}: {body}");
        }
        // JSON `null` is the roll's optional body: the defaults.
        let res = app
            .v1(
                Method::POST,
                &format!("/orgs/{org}/api-keys/{key_id}/roll"),
                &ann.token,
            )
            .header("content-type", "application/json")
            .body("null")
            .send()
            .await
            .unwrap();
        assert_eq!(parts(res).await.0, 201);
        app
    }
);
