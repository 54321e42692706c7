//! Anonymous sign-in (`signInAnonymously`: a sign-up with neither email nor phone). Off by
//! default, with GoTrue's answer, 422 `anonymous_provider_disabled`; on
//! (`anonymous_sign_ins`), a user with no address and the `is_anonymous` claim, limited per
//! IP on its own, behind the captcha, and converted to a permanent account by confirming an
//! address (`updateUser({email})`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::clock::Clock;
use gatehouse::config::Config;
use gatehouse::ratelimit::{Rate, Rates};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{clocked, parts, sql, Db, TestApp};
use crate::mfa::claims;
use crate::smtp_sink::SmtpSink;
use crate::story;

story!(
    an_anonymous_sign_up_is_refused_as_gotrue_refuses_it_when_off,
    |app: TestApp| async move {
        for body in [
            json!({}),
            json!({"data": {"theme": "dark"}}),
            json!({"email": "", "phone": ""}),
            json!({"password": "correct-horse-42"}),
        ] {
            let res = app
                .auth(Method::POST, "/signup")
                .json(&body)
                .send()
                .await
                .unwrap();
            let (status, answer) = parts(res).await;
            assert_eq!(
                (status, answer["code"].as_str()),
                (422, Some("anonymous_provider_disabled")),
                "{body}: {answer}"
            );
            assert_eq!(answer["message"], "Anonymous sign-ins are disabled");
        }
        // A sign-up with an address but no password is still a validation error.
        let res = app
            .auth(Method::POST, "/signup")
            .json(&json!({"email": "a@example.com"}))
            .send()
            .await
            .unwrap();
        let (status, answer) = parts(res).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("validation_failed")),
            "{answer}"
        );
        let pool = sql(&app.db.url).await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "no user was made");
        // /settings says so.
        let (_, settings) = parts(app.auth(Method::GET, "/settings").send().await.unwrap()).await;
        assert_eq!(settings["external"]["anonymous_users"], false);
        app
    }
);

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

async fn put_user(app: &TestApp, access: &str, body: Value) -> (u16, Value) {
    parts(
        app.auth(Method::PUT, "/user")
            .bearer_auth(access)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn get_user(app: &TestApp, access: &str) -> (u16, Value) {
    parts(
        app.auth(Method::GET, "/user")
            .bearer_auth(access)
            .send()
            .await
            .unwrap(),
    )
    .await
}

story!(
    an_anonymous_sign_in_is_a_user_without_an_address_whose_token_says_so,
    |c: &mut Config| c.anonymous_sign_ins = true,
    |app: TestApp| async move {
        let (_, settings) = parts(app.auth(Method::GET, "/settings").send().await.unwrap()).await;
        assert_eq!(settings["external"]["anonymous_users"], true);

        let (status, session) = post(&app, "/signup", json!({"data": {"theme": "dark"}})).await;
        assert_eq!(status, 200, "{session}");
        let user = &session["user"];
        assert_eq!(user["is_anonymous"], true, "{user}");
        assert_eq!(user["email"], "");
        assert_eq!(user["identities"], json!([]));
        assert_eq!(user["user_metadata"], json!({"theme": "dark"}));
        assert_eq!(user["role"], "authenticated");
        let access = session["access_token"].as_str().unwrap().to_string();
        let c = claims(&access);
        assert_eq!(c["is_anonymous"], true, "{c}");
        assert_eq!(c["role"], "authenticated");
        assert_eq!(c["aal"], "aal1");
        assert_eq!(c["amr"][0]["method"], "anonymous");
        assert_eq!(c["email"], "");
        let id = user["id"].as_str().unwrap().to_string();

        // getUser, and the row: no address at all (NULL), so a second one does not collide.
        let (status, me) = get_user(&app, &access).await;
        assert_eq!(
            (status, me["is_anonymous"].clone()),
            (200, json!(true)),
            "{me}"
        );
        let (status, second) = post(&app, "/signup", json!({})).await;
        assert_eq!(status, 200, "{second}");
        assert_ne!(second["user"]["id"], json!(id));
        assert_eq!(second["user"]["user_metadata"], json!({}));
        let pool = sql(&app.db.url).await;
        let (nulls,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM users WHERE email IS NULL AND is_anonymous = 1")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(nulls, 2);

        // A refresh keeps the claim.
        let (status, refreshed) = post(
            &app,
            "/token?grant_type=refresh_token",
            json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
        assert_eq!(status, 200, "{refreshed}");
        let c = claims(refreshed["access_token"].as_str().unwrap());
        assert_eq!(
            (c["is_anonymous"].clone(), c["sub"].clone()),
            (json!(true), json!(id))
        );
        assert_eq!(refreshed["user"]["is_anonymous"], true);

        // Metadata can change; a password alone cannot (GoTrue: it needs the address too).
        let (status, changed) = put_user(&app, &access, json!({"data": {"theme": "light"}})).await;
        assert_eq!(
            (status, changed["user_metadata"]["theme"].clone()),
            (200, json!("light"))
        );
        let (status, err) =
            put_user(&app, &access, json!({"password": "a long enough secret 9"})).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (422, Some("validation_failed")),
            "{err}"
        );

        // `/v1`: the person is known, but may not found an organization.
        assert_eq!(app.me(&access).await.status(), 200);
        let res = app
            .client
            .post(app.url("/v1/orgs"))
            .bearer_auth(&access)
            .json(&json!({"name": "Anon Inc"}))
            .send()
            .await
            .unwrap();
        let (status, err) = parts(res).await;
        assert_eq!(status, 403, "{err}");
        assert_eq!(err["error"]["code"], "forbidden");
        assert_eq!(err["error"]["details"]["required"], "email");
        app
    }
);

story!(
    anonymous_sign_ins_have_their_own_per_ip_limit,
    |c: &mut Config| {
        c.anonymous_sign_ins = true;
        c.rate_limit_anonymous = Rates::one(Rate::new(2, 3600));
    },
    |app: TestApp| async move {
        for _ in 0..2 {
            let (status, body) = post(&app, "/signup", json!({})).await;
            assert_eq!(status, 200, "{body}");
        }
        let res = app
            .auth(Method::POST, "/signup")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(res.headers().contains_key("retry-after"));
        let (status, err) = parts(res).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (429, Some("over_request_rate_limit")),
            "{err}"
        );
        // Sign-up with an address counts against its own limit, not this one.
        let (status, body) = post(
            &app,
            "/signup",
            json!({"email": "still-free@example.com", "password": "correct horse battery"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let pool = sql(&app.db.url).await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE is_anonymous = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 2, "the refused sign-in made no user");
        app
    }
);

const T0: i64 = 1_800_000_000_000;

/// Anonymous sign-in on, confirmation mails through a fresh sink (both addresses of an email
/// change must confirm, the default).
async fn with_mail(db: Db) -> (TestApp, SmtpSink, Clock) {
    let sink = SmtpSink::start().await;
    let url = sink.url(None);
    let (app, clock) = clocked(db, T0, move |c| {
        c.autoconfirm = false;
        c.anonymous_sign_ins = true;
        c.smtp_url = Some(gatehouse::config::SecretString::from(url));
        c.mail_min_interval_seconds = 0;
    })
    .await;
    (app, sink, clock)
}

fn fresh() -> String {
    format!("anon-{}@example.com", uuid::Uuid::new_v4().simple())
}

story!(
    an_anonymous_user_becomes_permanent_by_confirming_an_address,
    setup: with_mail,
    |(app, sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let (status, session) = post(&app, "/signup", json!({"data": {"cart": 3}})).await;
        assert_eq!(status, 200, "{session}");
        let access = session["access_token"].as_str().unwrap().to_string();
        let refresh = session["refresh_token"].as_str().unwrap().to_string();
        let id = session["user"]["id"].as_str().unwrap().to_string();
        let (email, pw) = (fresh(), "an anonymous cart's password 7");
        // The address and the password together, as GoTrue allows.
        let (status, asked) = put_user(&app, &access, json!({"email": email, "password": pw})).await;
        assert_eq!(status, 200, "{asked}");
        assert_eq!(asked["new_email"], json!(email));
        assert_eq!(asked["is_anonymous"], true, "not until the address is confirmed");
        // Until then the password signs nobody in.
        let (status, _) = post(
            &app,
            "/token?grant_type=password",
            json!({"email": email, "password": pw}),
        )
        .await;
        assert_eq!(status, 400);
        // One mail, to the new address: there is no current one to confirm from.
        let mail = sink.wait_for(&email, 1, 10).await.remove(0);
        let (status, verified) = post(
            &app,
            "/verify",
            json!({"type": "email_change", "token_hash": mail.link_param("token")}),
        )
        .await;
        assert_eq!(status, 200, "{verified}");
        let (_, me) = get_user(&app, &access).await;
        assert_eq!(me["is_anonymous"], false, "{me}");
        assert_eq!(me["email"], json!(email));
        assert!(me["email_confirmed_at"].is_string());
        assert_eq!(me["identities"][0]["provider"], "email");
        assert_eq!(me["app_metadata"]["provider"], "email");
        assert_eq!(me["user_metadata"]["cart"], 3, "the anonymous user's data stays");
        // The anonymous session's refresh now carries the permanent claim, same user.
        let (status, refreshed) = post(
            &app,
            "/token?grant_type=refresh_token",
            json!({"refresh_token": refresh}),
        )
        .await;
        assert_eq!(status, 200, "{refreshed}");
        let c = claims(refreshed["access_token"].as_str().unwrap());
        assert_eq!(c["is_anonymous"], false);
        assert_eq!(c["email"], json!(email));
        assert_eq!(c["sub"], json!(id));
        // And the password set with the address signs in.
        let (status, signed) = post(
            &app,
            "/token?grant_type=password",
            json!({"email": email, "password": pw}),
        )
        .await;
        assert_eq!(status, 200, "{signed}");
        assert_eq!(signed["user"]["id"], json!(id));
        // Now a permanent person: an organization is allowed.
        let res = app
            .client
            .post(app.url("/v1/orgs"))
            .bearer_auth(signed["access_token"].as_str().unwrap())
            .json(&json!({"name": "Converted"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        app
    }
);

story!(
    an_anonymous_user_asking_for_a_taken_address_learns_nothing_and_stays_anonymous,
    setup: with_mail,
    |(app, sink, _clock): (TestApp, SmtpSink, Clock)| async move {
        let pw = "somebody's own password 5";
        let taken = fresh();
        app.state
            .accounts
            .create_confirmed_user(&taken, pw.into())
            .await
            .unwrap();
        let (_, session) = post(&app, "/signup", json!({})).await;
        let access = session["access_token"].as_str().unwrap().to_string();
        // Same answer as for a free address (no email_exists oracle for anyone who can sign
        // in anonymously); the owner is told, with nothing to follow.
        let (status, asked) = put_user(&app, &access, json!({"email": taken})).await;
        assert_eq!(status, 200, "{asked}");
        assert_eq!(asked["new_email"], json!(taken));
        let notice = sink.wait_for(&taken, 1, 10).await.remove(0);
        assert!(!notice.decoded().contains("/auth/v1/verify"), "{}", notice.data);
        let (_, me) = get_user(&app, &access).await;
        assert_eq!((me["is_anonymous"].clone(), me["email"].clone()), (json!(true), json!("")));

        // An address free when asked but taken before the link is followed: email_exists.
        let racing = fresh();
        let (status, _) = put_user(&app, &access, json!({"email": racing})).await;
        assert_eq!(status, 200);
        let mail = sink.wait_for(&racing, 1, 10).await.remove(0);
        app.state
            .accounts
            .create_confirmed_user(&racing, pw.into())
            .await
            .unwrap();
        let (status, err) = post(
            &app,
            "/verify",
            json!({"type": "email_change", "token_hash": mail.link_param("token")}),
        )
        .await;
        assert_eq!(
            (status, err["code"].as_str()),
            (422, Some("email_exists")),
            "{err}"
        );
        let (_, me) = get_user(&app, &access).await;
        assert_eq!(me["is_anonymous"], true, "{me}");
        app
    }
);
