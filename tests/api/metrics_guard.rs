//! `/metrics`: bounded labels whatever clients send, `metrics_token` and `metrics_listen`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::app::AppState;
use gatehouse::clock::Clock;
use gatehouse::config::{Config, SecretString};
use gatehouse::server;
use serde_json::Value;

use crate::helpers::{test_config, Db, TestApp, TestDb};
use crate::proxy::raw_request;
use crate::story;

const TOKEN: &str = "scrape-token-0123456789abcdef";

story!(
    client_method_tokens_never_become_metric_labels,
    |app: TestApp| async move {
        // Unknown but short methods are answered (here 405) and counted as `other`.
        for method in [
            "BREW",
            "PROPFIND",
            "get",
            "M-0123456789abcdef0123456789abcd",
        ] {
            let (status, _) = raw_request(app.addr, method, "/v1/me", &[]).await;
            assert_eq!(status, 405, "{method}");
        }
        // Over 32 bytes: refused (400 in the envelope, GoTrue's format on /auth/v1).
        let long = format!("M{}", "X".repeat(32));
        let huge = "Y".repeat(64 * 1024);
        for method in [long.as_str(), huge.as_str()] {
            let (status, body) = raw_request(app.addr, method, "/v1/me", &[]).await;
            assert_eq!(status, 400, "{}", &method[..8]);
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        }
        let (status, body) = raw_request(app.addr, &long, "/auth/v1/settings", &[]).await;
        assert_eq!(status, 400);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error_code"], "validation_failed", "{body}");
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for token in ["BREW", "PROPFIND", "\"get\"", "M-0123", "MXXX", "YYYY"] {
            assert!(!text.contains(token), "{token} became a label:\n{text}");
        }
        assert!(
            text.contains(r#"route="/v1/me",method="other",status="405"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"route="/v1/me",method="other",status="400"} 2"#),
            "{text}"
        );
        app
    }
);

story!(
    metrics_token_guards_metrics,
    |c: &mut Config| c.metrics_token = Some(SecretString::from(TOKEN)),
    |app: TestApp| async move {
        let get = |auth: Option<String>| {
            let mut req = app.client.get(app.url("/metrics"));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send()
        };
        for auth in [
            None,
            Some("Bearer wrong-token-0123456789abcdef".to_string()),
            Some(format!("Bearer {TOKEN}x")),
            Some(format!("Basic {TOKEN}")),
            Some(TOKEN.to_string()),
        ] {
            let res = get(auth.clone()).await.unwrap();
            assert_eq!(res.status(), 401, "{auth:?}");
            assert_eq!(res.headers()["www-authenticate"], "Bearer");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        }
        let res = get(Some(format!("bearer {TOKEN}"))).await.unwrap();
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        assert!(
            text.contains(r#"route="/metrics",method="GET",status="401"} 5"#),
            "{text}"
        );
        // The rest of the server is unaffected.
        assert_eq!(
            app.client
                .get(app.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        app
    }
);

story!(
    with_metrics_listen_the_main_listener_has_no_metrics,
    |c: &mut Config| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()),
    |app: TestApp| async move {
        let res = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(res.status(), 404);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_alone_and_stops_with_the_server() {
    let db = TestDb::new(Db::Sqlite).await;
    let mut config = test_config(&db.url);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_token = Some(SecretString::from(TOKEN));
    let state = AppState::build(config, Clock::System).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let main = listener.local_addr().unwrap();
    let metrics = server::bind_metrics(&state.config).await.unwrap().unwrap();
    let addr = metrics.local_addr().unwrap();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(state, listener, Some(metrics), async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let res = client
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("# TYPE gatehouse_http_requests counter"));
    let res = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the token applies on metrics_listen too");
    // Only /metrics there; the API is on the main listener, which has no /metrics.
    let res = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = client
        .get(format!("http://{main}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = client
        .get(format!("http://{main}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(client);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the metrics listener outlived the server"
    );
    db.cleanup().await;
}

/// The real binary: `serve` binds `metrics_listen` at start, keeps the token out of the log
/// and closes the address at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_metrics_on_metrics_listen() {
    let db = TestDb::new(Db::Sqlite).await;
    let dir = crate::helpers::tempdir::Dir::new();
    // Port 0: the server binds a free port and logs which one.
    let mut server = crate::process::start_with(
        &db.url,
        &dir,
        &[
            ("GATEHOUSE_METRICS_LISTEN", "127.0.0.1:0"),
            ("GATEHOUSE_METRICS_TOKEN", TOKEN),
        ],
    )
    .await;
    // Bound and logged before /healthz answered, which start_with waited for.
    let addr = server
        .logged_addr("metrics listening")
        .expect("the server logs the metrics address");
    let client = reqwest::Client::new();
    let res = client
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    drop(client);
    let ok = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert!(status.success(), "{status:?}");
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "metrics_listen outlived the server"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("metrics listening"), "{log}");
    assert!(!log.contains(TOKEN), "the metrics token was logged");
    db.cleanup().await;
}
