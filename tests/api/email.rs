//! Email flows against a real SMTP conversation (tests/api/smtp_sink.rs): confirmation,
//! magic links and codes, recovery, email change, limits, and a crash before the send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{parts, refused, Db, TestApp, PK};
use crate::smtp_sink::SmtpSink;
use crate::story;

/// A server that sends through a fresh sink, with confirmation on.
async fn spawn(db: Db, tweak: impl FnOnce(&mut gatehouse::config::Config)) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let url = sink.url(None);
    let app = TestApp::spawn(db, move |c| {
        c.autoconfirm = false;
        c.smtp_url = Some(gatehouse::config::SecretString::from(url));
        tweak(c);
    })
    .await;
    (app, sink)
}

fn fresh() -> String {
    format!("mail-{}@example.com", uuid::Uuid::new_v4().simple())
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

/// Opens an emailed link without following the redirect; returns the Location.
async fn open_link(link: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.get(link).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    res.headers()["location"].to_str().unwrap().to_string()
}

fn fragment(location: &str) -> std::collections::HashMap<String, String> {
    let frag = location.split_once('#').map(|x| x.1).unwrap_or("");
    url::form_urlencoded::parse(frag.as_bytes())
        .into_owned()
        .collect()
}

story!(
    sign_up_sends_a_confirmation_whose_link_confirms_and_signs_in,
    setup: |db| spawn(db, |_c| {}),
    |(app, sink): (TestApp, SmtpSink)| async move {
        let email = fresh();
        let (status, body) = parts(app.signup(&email, "long enough pw").await).await;
        assert_eq!(status, 200);
        assert!(body["access_token"].is_null());
        assert!(body["email_confirmed_at"].is_null());
        assert!(!body["confirmation_sent_at"].is_null());
        let (status, body) = parts(app.sign_in(&email, "long enough pw").await).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("email_not_confirmed"))
        );
        let mail = sink.wait_for(&email, 1, 10).await.remove(0);
        assert!(mail.data.contains("Subject: Confirm your email address"));
        let link = mail.link();
        assert!(link.starts_with(&format!("{}/auth/v1/verify?token=", app.base)));
        assert!(mail.link_param("token").len() >= 43, "256-bit link token");
        let location = open_link(&link).await;
        assert!(
            location.starts_with(&app.base),
            "site_url by default: {location}"
        );
        let f = fragment(&location);
        assert_eq!(f["token_type"], "bearer");
        assert_eq!(f["type"], "signup");
        assert_eq!(f["expires_in"], "3600");
        assert!(f["refresh_token"].len() >= 43);
        assert_eq!(app.me(&f["access_token"]).await.status(), 200);
        assert_eq!(app.sign_in(&email, "long enough pw").await.status(), 200);
        // Single use: the same link again lands with an error.
        let f = fragment(&open_link(&link).await);
        assert_eq!(f["error_code"], "otp_expired");
        assert_eq!(f["error"], "access_denied");
        app
    }
);

story!(
    a_magic_link_and_a_code_each_sign_in_once,
    setup: |db| spawn(db, |c: &mut gatehouse::config::Config| c.mail_min_interval_seconds = 0),
    |(app, sink): (TestApp, SmtpSink)| async move {
        let email = fresh();
        let (status, body) = post(&app, "/otp", json!({"email": email, "create_user": true})).await;
        assert_eq!((status, body), (200, json!({})));
        let mail = sink.wait_for(&email, 1, 10).await.remove(0);
        let code = mail.code();
        assert!(code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()));
        let (status, s) = post(
            &app,
            "/verify",
            json!({"email": email, "token": code, "type": "email"}),
        )
        .await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["token_type"], "bearer");
        assert_eq!(s["user"]["email"], json!(email));
        assert!(
            !s["user"]["email_confirmed_at"].is_null(),
            "the code proves the address"
        );
        let (status, body) = post(
            &app,
            "/verify",
            json!({"email": email, "token": code, "type": "email"}),
        )
        .await;
        assert_eq!((status, body["code"].clone()), (403, json!("otp_expired")));
        // A second mail: the link this time, by token_hash as verifyOtp sends it.
        let (status, _) = post(&app, "/magiclink", json!({"email": email})).await;
        assert_eq!(status, 200);
        let mail = sink.wait_for(&email, 2, 10).await.remove(1);
        let hash = mail.link_param("token");
        assert_eq!(mail.link_param("type"), "magiclink");
        let (status, s) = post(
            &app,
            "/verify",
            json!({"token_hash": hash, "type": "magiclink"}),
        )
        .await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(
            app.me(s["access_token"].as_str().unwrap()).await.status(),
            200
        );
        app
    }
);

story!(
    a_new_mail_invalidates_the_previous_code_and_wrong_codes_run_out,
    setup: |db| spawn(db, |c: &mut gatehouse::config::Config| c.mail_min_interval_seconds = 0),
    |(app, sink): (TestApp, SmtpSink)| async move {
        let email = fresh();
        post(&app, "/otp", json!({"email": email})).await;
        let first = sink.wait_for(&email, 1, 10).await.remove(0).code();
        post(&app, "/otp", json!({"email": email})).await;
        let second = sink.wait_for(&email, 2, 10).await.remove(1).code();
        if first != second {
            let (status, _) = post(
                &app,
                "/verify",
                json!({"email": email, "token": first, "type": "email"}),
            )
            .await;
            assert_eq!(status, 403, "the previous code is gone");
        }
        let wrong = if second == "000000" {
            "000001"
        } else {
            "000000"
        };
        for _ in 0..5 {
            let (status, body) = post(
                &app,
                "/verify",
                json!({"email": email, "token": wrong, "type": "email"}),
            )
            .await;
            assert_eq!((status, body["code"].clone()), (403, json!("otp_expired")));
        }
        let (status, _) = post(
            &app,
            "/verify",
            json!({"email": email, "token": second, "type": "email"}),
        )
        .await;
        assert_eq!(status, 403, "five wrong codes invalidate the code");
        app
    }
);

story!(
    unknown_addresses_get_the_same_answers_and_limits,
    setup: |db| spawn(db, |c: &mut gatehouse::config::Config| c.rate_limit_magic_link = crate::helpers::generous()),
    |(app, sink): (TestApp, SmtpSink)| async move {
        let (known, _, _) = {
            let email = fresh();
            post(&app, "/otp", json!({"email": email})).await;
            sink.wait_for(&email, 1, 10).await;
            (email, (), ())
        };
        let unknown = fresh();
        // Known and unknown addresses: the same status and body, then the same 429.
        for path in ["/recover", "/otp"] {
            let body = if path == "/otp" {
                json!({"email": unknown, "create_user": false})
            } else {
                json!({"email": unknown})
            };
            let a = post(&app, path, json!({"email": known, "create_user": false})).await;
            let b = post(&app, path, body).await;
            if path == "/recover" {
                // The first request for `known` came less than a minute after its OTP mail.
                assert_eq!(a.0, 429);
                assert_eq!(a.1["code"], "over_email_send_rate_limit");
                assert_eq!(b, (200, json!({})));
            } else {
                assert_eq!(a.0, 429);
                assert_eq!(b.0, 429, "unknown addresses are limited alike");
                assert_eq!(a.1["code"], b.1["code"]);
            }
        }
        let other = fresh();
        assert_eq!(
            post(&app, "/recover", json!({"email": other})).await,
            (200, json!({}))
        );
        // A later request that does send a mail: requests are handled, and mails sent, in
        // the order they were made, so once it has arrived and the queue is empty every
        // request before it has been handled and any mail of theirs would be in the sink.
        let later = fresh();
        assert_eq!(post(&app, "/otp", json!({"email": later})).await.0, 200);
        sink.wait_for(&later, 1, 10).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.state.runtime.store.pending_mail_count().await.unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "mail still queued");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            sink.to(&unknown).is_empty() && sink.to(&other).is_empty(),
            "no mail to unknown addresses"
        );
        assert!(
            app.state
                .runtime.store
                .user_by_email(&unknown)
                .await
                .unwrap()
                .is_none(),
            "create_user false creates no one"
        );
        app
    }
);

story!(
    the_magic_link_route_is_limited_per_ip,
    setup: |db| spawn(db, |c: &mut gatehouse::config::Config| {
        c.rate_limit_magic_link =
            gatehouse::ratelimit::Rates::one(gatehouse::ratelimit::Rate::new(5, 60));
    }),
    |(app, _sink): (TestApp, SmtpSink)| async move {
        for _ in 0..5 {
            assert_eq!(post(&app, "/otp", json!({"email": fresh()})).await.0, 200);
        }
        let (status, body) = post(&app, "/otp", json!({"email": fresh()})).await;
        assert_eq!(
            (status, body["code"].clone()),
            (429, json!("over_request_rate_limit"))
        );
        app
    }
);

story!(
    recovery_lets_the_user_set_a_new_password,
    setup: |db| spawn(db, |_c| {}),
    |(app, sink): (TestApp, SmtpSink)| async move {
        let email = fresh();
        app.state
            .accounts
            .create_confirmed_user(&email, "the old password".into())
            .await
            .unwrap();
        let res = app
            .auth(
                Method::POST,
                "/recover?redirect_to=https://evil.example.net/steal",
            )
            .json(&json!({"email": email}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mail = sink.wait_for(&email, 1, 10).await.remove(0);
        assert!(mail.data.contains("Subject: Reset your password"));
        assert_eq!(
            mail.link_param("redirect_to"),
            app.base,
            "a redirect not allowed falls back to the site URL"
        );
        let location = open_link(&mail.link()).await;
        let f = fragment(&location);
        assert_eq!(f["type"], "recovery");
        let res = app
            .auth(Method::PUT, "/user")
            .bearer_auth(&f["access_token"])
            .json(&json!({"password": "a brand new password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(refused(app.sign_in(&email, "the old password").await).await, "400 invalid_credentials");
        assert_eq!(
            app.sign_in(&email, "a brand new password").await.status(),
            200
        );
        app
    }
);

story!(
    an_email_change_applies_when_both_addresses_confirm_it,
    setup: |db| spawn(db, |c: &mut gatehouse::config::Config| c.redirect_allowlist =
        vec!["https://*.example.org/**".into()]),
    |(app, sink): (TestApp, SmtpSink)| async move {
        let email = fresh();
        app.state
            .accounts
            .create_confirmed_user(&email, "a password here".into())
            .await
            .unwrap();
        let (_, s) = parts(app.sign_in(&email, "a password here").await).await;
        let new = fresh();
        let res = app
            .auth(
                Method::PUT,
                "/user?redirect_to=https://app.example.org/done",
            )
            .bearer_auth(s["access_token"].as_str().unwrap())
            .json(&json!({"email": new}))
            .send()
            .await
            .unwrap();
        let (status, user) = parts(res).await;
        assert_eq!(status, 200, "{user}");
        assert_eq!(user["email"], json!(email), "not changed yet");
        assert_eq!(user["new_email"], json!(new));
        let mail = sink.wait_for(&new, 1, 10).await.remove(0);
        assert_eq!(
            mail.link_param("redirect_to"),
            "https://app.example.org/done"
        );
        let (status, s) = post(
            &app,
            "/verify",
            json!({"email": new, "token": mail.code(), "type": "email_change"}),
        )
        .await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(
            s["msg"],
            "Confirmation link accepted. Please proceed to confirm link sent to the other email"
        );
        assert!(s["access_token"].is_null(), "no session after one side");
        assert_eq!(
            app.sign_in(&email, "a password here").await.status(),
            200,
            "not changed until the current address confirms too"
        );
        // The current address's link completes it.
        let current = sink.wait_for(&email, 1, 10).await.remove(0);
        assert!(current
            .data
            .contains("Subject: Confirm the change of your email address"));
        assert!(current.decoded().contains(&new), "names the new address");
        let f = fragment(&open_link(&current.link()).await);
        assert_eq!(f["type"], "email_change", "{f:?}");
        assert_eq!(app.me(&f["access_token"]).await.status(), 200);
        assert_eq!(app.sign_in(&new, "a password here").await.status(), 200);
        assert_eq!(refused(app.sign_in(&email, "a password here").await).await, "400 invalid_credentials");
        app
    }
);

story!(
    bad_verify_input_gets_the_documented_error,
    setup: |db| spawn(db, |_c| {}),
    |(app, _sink): (TestApp, SmtpSink)| async move {
        // The README's GoTrue table: a missing or invalid field is 400 `validation_failed`, a
        // body that does not parse 400 `bad_json`, an unknown link 403 `otp_expired`.
        for (body, want) in [
            (json!({}), (400, "validation_failed")),
            (json!({"type": "nope", "token": "1"}), (400, "validation_failed")),
            (json!({"type": "email"}), (400, "validation_failed")),
            (json!({"type": "email", "token": "123456"}), (400, "validation_failed")),
            (
                json!({"type": "email", "token": "123456", "email": "not an email"}),
                (400, "validation_failed"),
            ),
            (
                json!({"type": "signup", "token_hash": "x".repeat(10_000)}),
                (403, "otp_expired"),
            ),
            (json!({"type": 5}), (400, "bad_json")),
        ] {
            let (status, answer) = post(&app, "/verify", body.clone()).await;
            assert_eq!(
                (status, answer["code"].as_str().unwrap_or_default()),
                want,
                "{body}: {answer}"
            );
        }
        let res = app
            .client
            .post(app.url("/auth/v1/verify"))
            .json(&json!({"type": "email", "token": "1", "email": "a@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "POST /verify needs the apikey");
        let location = open_link(&app.url("/auth/v1/verify?type=signup&token=nope")).await;
        assert_eq!(fragment(&location)["error_code"], "otp_expired");
        let location = open_link(&app.url("/auth/v1/verify")).await;
        assert_eq!(fragment(&location)["error_code"], "validation_failed");
        let _ = PK;
        app
    }
);

story!(
    the_verify_route_is_limited_per_ip_by_post_and_by_link,
    setup: |db| spawn(db, |c: &mut gatehouse::config::Config| {
        c.rate_limit_verify =
            gatehouse::ratelimit::Rates::one(gatehouse::ratelimit::Rate::new(10, 60));
    }),
    |(app, _sink): (TestApp, SmtpSink)| async move {
        for _ in 0..9 {
            let (status, _) = post(
                &app,
                "/verify",
                json!({"email": fresh(), "token": "123456", "type": "email"}),
            )
            .await;
            assert_eq!(status, 403);
        }
        // The tenth through the emailed link's route: the same window.
        let location = open_link(&app.url("/auth/v1/verify?type=magiclink&token=nope")).await;
        assert_eq!(fragment(&location)["error_code"], "otp_expired");
        let (status, body) = post(
            &app,
            "/verify",
            json!({"email": fresh(), "token": "123456", "type": "email"}),
        )
        .await;
        assert_eq!(
            (status, body["code"].clone()),
            (429, json!("over_request_rate_limit"))
        );
        app
    }
);

story!(
    a_burst_of_guesses_cannot_spend_more_than_five_attempts_of_a_code,
    setup: |db| spawn(db, |c: &mut gatehouse::config::Config| c.mail_min_interval_seconds = 0),
    |(app, sink): (TestApp, SmtpSink)| async move {
        let email = fresh();
        post(&app, "/otp", json!({"email": email})).await;
        sink.wait_for(&email, 1, 10).await;
        let now = app.state.edge.clock.now_ms();
        let rows = app.state.runtime.store.otps_for_email(&email, now).await.unwrap();
        assert_eq!(rows.len(), 1);
        let id = &rows[0].id;
        let store = &app.state.runtime.store;
        let max = gatehouse::mail::flows::MAX_CODE_ATTEMPTS;
        let takes =
            futures_util::future::join_all((0..12).map(|_| store.take_code_attempt(id, max))).await;
        let granted = takes.into_iter().filter(|t| *t.as_ref().unwrap()).count();
        assert_eq!(granted, 5, "twelve racing guesses, five attempts");
        app
    }
);

story!(
    a_password_set_before_the_address_was_proved_does_not_survive_a_magic_link,
    setup: |db| spawn(db, |c: &mut gatehouse::config::Config| c.mail_min_interval_seconds = 0),
    |(app, sink): (TestApp, SmtpSink)| async move {
        // A squatter signs up with the owner's address; the confirmation mail goes unread.
        let email = fresh();
        let squatter = "squatter's password 1";
        assert_eq!(app.signup(&email, squatter).await.status(), 200);
        sink.wait_for(&email, 1, 10).await;
        // The owner signs in with an emailed code.
        post(&app, "/otp", json!({"email": email})).await;
        let code = sink.wait_for(&email, 2, 10).await.remove(1).code();
        let (status, s) = post(
            &app,
            "/verify",
            json!({"email": email, "token": code, "type": "email"}),
        )
        .await;
        assert_eq!(status, 200, "{s}");
        let res = app.sign_in(&email, squatter).await;
        assert_eq!(
            res.status(),
            400,
            "the squatter's password no longer signs in"
        );
        // A password confirmed by its own sign-up link keeps working.
        let other = fresh();
        let password = "owner's own password 1";
        app.signup(&other, password).await;
        let link = sink.wait_for(&other, 1, 10).await.remove(0).link();
        open_link(&link).await;
        assert_eq!(app.sign_in(&other, password).await.status(), 200);
        app
    }
);

/// The API answers, the process dies (`kill -9`) before the mail reaches SMTP (the SMTP
/// server is down), and the restarted server delivers it.
async fn a_promised_mail_survives_kill_9(db: Db) {
    use crate::helpers::{tempdir, TestDb};
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    // The SMTP server must be down now and up later on the same address, which the server
    // is given now: a port picked and released (nothing else on this machine binds ports
    // this test picked; the sink would fail loudly if one did).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let env = [
        ("GATEHOUSE_SMTP_URL", smtp.as_str()),
        ("GATEHOUSE_AUTOCONFIRM", "false"),
    ];
    let mut server = crate::process::start_with(&test_db.url, &dir, &env).await;
    let email = fresh();
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/auth/v1/otp", server.base))
        .header("apikey", PK)
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let sink = SmtpSink::start_on(port).await;
    let again = crate::process::start_with(&test_db.url, &dir, &env).await;
    // The killed worker may have died holding the mail's lease (30 s), and a failed attempt
    // waits its backoff: the restarted server sends it within about 32 s.
    let mail = sink.wait_for(&email, 1, 60).await.remove(0);
    let res = client
        .post(format!("{}/auth/v1/verify", again.base))
        .header("apikey", PK)
        .json(&json!({"email": email, "token": mail.code(), "type": "email"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the delivered code signs in");
    drop(again);
    sink.stop();
    test_db.cleanup().await;
}

#[tokio::test]
async fn a_mail_promised_before_kill_9_is_delivered_after_restart_on_sqlite() {
    a_promised_mail_survives_kill_9(Db::Sqlite).await;
}

#[tokio::test]
async fn a_mail_promised_before_kill_9_is_delivered_after_restart_on_postgres() {
    a_promised_mail_survives_kill_9(Db::Postgres).await;
}

#[tokio::test]
async fn serve_refuses_to_start_without_smtp_unless_in_development() {
    let out = crate::process::command("sqlite::memory:", &[("GATEHOUSE_AUTOCONFIRM", "false")])
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GATEHOUSE_SMTP_URL") && err.contains("--dev"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_mails_go_to_the_outbox_folder() {
    let dir = crate::helpers::tempdir::Dir::new();
    let outbox = dir.0.join("outbox");
    let o = outbox.display().to_string();
    let app = TestApp::spawn(Db::Sqlite, move |c| c.mail_outbox_dir = o).await;
    let email = fresh();
    assert_eq!(post(&app, "/otp", json!({"email": email})).await.0, 200);
    let mut files = Vec::new();
    for _ in 0..100 {
        files = std::fs::read_dir(&outbox)
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        if !files.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(text.contains(&format!("To: {email}")) && text.contains("/auth/v1/verify?token="));
    app.stop().await;
}
