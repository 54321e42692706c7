//! Mail delivery against an SMTP server that says no, and one that speaks STARTTLS with a
//! certificate of a private CA (`smtp_ca_file`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::config::SecretString;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{tempdir, Db, TestApp};
use crate::smtp_sink::SmtpSink;
use crate::story;

fn fresh() -> String {
    format!("mail-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Asks for a one-time code for `email` (which creates the account): one mail.
async fn ask_code(app: &TestApp, email: &str) {
    let res = app
        .auth(Method::POST, "/otp")
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn with_sink(db: Db) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let url = sink.url(None);
    let app = TestApp::spawn(db, move |c| {
        c.autoconfirm = false;
        c.mail_min_interval_seconds = 0;
        c.smtp_url = Some(SecretString::from(url));
    })
    .await;
    (app, sink)
}

story!(
    a_mail_refused_with_4xx_then_5xx_is_retried_and_delivered_once,
    setup: with_sink,
    |(app, sink): (TestApp, SmtpSink)| async move {
        sink.refuse_next(&[451, 554]);
        let email = fresh();
        ask_code(&app, &email).await;
        // Refused twice (1 s, then 2 s of backoff), delivered on the third try.
        let mails = sink.wait_for(&email, 1, 30).await;
        assert_eq!(sink.refused(), 2);
        assert_eq!(mails[0].code().len(), 6);

        // A later mail goes out: the first one was not sent again meanwhile.
        let later = fresh();
        ask_code(&app, &later).await;
        sink.wait_for(&later, 1, 30).await;
        assert_eq!(sink.to(&email).len(), 1, "sent once");
        assert_eq!(sink.refused(), 2);
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_out_over_starttls_to_a_server_of_a_private_ca() {
    let (sink, ca) = SmtpSink::start_tls().await;
    let dir = tempdir::Dir::new();
    let ca_file = dir.0.join("smtp-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let url = format!("smtp://127.0.0.1:{}?tls=required", sink.port);
    let ca_path = ca_file.display().to_string();
    let app = TestApp::spawn(Db::Sqlite, move |c| {
        c.autoconfirm = false;
        c.smtp_url = Some(SecretString::from(url));
        c.smtp_ca_file = Some(ca_path);
    })
    .await;
    let email = fresh();
    ask_code(&app, &email).await;
    let mails = sink.wait_for(&email, 1, 30).await;
    assert!(mails[0].tls, "the mail came in the clear");
    assert_eq!(mails[0].code().len(), 6);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_with_a_plain_smtp_url_is_refused_at_start() {
    let dir = tempdir::Dir::new();
    let ca_file = dir.0.join("smtp-ca.pem");
    let (_sink, ca) = SmtpSink::start_tls().await;
    std::fs::write(&ca_file, ca).unwrap();
    let db = crate::helpers::TestDb::new(Db::Sqlite).await;
    let mut config = crate::helpers::test_config(&db.url);
    config.smtp_url = Some(SecretString::from("smtp://127.0.0.1:25"));
    config.smtp_ca_file = Some(ca_file.display().to_string());
    let err = gatehouse::app::AppState::build(config, gatehouse::clock::Clock::System)
        .await
        .err()
        .expect("a CA file without TLS must not start");
    assert!(format!("{err:#}").contains("smtp_ca_file"), "{err:#}");
}
