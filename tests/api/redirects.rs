//! Where an emailed link may land: `site_url`'s own origin (scheme, host and port) and what
//! `redirect_allowlist` lists; the same host on another port or scheme is another server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Db, TestApp};
use crate::smtp_sink::SmtpSink;

async fn spawn(db: Db) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let url = sink.url(None);
    let app = TestApp::spawn(db, move |c| {
        c.autoconfirm = false;
        c.smtp_url = Some(gatehouse::config::SecretString::from(url));
        c.mail_min_interval_seconds = 0;
        c.redirect_allowlist = vec!["http://localhost:3000/**".into()];
    })
    .await;
    (app, sink)
}

/// Asks for a recovery mail landing on `redirect_to`; the link's target and where opening
/// it sends the browser (with the session in the fragment).
async fn recover(
    app: &TestApp,
    sink: &SmtpSink,
    email: &str,
    n: usize,
    redirect_to: &str,
) -> (String, String) {
    let res = app
        .auth(Method::POST, "/recover")
        .query(&[("redirect_to", redirect_to)])
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mail = sink.wait_for(email, n, 10).await.pop().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.get(mail.link()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("access_token="), "{location}");
    (mail.link_param("redirect_to"), location)
}

async fn story(app: TestApp, sink: SmtpSink) -> TestApp {
    let email = format!("redir-{}@example.com", uuid::Uuid::new_v4().simple());
    app.state
        .accounts
        .create_confirmed_user(&email, "correct horse battery".into())
        .await
        .unwrap();
    let port = app.addr.port();
    let other_port = if port == 9999 { 9998 } else { 9999 };
    let cases = [
        // site_url (here public_url) itself, any path: kept.
        (format!("http://127.0.0.1:{port}/welcome"), true),
        // The same host on another port or scheme, or without the port: the site instead.
        (format!("http://127.0.0.1:{other_port}/steal"), false),
        (format!("https://127.0.0.1:{port}/welcome"), false),
        ("http://127.0.0.1/steal".to_string(), false),
        ("http://localhost:3000/reset".to_string(), true),
        ("http://localhost:3001/reset".to_string(), false),
    ];
    for (i, (requested, allowed)) in cases.iter().enumerate() {
        let (target, location) = recover(&app, &sink, &email, i + 1, requested).await;
        let expected = if *allowed {
            requested.as_str()
        } else {
            app.base.as_str()
        };
        assert_eq!(target, expected, "{requested}");
        assert!(
            location.starts_with(&format!("{expected}#")),
            "{requested} landed on {location}"
        );
    }
    app
}

crate::story!(
    only_the_site_origin_and_the_allowlist_receive_the_session,
    setup: spawn,
    |(app, sink)| story(app, sink)
);

/// With `site_url` on another site, the dashboard's own page still receives its mails' links.
async fn spawn_elsewhere(db: Db) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let url = sink.url(None);
    let app = TestApp::spawn(db, move |c| {
        c.autoconfirm = false;
        c.smtp_url = Some(gatehouse::config::SecretString::from(url));
        c.mail_min_interval_seconds = 0;
        c.site_url = Some("https://app.example.com".into());
    })
    .await;
    (app, sink)
}

crate::story!(
    the_dashboard_receives_its_own_links_when_site_url_is_elsewhere,
    setup: spawn_elsewhere,
    |(app, sink): (TestApp, SmtpSink)| async move {
        let email = format!("dash-{}@example.com", uuid::Uuid::new_v4().simple());
        app.state
            .accounts
            .create_confirmed_user(&email, "correct horse battery".into())
            .await
            .unwrap();
        let dashboard = format!("{}/dashboard/", app.base);
        let (target, location) = recover(&app, &sink, &email, 1, &dashboard).await;
        assert_eq!(target, dashboard);
        assert!(location.starts_with(&format!("{dashboard}#")), "{location}");
        // Another page of this server is not the dashboard: the site instead.
        let (target, _) = recover(&app, &sink, &email, 2, &format!("{}/other", app.base)).await;
        assert_eq!(target, "https://app.example.com");
        app
    }
);
