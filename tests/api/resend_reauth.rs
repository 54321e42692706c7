//! `/resend`, `/reauthenticate` with `secure_password_change`, and `/settings` (issue 23).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::clock::Clock;
use gatehouse::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

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
        c.secure_password_change = true;
    })
    .await;
    (app, sink, clock)
}

fn fresh() -> String {
    format!("resend-{}@example.com", uuid::Uuid::new_v4().simple())
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

async fn with_token(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    parts(
        app.auth(method, path)
            .bearer_auth(token)
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

/// A confirmed user signed in: (email, session).
async fn confirmed(app: &TestApp, sink: &SmtpSink) -> (String, Value) {
    let email = fresh();
    let (status, _) = post(
        app,
        "/signup",
        json!({"email": email, "password": "long enough pw"}),
    )
    .await;
    assert_eq!(status, 200);
    let mail = sink.wait_for(&email, 1, 10).await.remove(0);
    open_link(&mail.link()).await;
    let (status, s) = parts(app.sign_in(&email, "long enough pw").await).await;
    assert_eq!(status, 200, "{s}");
    (email, s)
}

story!(
    resend_mails_again_only_what_is_pending_and_answers_alike,
    setup: with_mail,
    |(app, sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        // A sign-up whose mail was lost: the resent link confirms and signs in, and vouches
        // for no password (the one on the account may be somebody else's).
        let email = fresh();
        let (status, _) = post(&app, "/signup", json!({"email": email, "password": "long enough pw"})).await;
        assert_eq!(status, 200);
        sink.wait_for(&email, 1, 10).await;
        let (status, body) = post(&app, "/resend", json!({"type": "signup", "email": email})).await;
        assert_eq!((status, body), (200, json!({})));
        let resent = sink.wait_for(&email, 2, 10).await.remove(1);
        let location = open_link(&resent.link()).await;
        assert!(location.contains("access_token="), "{location}");
        let (status, body) = parts(app.sign_in(&email, "long enough pw").await).await;
        assert_eq!((status, body["code"].clone()), (400, json!("invalid_credentials")));

        // Confirmed now: a resend sends nothing, and answers as for an unknown address.
        let unknown = fresh();
        for address in [&email, &unknown] {
            let (status, body) = post(&app, "/resend", json!({"type": "signup", "email": address})).await;
            assert_eq!((status, body), (200, json!({})));
        }

        // An email change waiting for its links gets them again.
        let (current, s) = confirmed(&app, &sink).await;
        let token = s["access_token"].as_str().unwrap();
        let new = fresh();
        let (status, body) = with_token(&app, Method::PUT, "/user", token, json!({"email": new})).await;
        assert_eq!(status, 200, "{body}");
        sink.wait_for(&new, 1, 10).await;
        let (status, _) = post(&app, "/resend", json!({"type": "email_change", "email": current})).await;
        assert_eq!(status, 200);
        sink.wait_for(&new, 2, 10).await;

        // Neither a sign-up nor a change was pending for these: nothing more went out.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(sink.to(&email).len(), 2);
        assert!(sink.to(&unknown).is_empty());

        // Bad requests.
        let (status, body) = post(&app, "/resend", json!({"type": "magiclink", "email": email})).await;
        assert_eq!((status, body["code"].clone()), (400, json!("validation_failed")));
        let (status, body) = post(&app, "/resend", json!({"type": "sms", "phone": "+15550100"})).await;
        assert_eq!((status, body["code"].clone()), (400, json!("phone_provider_disabled")));
        let (status, body) = post(&app, "/resend", json!({"type": "signup"})).await;
        assert_eq!((status, body["code"].clone()), (400, json!("validation_failed")));
        app
    }
);

story!(
    a_password_change_from_an_old_session_needs_the_reauthentication_nonce,
    setup: with_mail,
    |(app, sink, clock): (TestApp, SmtpSink, Clock)| async move {
        let (email, s) = confirmed(&app, &sink).await;
        let token = s["access_token"].as_str().unwrap().to_string();
        // A fresh session changes its password without a nonce (GoTrue's rule)...
        let (status, body) = with_token(&app, Method::PUT, "/user", &token, json!({"password": "second good pw"})).await;
        assert_eq!(status, 200, "{body}");
        // ...but a nonce that is sent is checked.
        let (status, body) = with_token(&app, Method::PUT, "/user", &token,
            json!({"password": "third good pw", "nonce": "123456"})).await;
        assert_eq!((status, body["code"].clone()), (422, json!("reauthentication_not_valid")));

        // A day later (the session refreshed meanwhile), the nonce is needed.
        clock.advance_ms(25 * 3600 * 1000);
        let (status, r) = parts(app.refresh(s["refresh_token"].as_str().unwrap()).await).await;
        assert_eq!(status, 200, "{r}");
        let token = r["access_token"].as_str().unwrap().to_string();
        let (status, body) = with_token(&app, Method::PUT, "/user", &token, json!({"password": "third good pw"})).await;
        assert_eq!((status, body["code"].clone()), (400, json!("reauthentication_needed")));

        let (status, body) = with_token(&app, Method::GET, "/reauthenticate", &token, json!({})).await;
        assert_eq!((status, body), (200, json!({})));
        let mails = sink.wait_for(&email, 2, 10).await;
        let mail = mails.last().unwrap();
        assert!(mail.data.contains("Subject: Confirm it is you"));
        let nonce = mail.code();
        let (status, body) = with_token(&app, Method::PUT, "/user", &token,
            json!({"password": "third good pw", "nonce": nonce})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(parts(app.sign_in(&email, "third good pw").await).await.0, 200);
        // Used up.
        let (status, body) = with_token(&app, Method::PUT, "/user", &token,
            json!({"password": "fourth good pw", "nonce": nonce})).await;
        assert_eq!((status, body["code"].clone()), (422, json!("reauthentication_not_valid")));
        // The nonce is no link: /verify never takes it.
        let (status, _) = post(&app, "/verify", json!({"email": email, "token": nonce, "type": "email"})).await;
        assert_eq!(status, 403);
        app
    }
);

story!(settings_report_what_signs_in, |app: TestApp| async move {
    let (status, body) = parts(app.auth(Method::GET, "/settings").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["external"]["email"], true);
    assert_eq!(body["external"]["phone"], false);
    assert_eq!(body["external"]["github"], false);
    assert_eq!(body["external"]["anonymous_users"], false);
    assert_eq!(body["disable_signup"], false);
    assert_eq!(body["saml_enabled"], false);
    assert!(body["mailer_autoconfirm"].is_boolean());
    app
});
