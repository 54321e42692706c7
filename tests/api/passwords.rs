//! The password policy: common passwords are refused by the strength estimate, breached ones
//! by a Have-I-Been-Pwned-compatible range API (a local mock here) that sees only the first
//! five hex digits of the SHA-1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use reqwest::Method;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::helpers::{parts, refused, Db, TestApp};
use crate::story;

/// A password the estimator accepts but the mock lists as breached.
const BREACHED: &str = "Tr0ub4dor&3 zebra quantum";
/// A password the estimator accepts and the mock does not list.
const UNLISTED: &str = "violet kettle marathon 77";

fn sha1_hex(s: &str) -> String {
    Sha1::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// A recording range API.
#[derive(Clone, Default)]
pub(crate) struct RangeApi {
    /// Every path segment after `/range/`, in order.
    pub asked: Arc<Mutex<Vec<String>>>,
    /// Answer 500 to everything.
    pub broken: bool,
}

async fn range(State(api): State<RangeApi>, Path(prefix): Path<String>) -> (StatusCode, String) {
    api.asked.lock().unwrap().push(prefix.clone());
    if api.broken {
        return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    }
    let hash = sha1_hex(BREACHED);
    // Padding lines (count 0) as HIBP sends on `Add-Padding: true`, plus the real entry.
    let mut body = format!(
        "{}:0\r\n00000000000000000000000000000000001:2\r\n",
        &hash[5..]
    );
    if prefix.eq_ignore_ascii_case(&hash[..5]) {
        body.push_str(&format!("{}:1234\r\n", &hash[5..]));
    }
    let padding_for_unlisted = sha1_hex(UNLISTED);
    body.push_str(&format!("{}:0\r\n", &padding_for_unlisted[5..]));
    (StatusCode::OK, body)
}

/// Starts the mock on a free port; its base URL and its record.
async fn range_api(broken: bool) -> (String, RangeApi) {
    let api = RangeApi {
        broken,
        ..RangeApi::default()
    };
    let app = Router::new()
        .route("/range/{prefix}", get(range))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), api)
}

/// How a story's breach check is set up.
#[derive(Clone, Copy)]
struct Breach {
    /// The mock range API answers 500.
    broken: bool,
    /// `password_breach_check_fail_closed`.
    fail_closed: bool,
}

/// A server whose breach check points at a fresh mock range API.
async fn spawn(db: Db, breach: Breach) -> (TestApp, RangeApi) {
    let (url, api) = range_api(breach.broken).await;
    let app = TestApp::spawn(db, move |c| {
        c.password_breach_check_url = Some(url);
        c.password_breach_check_fail_closed = breach.fail_closed;
    })
    .await;
    (app, api)
}

fn fresh() -> String {
    format!("pw-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn change_password(app: &TestApp, token: &str, password: &str) -> (u16, Value) {
    let res = app
        .auth(Method::PUT, "/user")
        .bearer_auth(token)
        .json(&json!({ "password": password }))
        .send()
        .await
        .unwrap();
    parts(res).await
}

story!(
    common_passwords_are_weak_passwords_everywhere_a_password_is_set,
    |app: TestApp| async move {
        for common in ["password", "12345678", "        ", "qwerty123", "iloveyou"] {
            let (status, body) = parts(app.signup(&fresh(), common).await).await;
            assert_eq!(status, 422, "{common:?}: {body}");
            assert_eq!(body["code"], "weak_password");
            assert_eq!(body["weak_password"]["reasons"], json!(["strength"]));
            assert!(body["message"].as_str().unwrap().contains("easy to guess"));
        }
        let email = fresh();
        let local = email.split('@').next().unwrap().to_string();
        let (status, body) = parts(app.signup(&email, &format!("{local}1")).await).await;
        assert_eq!(
            (status, body["code"].clone()),
            (422, json!("weak_password"))
        );

        // Password change (and recovery, which ends in the same PUT /user).
        let (_, _, session) = app.new_user().await;
        let token = session["access_token"].as_str().unwrap();
        let (status, body) = change_password(&app, token, "password").await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["weak_password"]["reasons"], json!(["strength"]));
        let (status, body) = change_password(&app, token, "a brand new password").await;
        assert_eq!(status, 200, "{body}");

        // The operator CLI's `user create`.
        let e = app
            .state
            .accounts
            .create_confirmed_user(&fresh(), "12345678".into())
            .await
            .unwrap_err();
        assert!(
            matches!(e, gatehouse::accounts::AccountError::WeakPassword(ref w) if w.reasons == ["strength"]),
            "{e:?}"
        );
        app
    }
);

story!(
    a_minimum_score_of_zero_accepts_what_the_length_allows,
    |c: &mut gatehouse::config::Config| c.password_min_score = 0,
    |app: TestApp| async move {
        assert_eq!(app.signup(&fresh(), "password").await.status(), 200);
        app
    }
);

story!(
    a_breached_password_is_refused_and_only_five_hex_digits_leave,
    setup: |db| spawn(db, Breach { broken: false, fail_closed: false }),
    |(app, api): (TestApp, RangeApi)| async move {
        let (status, body) = parts(app.signup(&fresh(), BREACHED).await).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["code"], "weak_password");
        assert_eq!(body["weak_password"]["reasons"], json!(["pwned"]));
        let (status, body) = parts(app.signup(&fresh(), UNLISTED).await).await;
        assert_eq!(status, 200, "{body}");
        // A weak password is refused before any lookup.
        assert_eq!(refused(app.signup(&fresh(), "password").await).await, "422 weak_password");

        let asked = api.asked.lock().unwrap().clone();
        assert_eq!(
            asked,
            vec![sha1_hex(BREACHED)[..5].to_string(), sha1_hex(UNLISTED)[..5].to_string()]
        );
        for prefix in &asked {
            assert!(
                prefix.len() == 5 && prefix.chars().all(|c| c.is_ascii_hexdigit()),
                "only 5 hex digits leave the server: {prefix:?}"
            );
        }
        app
    }
);

story!(
    a_failed_breach_check_fails_open_by_default,
    setup: |db| spawn(db, Breach { broken: true, fail_closed: false }),
    |(app, api): (TestApp, RangeApi)| async move {
        assert_eq!(app.signup(&fresh(), BREACHED).await.status(), 200);
        assert_eq!(api.asked.lock().unwrap().len(), 1);
        app
    }
);

story!(
    a_failed_breach_check_fails_closed_when_configured,
    setup: |db| spawn(db, Breach { broken: true, fail_closed: true }),
    |(app, api): (TestApp, RangeApi)| async move {
        let (status, body) = parts(app.signup(&fresh(), UNLISTED).await).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(api.asked.lock().unwrap().len(), 1);
        app
    }
);
