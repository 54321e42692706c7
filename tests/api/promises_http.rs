//! What the README promises of every answer: `X-Request-Id` kept or replaced, CORS on `/v1`,
//! the dashboard's `Cross-Origin-Opener-Policy`, and the audit log read page by page with
//! `before=`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, Db, TestApp};
use crate::story;

fn is_fresh_request_id(id: &str) -> bool {
    id.len() == 36
        && id.starts_with("req_")
        && id[4..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_request_id_is_kept_when_well_formed_and_replaced_otherwise() {
    let app = TestApp::spawn(Db::Sqlite, |_| {}).await;
    let person = app.person().await;
    let longest = "a".repeat(64);
    let too_long = "a".repeat(65);
    for (sent, kept) in [
        (Some("trace-01_AB"), true),
        (Some(longest.as_str()), true),
        (Some(too_long.as_str()), false),
        (Some("has space"), false),
        (Some("dots.are.not.allowed"), false),
        (Some(""), false),
        (None, false),
    ] {
        // A success and an error on /v1, and a GoTrue answer on /auth/v1.
        let requests = [
            app.v1(Method::GET, "/me", &person.token),
            app.v1(Method::GET, "/me", "not-a-token"),
            app.auth(Method::GET, "/settings"),
        ];
        for (i, req) in requests.into_iter().enumerate() {
            let req = match sent {
                Some(v) => req.header("x-request-id", v),
                None => req,
            };
            let res = req.send().await.unwrap();
            let header = res.headers()["x-request-id"].to_str().unwrap().to_string();
            let (status, body) = parts(res).await;
            if kept {
                assert_eq!(Some(header.as_str()), sent, "request {i}");
            } else {
                assert!(is_fresh_request_id(&header), "{sent:?} → {header}");
            }
            // The envelope repeats the id it answered under.
            if i < 2 {
                assert_eq!(body["meta"]["request_id"], header, "{status} {body}");
            }
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_allows_any_origin_without_credentials_and_the_documented_headers() {
    let app = TestApp::spawn(Db::Sqlite, |_| {}).await;
    let person = app.person().await;
    let origin = "https://app.example.net";

    let res = app
        .client
        .request(Method::OPTIONS, app.url("/v1/me"))
        .header("origin", origin)
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization, x-api-key, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("access-control-allow-credentials").is_none());
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    for m in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["authorization", "x-api-key", "content-type"] {
        assert!(allowed.contains(name), "{allowed}");
    }

    // The answer itself: readable from any origin, with the request id and limits exposed.
    let res = app
        .v1(Method::GET, "/me", &person.token)
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("access-control-allow-credentials").is_none());
    let exposed = h["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["x-request-id", "retry-after", "x-ratelimit-remaining"] {
        assert!(exposed.contains(name), "{exposed}");
    }

    // An error is readable cross-origin too, so a browser client can show it.
    let res = app
        .v1(Method::GET, "/me", "not-a-token")
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let (status, body) = parts(res).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    app.stop().await;
}

/// CORS headers are for browsers, whose cross-origin requests always carry `Origin`: an answer
/// to a request without one goes without them (about 250 bytes on every call of a server or a
/// script), and keeps `Vary`, so no cache hands it to a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_go_only_to_requests_with_an_origin_and_vary_stays() {
    let app = TestApp::spawn(Db::Sqlite, |_| {}).await;
    let person = app.person().await;
    for (path, token) in [("/me", person.token.as_str()), ("/me", "not-a-token")] {
        let res = app.v1(Method::GET, path, token).send().await.unwrap();
        let h = res.headers();
        assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
        assert!(h.get("access-control-expose-headers").is_none(), "{h:?}");
        let vary = h["vary"].to_str().unwrap().to_ascii_lowercase();
        assert!(vary.contains("origin"), "{vary}");
        let res = app
            .v1(Method::GET, path, token)
            .header("origin", "https://app.example.net")
            .send()
            .await
            .unwrap();
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(h["vary"].to_str().unwrap().contains("origin"), "{h:?}");
    }
    // The same on /auth/v1, whose CORS rules differ; routes without CORS get neither.
    let res = app.auth(Method::GET, "/settings").send().await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert!(res.headers()["vary"].to_str().unwrap().contains("origin"));
    let res = app
        .auth(Method::GET, "/settings")
        .header("origin", "https://app.example.net")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "https://app.example.net")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_file_keeps_other_origins_out_of_its_window() {
    let app = TestApp::spawn(Db::Sqlite, |_| {}).await;
    for path in [
        "/dashboard",
        "/dashboard/",
        "/dashboard/app.js",
        "/dashboard/app.css",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(
            res.headers()
                .get("cross-origin-opener-policy")
                .map(|v| v.to_str().unwrap()),
            Some("same-origin"),
            "{path}"
        );
    }
    app.stop().await;
}

story!(
    the_audit_log_is_read_page_by_page_with_before,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Audited").await;
        for i in 0..6 {
            let (status, body) = app
                .call(
                    Method::PATCH,
                    &format!("/orgs/{org}"),
                    &owner.token,
                    Some(json!({ "name": format!("Name {i}") })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let page = |q: String| {
            let app = &app;
            let org = &org;
            let token = owner.token.clone();
            async move {
                let (status, body) = app
                    .call(
                        Method::GET,
                        &format!("/orgs/{org}/audit-log{q}"),
                        &token,
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                body["data"].as_array().unwrap().clone()
            }
        };
        let all = page("?limit=200".into()).await;
        assert!(all.len() >= 7, "creation and six renames: {all:?}");

        // Pages of 2, each starting below the last seq read, until an empty page.
        let mut read: Vec<Value> = Vec::new();
        let mut q = "?limit=2".to_string();
        for round in 0.. {
            assert!(round <= all.len(), "paging does not end: {q}");
            let entries = page(q).await;
            if entries.is_empty() {
                break;
            }
            assert!(entries.len() <= 2);
            let last = entries.last().unwrap()["seq"].as_i64().unwrap();
            read.extend(entries);
            q = format!("?limit=2&before={last}");
        }
        // Every entry once, newest first, exactly as one big page has them.
        assert_eq!(read, all);
        let seqs: Vec<i64> = read.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
        let renames = read
            .iter()
            .filter(|e| e["action"] == "organization.renamed")
            .count();
        assert_eq!(renames, 6);

        // `before` is exclusive: the entry it names is not read again.
        let below = page(format!("?limit=1&before={}", seqs[2])).await;
        assert_eq!(below[0]["seq"].as_i64().unwrap(), seqs[3]);
        // Below the oldest entry, nothing.
        let oldest = *seqs.last().unwrap();
        assert!(page(format!("?before={oldest}")).await.is_empty());
        app
    }
);
