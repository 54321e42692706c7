//! A newcomer's first start: the dashboard under another loopback name, a webhook receiver
//! on their own machine, and a start-up log that says where things are.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, refusal, tempdir, TestApp, PK};
use crate::story;

/// `POST /v1/session` for a fresh person with `origin` (the client keeps the cookie).
async fn sign_in_from(app: &TestApp, origin: Option<&str>) -> (u16, Value) {
    let (email, password, _) = app.new_user().await;
    let mut req = app
        .client
        .post(app.url("/v1/session"))
        .json(&json!({"email": email, "password": password}));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    parts(req.send().await.unwrap()).await
}

/// `POST /v1/orgs` with the session cookie and the given headers.
async fn create_org_with(app: &TestApp, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url("/v1/orgs"))
        .json(&json!({"name": "From the dashboard"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    parts(req.send().await.unwrap()).await
}

story!(
    in_development_the_dashboard_works_under_every_loopback_name_of_its_port,
    |c: &mut gatehouse::config::Config| c.dev = true,
    |app: TestApp| async move {
        let port = app.addr.port();
        let localhost = format!("http://localhost:{port}");
        let (status, body) = sign_in_from(&app, Some(&localhost)).await;
        assert_eq!(status, 200, "{body}");
        for origin in [
            localhost.clone(),
            format!("http://[::1]:{port}"),
            app.base.clone(),
        ] {
            let (status, body) = create_org_with(&app, &[("origin", &origin)]).await;
            assert_eq!(status, 201, "{origin}: {body}");
        }
        for origin in [
            format!("http://localhost:{}", port + 1),
            format!("https://localhost:{port}"),
            "https://evil.example".to_string(),
        ] {
            let (status, body) = create_org_with(&app, &[("origin", &origin)]).await;
            assert_eq!(
                (status, &body["error"]["details"]["reason"]),
                (403, &json!("csrf")),
                "{origin}: {body}"
            );
        }
        app
    }
);

story!(
    outside_development_a_cross_origin_refusal_names_the_expected_and_the_arrived_origin,
    |app: TestApp| async move {
        let localhost = format!("http://localhost:{}", app.addr.port());
        let (status, body) = sign_in_from(&app, Some(&localhost)).await;
        assert_eq!(status, 403, "{body}");
        let error = &body["error"];
        assert_eq!(
            (&error["code"], &error["details"]),
            (
                &json!("forbidden"),
                &json!({"reason": "csrf", "expected_origin": app.base, "origin": localhost})
            ),
            "{body}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&app.base)
                && message.contains(&localhost)
                && message.contains("public_url"),
            "{message}"
        );

        // Signed in without an Origin (as a script would), the cookie's changes are checked.
        let (status, _) = sign_in_from(&app, None).await;
        assert_eq!(status, 200);
        let (status, body) =
            create_org_with(&app, &[("referer", &format!("{localhost}/dashboard"))]).await;
        assert_eq!(refusal(status, &body), (403, "forbidden", "csrf"), "{body}");
        assert_eq!(
            body["error"]["details"]["origin"],
            json!(localhost),
            "the Referer's origin"
        );
        let (status, body) = create_org_with(&app, &[]).await;
        assert_eq!(refusal(status, &body), (403, "forbidden", "csrf"), "{body}");
        assert_eq!(body["error"]["details"]["origin"], Value::Null);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("neither Origin nor Referer"),
            "{body}"
        );
        let (status, body) = create_org_with(&app, &[("origin", &app.base)]).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = create_org_with(
            &app,
            &[("referer", &format!("{}/dashboard#/keys", app.base))],
        )
        .await;
        assert_eq!(status, 201, "{body}");
        app
    }
);

/// Creates an endpoint at `url` in a fresh organization.
async fn endpoint_at(app: &TestApp, url: &str) -> (u16, Value) {
    let owner = app.person().await;
    let org = app.org(&owner, "Hooks").await;
    app.call(
        Method::POST,
        &format!("/orgs/{org}/webhooks"),
        &owner.token,
        Some(json!({"url": url})),
    )
    .await
}

story!(
    outside_development_a_private_webhook_target_is_refused_naming_the_setting,
    |app: TestApp| async move {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://10.0.0.7/hook",
        ] {
            let (status, body) = endpoint_at(&app, url).await;
            assert_eq!(
                refusal(status, &body),
                (422, "validation_failed", ""),
                "{url}: {body}"
            );
            let problem = body["error"]["details"]["fields"]["url"].as_str().unwrap();
            assert!(
                problem.contains("webhooks_allow_private")
                    && problem.contains("GATEHOUSE_WEBHOOKS_ALLOW_PRIVATE")
                    && problem.contains("--dev"),
                "{url}: {body}"
            );
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("webhooks_allow_private"));
        }
        app
    }
);

story!(
    in_development_a_webhook_target_on_this_machine_is_allowed,
    |c: &mut gatehouse::config::Config| c.dev = true,
    |app: TestApp| async move {
        for url in ["http://127.0.0.1:9/hook", "http://localhost:9/hook"] {
            let (status, body) = endpoint_at(&app, url).await;
            assert_eq!(status, 201, "{url}: {body}");
        }
        app
    }
);

/// Waits until the server's log holds `n` lines containing `needle`; returns the log.
async fn wait_for_lines(log: &std::path::Path, needle: &str, n: usize) -> String {
    for _ in 0..200 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().filter(|l| l.contains(needle)).count() >= n {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no {n} lines with {needle:?} in the log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test]
async fn the_start_up_log_says_where_the_dashboard_database_and_mail_are() {
    let dir = tempdir::Dir::new();
    let file = dir.0.join("first.db");
    let url = format!("sqlite://{}", file.display());
    let outbox = dir.0.join("outbox");
    // The server binds port 0, so public_url names a host of its own (a proxy's, say): a
    // loopback public_url on another port than the bound one would rightly be warned about.
    let server = crate::process::start_with(
        &url,
        &dir,
        &[
            ("GATEHOUSE_DEV", "true"),
            ("GATEHOUSE_LOG", "info"),
            ("GATEHOUSE_PUBLIC_URL", "https://gatehouse.test"),
        ],
    )
    .await;
    let log = wait_for_lines(&server.log, "dashboard", 1).await;
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("dashboard").contains("https://gatehouse.test/dashboard"),
        "{log}"
    );
    assert!(
        line("storage opened").contains(&format!("SQLite file {}", file.display())),
        "{log}"
    );
    assert!(
        line("mails are not sent").contains(&outbox.display().to_string()),
        "{log}"
    );
    assert!(line("development mode").contains("localhost"), "{log}");
    assert!(
        line("webhook targets").contains("private and loopback addresses are allowed"),
        "{log}"
    );
    assert!(
        !log.contains("WARN"),
        "a consistent set-up warns of nothing: {log}"
    );

    // Two mails: the worker handles them one after the other, so once the second is in the
    // outbox, whatever was logged after the first is in the log too.
    let client = reqwest::Client::new();
    for n in 0..2 {
        let res = client
            .post(format!("{}/auth/v1/otp", server.base))
            .header("apikey", PK)
            .json(&json!({"email": format!("first-{n}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let log = wait_for_lines(&server.log, "development outbox (no smtp_url: not sent)", 2).await;
    assert!(
        !log.contains("mail sent"),
        "a mail written to the outbox is not reported as sent: {log}"
    );
    drop(server);

    // `public_url` naming another port of this machine is reported at start.
    let other = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let public = format!("http://127.0.0.1:{other}");
    let server = crate::process::start_with(
        &url,
        &dir,
        &[("GATEHOUSE_DEV", "true"), ("GATEHOUSE_PUBLIC_URL", &public)],
    )
    .await;
    let log = wait_for_lines(&server.log, "WARN", 1).await;
    assert!(
        log.contains(&format!("names port {other}")),
        "the mismatch is named: {log}"
    );
}
