//! PKCE on /auth/v1 (issue 23): a flow started with a code_challenge lands with `?code=`,
//! and `POST /token?grant_type=pkce` exchanges that code once, only with its verifier, only
//! within `pkce_code_expiry_seconds`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use gatehouse::clock::Clock;
use gatehouse::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{clocked, parts, Db, TestApp};
use crate::smtp_sink::SmtpSink;
use crate::story;

const T0: i64 = 1_800_000_000_000;

async fn with_mail(db: Db) -> (TestApp, SmtpSink, Clock) {
    let sink = SmtpSink::start().await;
    let url = sink.url(None);
    let (app, clock) = clocked(db, T0, move |c: &mut Config| {
        c.autoconfirm = false;
        c.smtp_url = Some(gatehouse::config::SecretString::from(url));
        c.mail_min_interval_seconds = 0;
    })
    .await;
    (app, sink, clock)
}

fn fresh() -> String {
    format!("pkce-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A verifier (RFC 7636: 43 to 128 unreserved characters) and its S256 challenge, computed
/// here from the RFC, not by the server's code.
fn pair() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    parts(
        app.auth(Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn open_link(link: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.get(link).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    res.headers()["location"].to_str().unwrap().to_string()
}

fn query(location: &str) -> std::collections::HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

async fn exchange(app: &TestApp, code: &str, verifier: &str) -> (u16, Value) {
    post(
        app,
        "/token?grant_type=pkce",
        json!({"auth_code": code, "code_verifier": verifier}),
    )
    .await
}

/// Starts a PKCE sign-in by `/otp` and follows its link: the auth code.
async fn code_for(
    app: &TestApp,
    sink: &SmtpSink,
    email: &str,
    challenge: &str,
    n: usize,
) -> String {
    let (status, body) = post(
        app,
        "/otp",
        json!({"email": email, "code_challenge": challenge, "code_challenge_method": "s256"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let mail = sink.wait_for(email, n, 10).await.remove(n - 1);
    assert!(mail.link_param("token").starts_with("pkce_"));
    let location = open_link(&mail.link()).await;
    assert!(
        !location.contains("access_token"),
        "no session in the URL: {location}"
    );
    query(&location)
        .remove("code")
        .expect("the link lands with ?code=")
}

story!(
    a_pkce_code_is_used_once_and_only_with_its_verifier,
    setup: with_mail,
    |(app, sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let email = fresh();
        let (verifier, challenge) = pair();

        // A sign-up with a challenge: its confirmation link lands with a code.
        let (status, body) = post(
            &app,
            "/signup",
            json!({"email": email, "password": "long enough pw",
                   "code_challenge": challenge, "code_challenge_method": "s256"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let mail = sink.wait_for(&email, 1, 10).await.remove(0);
        let code = query(&open_link(&mail.link()).await).remove("code").unwrap();
        let (status, s) = exchange(&app, &code, &verifier).await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["user"]["email"], json!(email));
        assert!(!s["user"]["email_confirmed_at"].is_null());
        assert_eq!(app.me(s["access_token"].as_str().unwrap()).await.status(), 200);
        // Used twice: the second exchange finds nothing.
        let (status, body) = exchange(&app, &code, &verifier).await;
        assert_eq!((status, body["code"].clone()), (404, json!("flow_state_not_found")), "{body}");

        // A wrong verifier is refused, and the attempt uses the code up.
        let code = code_for(&app, &sink, &email, &challenge, 2).await;
        let (other, _) = pair();
        let (status, body) = exchange(&app, &code, &other).await;
        assert_eq!((status, body["code"].clone()), (400, json!("bad_code_verifier")), "{body}");
        let (status, body) = exchange(&app, &code, &verifier).await;
        assert_eq!((status, body["code"].clone()), (404, json!("flow_state_not_found")));
        // The challenge itself is not the verifier.
        let code = code_for(&app, &sink, &email, &challenge, 3).await;
        let (status, _) = exchange(&app, &code, &challenge).await;
        assert_eq!(status, 400);

        // An unknown code, missing fields, bad challenges.
        let (status, body) = exchange(&app, "not-a-code", &verifier).await;
        assert_eq!((status, body["code"].clone()), (404, json!("flow_state_not_found")));
        let (status, body) = post(&app, "/token?grant_type=pkce", json!({"auth_code": "x"})).await;
        assert_eq!((status, body["code"].clone()), (400, json!("validation_failed")));
        for bad in [
            json!({"email": email, "code_challenge": challenge}),
            json!({"email": email, "code_challenge": "too-short", "code_challenge_method": "s256"}),
            json!({"email": email, "code_challenge": challenge, "code_challenge_method": "md5"}),
        ] {
            let (status, body) = post(&app, "/recover", bad).await;
            assert_eq!((status, body["code"].clone()), (400, json!("validation_failed")), "{body}");
        }
        // A used PKCE link says so in the query, where a PKCE client reads it.
        let location = open_link(&mail.link()).await;
        assert_eq!(query(&location)["error_code"], "otp_expired", "{location}");
        app
    }
);

story!(
    a_pkce_code_expires,
    setup: with_mail,
    |(app, sink, clock): (TestApp, SmtpSink, Clock)| async move {
        let email = fresh();
        let (status, _) = post(&app, "/signup", json!({"email": email, "password": "long enough pw"})).await;
        assert_eq!(status, 200);
        let first = sink.wait_for(&email, 1, 10).await.remove(0);
        open_link(&first.link()).await;
        // Recovery with a plain challenge (the verifier itself).
        let (verifier, _) = pair();
        let (status, body) = post(
            &app,
            "/recover",
            json!({"email": email, "code_challenge": verifier, "code_challenge_method": "plain"}),
        )
        .await;
        assert_eq!((status, body), (200, json!({})));
        let mail = sink.wait_for(&email, 2, 10).await.remove(1);
        let code = query(&open_link(&mail.link()).await).remove("code").unwrap();
        clock.advance_ms(301_000);
        let (status, body) = exchange(&app, &code, &verifier).await;
        assert_eq!((status, body["code"].clone()), (422, json!("flow_state_expired")), "{body}");
        // Within its lifetime the same flow works.
        let (status, _) = post(
            &app,
            "/recover",
            json!({"email": email, "code_challenge": verifier, "code_challenge_method": "plain"}),
        )
        .await;
        assert_eq!(status, 200);
        let mail = sink.wait_for(&email, 3, 10).await.remove(2);
        let code = query(&open_link(&mail.link()).await).remove("code").unwrap();
        clock.advance_ms(299_000);
        let (status, s) = exchange(&app, &code, &verifier).await;
        assert_eq!(status, 200, "{s}");
        app
    }
);
