//! Account takeover paths: a sign-up that squats somebody's address, sessions that outlive a
//! password change, session bounds, an email change made with a stolen token. Every story
//! runs on SQLite and PostgreSQL, with mail through a real SMTP conversation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use gatehouse::clock::Clock;
use gatehouse::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{clocked, parts, refusal, refused, Db, TestApp};
use crate::smtp_sink::SmtpSink;
use crate::story;

const T0: i64 = 1_800_000_000_000;

/// A server with confirmation on, mail through a fresh sink, and a manual clock.
async fn with_mail(db: Db, tweak: fn(&mut Config)) -> (TestApp, SmtpSink, Clock) {
    let sink = SmtpSink::start().await;
    let url = sink.url(None);
    let (app, clock) = clocked(db, T0, move |c| {
        c.autoconfirm = false;
        c.smtp_url = Some(gatehouse::config::SecretString::from(url));
        c.mail_min_interval_seconds = 0;
        tweak(c);
    })
    .await;
    (app, sink, clock)
}

fn fresh() -> String {
    format!("safe-{}@example.com", uuid::Uuid::new_v4().simple())
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

/// Opens an emailed link as a browser would; the fragment of where it lands.
async fn follow(link: &str) -> HashMap<String, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.get(link).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let frag = location.split_once('#').map(|x| x.1).unwrap_or("");
    url::form_urlencoded::parse(frag.as_bytes())
        .into_owned()
        .collect()
}

async fn sign_in_status(app: &TestApp, email: &str, password: &str) -> (u16, Value) {
    let (status, body) = parts(app.sign_in(email, password).await).await;
    (status, body["code"].clone())
}

story!(
    a_squatter_who_signed_up_first_never_signs_in_after_the_owner_confirms,
    setup: |db| with_mail(db, |_| {}),
    |(app, sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let email = fresh();
        let squatter = "squatter's own password 7";
        let owner = "the owner's password 42";
        assert_eq!(app.signup(&email, squatter).await.status(), 200);
        let first = sink.wait_for(&email, 1, 10).await.remove(0);
        // The confirmation mail says when the sign-up was made.
        assert!(
            first.decoded().contains("Someone signed up with"),
            "{}",
            first.decoded()
        );
        assert!(first
            .decoded()
            .contains(&format!("at {}", gatehouse::clock::rfc3339(T0))));
        assert_eq!(app.signup(&email, owner).await.status(), 200);
        let second = sink.wait_for(&email, 2, 10).await.remove(1);
        // The owner follows the link of their own sign-up (the second mail).
        let f = follow(&second.link()).await;
        assert_eq!(f["type"], "signup", "{f:?}");
        assert_eq!(app.me(&f["access_token"]).await.status(), 200);
        assert_eq!(
            sign_in_status(&app, &email, squatter).await,
            (400, json!("invalid_credentials")),
            "the squatter's password never signs in"
        );
        assert_eq!(sign_in_status(&app, &email, owner).await.0, 200);
        // The squatter's pending link ended with the confirmation.
        let f = follow(&first.link()).await;
        assert_eq!(f["error_code"], "otp_expired", "{f:?}");
        assert_eq!(sign_in_status(&app, &email, squatter).await, (400, json!("invalid_credentials")));
        app
    }
);

story!(
    a_squatter_who_signs_up_after_the_owner_never_signs_in_either,
    setup: |db| with_mail(db, |_| {}),
    |(app, sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let email = fresh();
        let owner = "the owner's password 42";
        let squatter = "squatter's own password 7";
        assert_eq!(app.signup(&email, owner).await.status(), 200);
        let own = sink.wait_for(&email, 1, 10).await.remove(0);
        assert_eq!(app.signup(&email, squatter).await.status(), 200);
        let theirs = sink.wait_for(&email, 2, 10).await.remove(1);
        // The owner's link still works after the later sign-up, and sets their password.
        let (status, s) = post(
            &app,
            "/verify",
            json!({"type": "signup", "token_hash": own.link_param("token")}),
        )
        .await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(sign_in_status(&app, &email, owner).await.0, 200);
        assert_eq!(
            sign_in_status(&app, &email, squatter).await,
            (400, json!("invalid_credentials"))
        );
        // The later sign-up's code is dead too.
        let (status, body) = post(
            &app,
            "/verify",
            json!({"type": "email", "email": email, "token": theirs.code()}),
        )
        .await;
        assert_eq!((status, &body["code"]), (403, &json!("otp_expired")));
        app
    }
);

/// The keys of a JSON value, recursively (array items by their first element's shape).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

story!(
    sign_up_answers_alike_for_new_unconfirmed_and_confirmed_addresses,
    setup: |db| with_mail(db, |_| {}),
    |(app, _sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let signup = |email: String| {
            let app = &app;
            async move {
                parts(
                    app.auth(Method::POST, "/signup")
                        .json(&json!({"email": email, "password": "a fine password 9",
                                      "data": {"plan": "team"}}))
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }
        };
        let (status, new) = signup(fresh()).await;
        assert_eq!(status, 200, "{new}");
        assert_eq!(new["identities"].as_array().unwrap().len(), 1, "{new}");
        // An address with an unconfirmed account.
        let pending = fresh();
        signup(pending.clone()).await;
        let (status, again) = signup(pending.clone()).await;
        assert_eq!(status, 200);
        // An address with a confirmed account.
        let taken = fresh();
        app.state
            .accounts
            .create_confirmed_user(&taken, "the owner's password 1".into())
            .await
            .unwrap();
        let (status, existing) = signup(taken.clone()).await;
        assert_eq!(status, 200);
        for (what, body, email) in [
            ("unconfirmed", &again, &pending),
            ("confirmed", &existing, &taken),
        ] {
            assert_eq!(shape(body), shape(&new), "{what}: {body}");
            assert_eq!(body["email"], json!(email));
            assert_eq!(body["user_metadata"], json!({"plan": "team"}), "{what}");
            assert_eq!(body["identities"][0]["provider"], "email", "{what}");
            assert_eq!(body["identities"][0]["user_id"], body["id"], "{what}");
            assert!(body["email_confirmed_at"].is_null(), "{what}");
        }
        app
    }
);

/// Signs in with a password: (access token, refresh token).
async fn session(app: &TestApp, email: &str, password: &str) -> (String, String) {
    let (status, s) = parts(app.sign_in(email, password).await).await;
    assert_eq!(status, 200, "{s}");
    (
        s["access_token"].as_str().unwrap().to_string(),
        s["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// Signs in to the dashboard; the cookie's `name=value`.
async fn cookie(app: &TestApp, email: &str, password: &str) -> String {
    let res = app
        .client
        .post(app.url("/v1/session"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let set = res.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn me_with_cookie(app: &TestApp, cookie: &str) -> (u16, Value) {
    parts(
        reqwest::Client::new()
            .get(app.url("/v1/me"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn get_user(app: &TestApp, token: &str) -> (u16, Value) {
    parts(
        app.auth(Method::GET, "/user")
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

story!(
    a_password_change_ends_every_other_session,
    setup: |db| with_mail(db, |_| {}),
    |(app, _sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let email = fresh();
        let old = "the first password 1";
        app.state
            .accounts
            .create_confirmed_user(&email, old.into())
            .await
            .unwrap();
        let (this_access, this_refresh) = session(&app, &email, old).await;
        let (other_access, other_refresh) = session(&app, &email, old).await;
        let dashboard = cookie(&app, &email, old).await;
        // Warm every cache first, so the refusals below cannot come from a cold read.
        assert_eq!(app.me(&other_access).await.status(), 200);
        assert_eq!(me_with_cookie(&app, &dashboard).await.0, 200);
        let res = app
            .auth(Method::PUT, "/user")
            .bearer_auth(&this_access)
            .json(&json!({"password": "the second password 2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        // The other session: refresh refused, access token refused at /v1 and /auth/v1.
        let (status, body) = parts(app.refresh(&other_refresh).await).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &json!("refresh_token_not_found"))
        );
        let (status, body) = parts(app.me(&other_access).await).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["details"]["reason"], "revoked");
        let (status, body) = get_user(&app, &other_access).await;
        assert_eq!((status, &body["code"]), (403, &json!("session_not_found")), "{body}");
        // The dashboard cookie is refused (an ended cookie session answers `expired`: the
        // store keeps no record of why it ended).
        let (status, body) = me_with_cookie(&app, &dashboard).await;
        assert_eq!(
            refusal(status, &body),
            (401, "unauthorized", "expired"),
            "{body}"
        );
        // The session that made the change keeps working.
        assert_eq!(app.me(&this_access).await.status(), 200);
        assert_eq!(get_user(&app, &this_access).await.0, 200);
        assert_eq!(app.refresh(&this_refresh).await.status(), 200);
        app
    }
);

story!(
    a_session_ends_after_its_lifetime_or_when_idle,
    setup: |db| with_mail(db, |c| {
        c.session_max_seconds = Some(3 * 3600);
        c.session_inactivity_seconds = Some(3600);
        c.jwt_expiry_seconds = 24 * 3600;
    }),
    |(app, _sink, clock): (TestApp, SmtpSink, Clock)| async move {
        let email = fresh();
        let pw = "a password of mine 5";
        app.state
            .accounts
            .create_confirmed_user(&email, pw.into())
            .await
            .unwrap();
        // Idle: not refreshed for the inactivity timeout.
        let (idle_access, idle_refresh) = session(&app, &email, pw).await;
        let (busy_access, mut busy_refresh) = session(&app, &email, pw).await;
        assert_eq!(app.me(&idle_access).await.status(), 200);
        clock.advance_ms(59 * 60 * 1000);
        let (_, s) = parts(app.refresh(&busy_refresh).await).await;
        busy_refresh = s["refresh_token"].as_str().unwrap().to_string();
        clock.advance_ms(60 * 1000);
        let (status, body) = parts(app.me(&idle_access).await).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["details"]["reason"], "expired");
        assert_eq!(get_user(&app, &idle_access).await.0, 403);
        let (status, body) = parts(app.refresh(&idle_refresh).await).await;
        assert_eq!((status, &body["code"]), (400, &json!("session_expired")));
        // Refreshed within the timeout: still alive, up to the absolute lifetime.
        assert_eq!(app.me(&busy_access).await.status(), 200);
        for _ in 0..2 {
            clock.advance_ms(58 * 60 * 1000);
            let (status, s) = parts(app.refresh(&busy_refresh).await).await;
            assert_eq!(status, 200, "{s}");
            busy_refresh = s["refresh_token"].as_str().unwrap().to_string();
        }
        clock.advance_ms(5 * 60 * 1000);
        // Past the lifetime the access token is refused as expired (docs/configuration.md,
        // session_max_seconds)…
        assert_eq!(
            refused(app.me(&busy_access).await).await,
            "401 unauthorized expired"
        );
        let (status, body) = parts(app.refresh(&busy_refresh).await).await;
        assert_eq!((status, &body["code"]), (400, &json!("session_expired")));
        // …and once the refused refresh has deleted the session, as ended.
        assert_eq!(
            refused(app.me(&busy_access).await).await,
            "401 unauthorized revoked"
        );
        app
    }
);

/// `PUT /auth/v1/user {email}` with a fresh session of `email`; (status, body).
async fn change_email(app: &TestApp, email: &str, password: &str, new: &str) -> (u16, Value) {
    let (access, _) = session(app, email, password).await;
    parts(
        app.auth(Method::PUT, "/user")
            .bearer_auth(&access)
            .json(&json!({"email": new}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

story!(
    an_email_change_to_a_taken_address_answers_like_a_free_one_and_tells_its_owner,
    setup: |db| with_mail(db, |_| {}),
    |(app, sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let (me, other, free) = (fresh(), fresh(), fresh());
        let pw = "my account's password 3";
        for who in [&me, &other] {
            app.state
                .accounts
                .create_confirmed_user(who, pw.into())
                .await
                .unwrap();
        }
        let (status, to_free) = change_email(&app, &me, pw, &free).await;
        assert_eq!(status, 200, "{to_free}");
        let (status, to_taken) = change_email(&app, &me, pw, &other).await;
        assert_eq!(status, 200, "no email_exists oracle: {to_taken}");
        assert_eq!(to_taken["new_email"], json!(other));
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&to_taken), keys(&to_free));
        // The owner of the taken address is told, with no link to follow.
        let notice = sink.wait_for(&other, 1, 10).await.remove(0);
        assert!(
            notice
                .data
                .contains("Subject: Someone tried to use your email address"),
            "{}",
            notice.data
        );
        assert!(!notice.decoded().contains("/auth/v1/verify"));
        // The current address gets the confirmation of both requests; even followed,
        // the change to a taken address never applies.
        let current = sink.wait_for(&me, 2, 10).await.remove(1);
        let f = follow(&current.link()).await;
        assert!(f.contains_key("message"), "{f:?}");
        assert_eq!(sign_in_status(&app, &me, pw).await.0, 200);
        assert_eq!(sign_in_status(&app, &other, pw).await.0, 200);
        app
    }
);

story!(
    without_double_confirm_the_new_address_alone_applies_it_and_the_old_one_is_told,
    setup: |db| with_mail(db, |c| c.email_change_double_confirm = false),
    |(app, sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let (email, new) = (fresh(), fresh());
        let pw = "my account's password 3";
        app.state
            .accounts
            .create_confirmed_user(&email, pw.into())
            .await
            .unwrap();
        let (status, body) = change_email(&app, &email, pw, &new).await;
        assert_eq!(status, 200, "{body}");
        let told = sink.wait_for(&email, 1, 10).await.remove(0);
        assert!(
            told.data
                .contains("Subject: Your email address is being changed"),
            "{}",
            told.data
        );
        assert!(told.decoded().contains(&new));
        let link = sink.wait_for(&new, 1, 10).await.remove(0).link();
        let f = follow(&link).await;
        assert_eq!(f["type"], "email_change", "{f:?}");
        assert_eq!(sign_in_status(&app, &new, pw).await.0, 200);
        assert_eq!(sign_in_status(&app, &email, pw).await, (400, json!("invalid_credentials")));
        app
    }
);
