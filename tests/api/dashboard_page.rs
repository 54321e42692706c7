//! `/dashboard`: the embedded page and its security headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::helpers::{Db, TestApp};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The static page needs no database engine of its own: SQLite is enough.
async fn app() -> TestApp {
    TestApp::spawn(Db::Sqlite, |_| {}).await
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_file_is_served_with_the_security_headers() {
    let app = app().await;
    for (path, content_type, cache) in [
        ("/dashboard", "text/html; charset=utf-8", "no-store"),
        ("/dashboard/", "text/html; charset=utf-8", "no-store"),
        (
            "/dashboard/app.js",
            "text/javascript; charset=utf-8",
            "no-cache",
        ),
        ("/dashboard/app.css", "text/css; charset=utf-8", "no-cache"),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "content-type"), content_type, "{path}");
        assert_eq!(header(&res, "cache-control"), cache, "{path}");
        assert_eq!(header(&res, "content-security-policy"), CSP, "{path}");
        assert_eq!(header(&res, "x-frame-options"), "DENY", "{path}");
        assert_eq!(header(&res, "referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
        assert!(res.headers().contains_key("x-request-id"), "{path}");
        assert!(!res.bytes().await.unwrap().is_empty(), "{path}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_only_its_own_files_and_has_no_inline_code() {
    let app = app().await;
    let html = app
        .client
        .get(app.url("/dashboard"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"<script src="/dashboard/app.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/dashboard/app.css">"#));
    // The CSP would block these anyway; the page must not depend on them.
    assert!(!html.contains("style=\""), "an inline style attribute");
    assert!(!html.contains("<style"), "an inline style sheet");
    for handler in ["onclick=", "onload=", "onsubmit=", "onerror=", "onchange="] {
        assert!(!html.contains(handler), "an inline event handler");
    }
    assert_eq!(
        html.matches("<script").count(),
        1,
        "one external script only"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));
    let js = app
        .client
        .get(app.url("/dashboard/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // No secret is ever put in storage or printed.
    assert!(!js.contains("console."), "the script logs nothing");
    assert!(!js.contains("eval("), "no eval");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_dashboard_path_is_a_404() {
    let app = app().await;
    let res = app
        .client
        .get(app.url("/dashboard/secret.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    app.stop().await;
}
