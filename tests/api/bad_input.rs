//! Bad input gets a clear 4xx in the right format: never a 5xx, a panic or a hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, TestApp};
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
        assert_eq!(parts(res).await.0, 400);
        let res = app
            .auth(Method::POST, "/signup")
            .json(&json!({"email": 12, "password": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(parts(res).await.0, 400);
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
        assert_eq!(parts(res).await.0, 413);
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
        assert_eq!(parts(app.me(&tampered).await).await.0, 401);

        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            pieces[1]
        );
        assert_eq!(parts(app.me(&none).await).await.0, 401);
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

story!(
    openapi_describes_the_routes_that_exist,
    |app: TestApp| async move {
        let (status, doc) = parts(
            app.client
                .get(app.url("/openapi.json"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        for path in [
            "/auth/v1/signup",
            "/auth/v1/token",
            "/auth/v1/user",
            "/auth/v1/logout",
            "/v1/me",
            "/v1/session",
            "/healthz",
            "/readyz",
            "/v1/orgs/{org}/invitations",
            "/v1/invitations/{id}/accept",
            "/v1/invitations/redeem",
        ] {
            assert!(
                doc["paths"][path].is_object(),
                "{path} missing from openapi"
            );
        }
        app
    }
);
