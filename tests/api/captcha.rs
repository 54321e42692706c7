//! The captcha hook against a local stand-in for the provider's verify endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::{Form, Json, Router};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, TestApp};
use crate::story;

const CAPTCHA_SECRET: &str = "captcha-secret-for-tests";

type Seen = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// Accepts the token `good` (with the right secret), refuses anything else with Turnstile's
/// error code, and sleeps past any timeout for `slow`; records every form it got.
async fn verify_endpoint() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().route(
        "/siteverify",
        post(move |Form(form): Form<HashMap<String, String>>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(form.clone());
                let token = form.get("response").map(String::as_str).unwrap_or("");
                if token == "slow" {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
                let ok = token == "good"
                    && form.get("secret").map(String::as_str) == Some(CAPTCHA_SECRET);
                if ok {
                    Json(json!({"success": true, "error-codes": []}))
                } else {
                    Json(json!({"success": false, "error-codes": ["invalid-input-response"]}))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

async fn with_captcha(db: crate::helpers::Db) -> (TestApp, Seen) {
    with_captcha_and(db, |_| {}).await
}

/// As [`with_captcha`], with `tweak` applied to the configuration too.
async fn with_captcha_and(
    db: crate::helpers::Db,
    tweak: fn(&mut gatehouse::config::Config),
) -> (TestApp, Seen) {
    let (addr, seen) = verify_endpoint().await;
    let app = TestApp::spawn(db, |c| {
        c.captcha_provider = Some(gatehouse::config::CaptchaProvider::Turnstile);
        c.captcha_secret = Some(CAPTCHA_SECRET.to_string().into());
        c.captcha_verify_url = Some(format!("http://{addr}/siteverify"));
        c.captcha_timeout_ms = 500;
        tweak(c);
    })
    .await;
    (app, seen)
}

fn meta(token: &str) -> Value {
    json!({"captcha_token": token})
}

story!(
    captcha_guards_sign_up_sign_in_otp_recover_and_resend,
    setup: with_captcha,
    |(app, seen): (TestApp, Seen)| async move {
        let post_json = |path: &str, body: Value| app.auth(Method::POST, path).json(&body).send();
        // Sign-up: no token, a refused token, a slow verifier: captcha_failed; a good token passes.
        let email = "guarded@example.com";
        for (token, why) in [(None, "no captcha_token found"), (Some("bad"), "invalid-input-response"), (Some("slow"), "verification unavailable")] {
            let mut body = json!({"email": email, "password": "correct horse battery"});
            if let Some(t) = token {
                body["gotrue_meta_security"] = meta(t);
            }
            let (status, err) = parts(post_json("/signup", body).await.unwrap()).await;
            assert_eq!((status, err["code"].as_str()), (400, Some("captcha_failed")), "{token:?}: {err}");
            assert_eq!(err["message"], format!("captcha protection: request disallowed ({why})"));
        }
        let (status, session) = parts(
            post_json("/signup", json!({"email": email, "password": "correct horse battery", "gotrue_meta_security": meta("good")}))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{session}");
        // The provider got the secret, the token and the client's address as a form.
        {
            let forms = seen.lock().unwrap();
            let last = forms.last().unwrap();
            assert_eq!(last.get("secret").map(String::as_str), Some(CAPTCHA_SECRET));
            assert_eq!(last.get("response").map(String::as_str), Some("good"));
            assert_eq!(last.get("remoteip").map(String::as_str), Some("127.0.0.1"));
        }
        // Password sign-in needs it; a refresh does not.
        let creds = json!({"email": email, "password": "correct horse battery"});
        let (status, err) = parts(post_json("/token?grant_type=password", creds.clone()).await.unwrap()).await;
        assert_eq!((status, err["code"].as_str()), (400, Some("captcha_failed")));
        let mut with = creds.clone();
        with["gotrue_meta_security"] = meta("good");
        let (status, signed_in) = parts(post_json("/token?grant_type=password", with).await.unwrap()).await;
        assert_eq!(status, 200, "{signed_in}");
        let (status, _) = parts(app.refresh(signed_in["refresh_token"].as_str().unwrap()).await).await;
        assert_eq!(status, 200);
        // /otp, /magiclink and /recover too.
        for path in ["/otp", "/magiclink", "/recover"] {
            let (status, err) = parts(post_json(path, json!({"email": email})).await.unwrap()).await;
            assert_eq!((status, err["code"].as_str()), (400, Some("captcha_failed")), "{path}");
            let (status, ok) = parts(post_json(path, json!({"email": format!("x{}", path.len()) + email, "gotrue_meta_security": meta("good")})).await.unwrap()).await;
            assert_eq!(status, 200, "{path}: {ok}");
        }
        // /resend sends a mail too.
        let resend = json!({"type": "signup", "email": email});
        let (status, err) = parts(post_json("/resend", resend).await.unwrap()).await;
        assert_eq!((status, err["code"].as_str()), (400, Some("captcha_failed")), "/resend");
        let resend = json!({"type": "signup", "email": email, "gotrue_meta_security": meta("good")});
        let (status, ok) = parts(post_json("/resend", resend).await.unwrap()).await;
        assert_eq!(status, 200, "/resend: {ok}");
        // A service key skips the captcha, as GoTrue's admin credentials do.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let key = app.state.accounts.jwt.sign_service(now, 600).unwrap();
        let res = app
            .auth(Method::POST, "/signup")
            .bearer_auth(&key)
            .json(&json!({"email": "server-side@example.com", "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        app
    }
);

story!(
    an_unreachable_verifier_refuses_sign_up,
    |c: &mut gatehouse::config::Config| {
        c.captcha_provider = Some(gatehouse::config::CaptchaProvider::Hcaptcha);
        c.captcha_secret = Some(CAPTCHA_SECRET.to_string().into());
        // Nothing listens on port 9 of the loopback (discard): the connection is refused.
        c.captcha_verify_url = Some("http://127.0.0.1:9/siteverify".into());
    },
    |app: TestApp| async move {
        let (status, err) = parts(
            app.auth(Method::POST, "/signup")
                .json(&json!({"email": "a@example.com", "password": "correct horse battery", "gotrue_meta_security": {"captcha_token": "good"}}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("captcha_failed")),
            "{err}"
        );
        app
    }
);

story!(
    an_anonymous_sign_in_needs_the_captcha_too,
    setup: |db| with_captcha_and(db, |c| c.anonymous_sign_ins = true),
    |(app, seen): (TestApp, Seen)| async move {
        let sign_in = |body: Value| app.auth(Method::POST, "/signup").json(&body).send();
        for body in [json!({}), json!({"gotrue_meta_security": meta("bad")})] {
            let (status, err) = parts(sign_in(body.clone()).await.unwrap()).await;
            assert_eq!(
                (status, err["code"].as_str()),
                (400, Some("captcha_failed")),
                "{body}: {err}"
            );
        }
        let pool = crate::helpers::sql(&app.db.url).await;
        let count = || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        };
        assert_eq!(count().await, 0, "a refused captcha made no user");
        let (status, session) = parts(
            sign_in(json!({"gotrue_meta_security": meta("good")}))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{session}");
        assert_eq!(session["user"]["is_anonymous"], true);
        assert_eq!(count().await, 1);
        assert_eq!(
            seen.lock().unwrap().last().unwrap().get("response").map(String::as_str),
            Some("good")
        );
        app
    }
);
