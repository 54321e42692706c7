//! Sessions per device (issue 23): each sign-in records its user agent, address (trusted-proxy
//! aware), method and last refresh; `/v1/me/sessions` lists them and ends one or every other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::clock::Clock;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{clocked, parts, TestApp};
use crate::story;

/// Signs in from a device; returns the session JSON.
async fn sign_in_from(app: &TestApp, email: &str, password: &str, ua: &str, ip: &str) -> Value {
    let res = app
        .auth(Method::POST, "/token?grant_type=password")
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let (status, body) = parts(res).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn session_id(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["session_id"].as_str().unwrap().to_string()
}

fn token(s: &Value) -> &str {
    s["access_token"].as_str().unwrap()
}

story!(
    sessions_are_listed_per_device_and_ended_one_or_all_others,
    setup: |db| clocked(db, Clock::System.now_ms(), |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
    }),
    |(app, clock): (TestApp, Clock)| async move {
        let (email, password, first) = app.new_user().await;
        let phone = sign_in_from(&app, &email, &password, "Phone/1.0", "203.0.113.7").await;
        clock.advance_ms(2_000);
        let laptop = sign_in_from(&app, &email, &password, "Laptop/2.0", "198.51.100.9").await;

        let (status, body) = app.call(Method::GET, "/me/sessions", token(&laptop), None).await;
        assert_eq!(status, 200, "{body}");
        let list = body["data"].as_array().unwrap().clone();
        assert_eq!(list.len(), 3, "{body}");
        let by_id = |id: &str| list.iter().find(|s| s["id"] == json!(id)).unwrap().clone();
        let p = by_id(&session_id(token(&phone)));
        assert_eq!(p["user_agent"], "Phone/1.0");
        assert_eq!(p["ip"], "203.0.113.7", "the client behind the trusted proxy");
        assert_eq!(p["sign_in_method"], "password");
        assert_eq!(p["current"], false);
        let l = by_id(&session_id(token(&laptop)));
        assert_eq!(l["current"], true);
        assert_eq!(l["user_agent"], "Laptop/2.0");
        assert_eq!(list[0]["id"], l["id"], "most recently refreshed first");
        assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);

        // A refresh moves last_refreshed_at.
        clock.advance_ms(5_000);
        let (status, refreshed) =
            parts(app.refresh(phone["refresh_token"].as_str().unwrap()).await).await;
        assert_eq!(status, 200, "{refreshed}");
        let (_, body) = app.call(Method::GET, "/me/sessions", token(&laptop), None).await;
        let p2 = body["data"][0].clone();
        assert_eq!(p2["id"], p["id"]);
        assert_eq!(
            p2["last_refreshed_at"].as_i64().unwrap(),
            p["created_at"].as_i64().unwrap() + 7_000
        );

        // Ending the phone's session: its refresh token at once, its access tokens next use.
        let path = format!("/me/sessions/{}", p["id"].as_str().unwrap());
        let (status, body) = app.call(Method::DELETE, &path, token(&laptop), None).await;
        assert_eq!(status, 204, "{body}");
        let (status, body) =
            parts(app.refresh(refreshed["refresh_token"].as_str().unwrap()).await).await;
        assert_eq!((status, body["code"].clone()), (400, json!("refresh_token_not_found")));
        assert_eq!(app.me(token(&refreshed)).await.status(), 401);
        assert_eq!(app.me(token(&laptop)).await.status(), 200);
        let (status, _) = app.call(Method::DELETE, &path, token(&laptop), None).await;
        assert_eq!(status, 404, "already ended");

        // Another person's session is not the caller's to end (nor to see).
        let (_, _, other) = app.new_user().await;
        let theirs = format!("/me/sessions/{}", session_id(token(&other)));
        let (status, _) = app.call(Method::DELETE, &theirs, token(&laptop), None).await;
        assert_eq!(status, 404);
        assert_eq!(app.me(token(&other)).await.status(), 200);
        let (_, body) = app.call(Method::GET, "/me/sessions", token(&other), None).await;
        assert_eq!(body["data"].as_array().unwrap().len(), 1);

        // Everywhere else: the first session ends, the caller's stays.
        let (status, body) = app.call(Method::DELETE, "/me/sessions", token(&laptop), None).await;
        assert_eq!((status, body["error"]["code"].clone()), (400, json!("invalid_request")));
        let (status, body) =
            app.call(Method::DELETE, "/me/sessions?others=true", token(&laptop), None).await;
        assert_eq!((status, body["data"]["ended"].clone()), (200, json!(1)), "{body}");
        assert_eq!(app.me(token(&first)).await.status(), 401);
        let (status, _) = parts(app.refresh(first["refresh_token"].as_str().unwrap()).await).await;
        assert_eq!(status, 400);
        let (_, body) = app.call(Method::GET, "/me/sessions", token(&laptop), None).await;
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        assert_eq!(app.me(token(&laptop)).await.status(), 200);
        app
    }
);
