//! Gateway mode (`/api/*` → `proxy_target`): paths stay under the target's base path, and
//! the backend gets the real forwarding chain. A real backend records what reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Db, TestApp};
use crate::story;

/// One request as the backend received it: the raw request target and the headers.
#[derive(Clone, Debug)]
struct Seen {
    target: String,
    headers: axum::http::HeaderMap,
}

/// A backend on 127.0.0.1:0 that records every request and answers 200 `recorded`.
async fn recording_backend() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = seen.clone();
    let app = Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(Seen {
                target: req.uri().to_string(),
                headers: req.headers().clone(),
            });
            "recorded"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// Sends `METHOD target HTTP/1.1` as written (no client-side normalisation of the path)
/// and returns the status and the body.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Chunked answers: the JSON is the one line that starts with `{`.
    let body = body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or(body)
        .to_string();
    (status, body)
}

/// A server whose proxy target is a fresh recording backend with base path `/base`, and an
/// API key of a fresh organization.
async fn proxied(db: Db, trusted: &[&str]) -> (TestApp, String, Arc<Mutex<Vec<Seen>>>) {
    let (backend, seen) = recording_backend().await;
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    let app = TestApp::spawn(db, move |c| {
        c.proxy_target = Some(format!("http://{backend}/base"));
        c.trusted_proxies = trusted;
    })
    .await;
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let (key, _) = app.key(&owner, &org, &["chat:write"]).await;
    (app, key, seen)
}

story!(
    proxied_paths_cannot_leave_the_base_path,
    setup: |db| proxied(db, &[]),
    |(app, key, seen): (TestApp, String, Arc<Mutex<Vec<Seen>>>)| async move {
        let auth = [("x-api-key", key.as_str())];
        // Ordinary paths, dots inside a segment and encoded characters other than
        // separators are forwarded under the base path, as sent.
        for (sent, received) in [
            ("/api/orders/42?x=1", "/base/api/orders/42?x=1"),
            ("/api/a..b/.well/c.", "/base/api/a..b/.well/c."),
            ("/api/%41b/x%20y?q=../..", "/base/api/%41b/x%20y?q=../.."),
        ] {
            let (status, body) = raw_request(app.addr, "GET", sent, &auth).await;
            assert_eq!((status, body.as_str()), (200, "recorded"), "{sent}");
            let last = seen.lock().unwrap().last().unwrap().target.clone();
            assert_eq!(last, received, "{sent}");
        }
        let forwarded = seen.lock().unwrap().len();
        // Dot segments (literal and percent-encoded, any case), encoded slashes and
        // backslashes, and literal backslashes are refused before the backend.
        for sent in [
            "/api/../admin",
            "/api/../../internal",
            "/api/%2e%2e/%2e%2e/internal",
            "/api/%2E%2e/admin",
            "/api/.%2e/admin",
            "/api/orders/..",
            "/api/orders/%2e%2e",
            "/api/./orders",
            "/api/%2e/orders",
            "/api/x/%2e%2e%2f%2e%2e%2fadmin",
            "/api/..%2fadmin",
            "/api/..%2Fadmin",
            "/api/..%5cadmin",
            "/api/..%5Cadmin",
            "/api/..\\admin",
            "/api/x\\..\\..\\admin",
            "/api/a%2fb",
        ] {
            let (status, body) = raw_request(app.addr, "GET", sent, &auth).await;
            assert_eq!(status, 400, "{sent}: {body}");
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert_eq!(body["success"], json!(false), "{sent}: {body}");
            assert_eq!(body["error"]["code"], "invalid_request", "{sent}: {body}");
            // Refused before authentication: no credential needed to learn it is malformed.
            let (status, _) = raw_request(app.addr, "POST", sent, &[]).await;
            assert_eq!(status, 400, "{sent} without a credential");
        }
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            forwarded,
            "a refused path reached the backend: {:?}",
            &seen[forwarded..]
        );
        assert!(seen.iter().all(|s| s.target.starts_with("/base/api/")));
        drop(seen);
        app
    }
);

fn header_values(h: &axum::http::HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

story!(
    an_untrusted_client_cannot_forge_its_forwarding_chain,
    setup: |db| proxied(db, &[]),
    |(app, key, seen): (TestApp, String, Arc<Mutex<Vec<Seen>>>)| async move {
        let (status, _) = raw_request(
            app.addr,
            "GET",
            "/api/who",
            &[
                ("x-api-key", &key),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-for", "198.51.100.1"),
                ("forwarded", "for=203.0.113.9;proto=https"),
                ("x-real-ip", "203.0.113.9"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        let h = seen.lock().unwrap().last().unwrap().headers.clone();
        // Only the address Gatehouse itself saw.
        assert_eq!(header_values(&h, "x-forwarded-for"), ["127.0.0.1"]);
        assert!(h.get("forwarded").is_none(), "{h:?}");
        assert!(h.get("x-real-ip").is_none(), "{h:?}");
        // Without any forwarding header, the backend still learns the client.
        let (status, _) = raw_request(app.addr, "GET", "/api/who", &[("x-api-key", &key)]).await;
        assert_eq!(status, 200);
        let h = seen.lock().unwrap().last().unwrap().headers.clone();
        assert_eq!(header_values(&h, "x-forwarded-for"), ["127.0.0.1"]);
        app
    }
);

story!(
    a_trusted_proxys_chain_is_extended_with_the_peer,
    setup: |db| proxied(db, &["127.0.0.1"]),
    |(app, key, seen): (TestApp, String, Arc<Mutex<Vec<Seen>>>)| async move {
        let (status, _) = raw_request(
            app.addr,
            "GET",
            "/api/who",
            &[
                ("x-api-key", &key),
                ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
                ("x-forwarded-for", "10.0.0.3"),
                ("forwarded", "for=203.0.113.9;proto=https"),
                ("x-real-ip", "203.0.113.9"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        let h = seen.lock().unwrap().last().unwrap().headers.clone();
        assert_eq!(
            header_values(&h, "x-forwarded-for"),
            ["203.0.113.9, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
        );
        assert_eq!(
            header_values(&h, "forwarded"),
            ["for=203.0.113.9;proto=https, for=127.0.0.1"]
        );
        assert_eq!(header_values(&h, "x-real-ip"), ["203.0.113.9"]);
        // A trusted peer that sent no chain: the chain is the peer.
        let (status, _) = raw_request(app.addr, "GET", "/api/who", &[("x-api-key", &key)]).await;
        assert_eq!(status, 200);
        let h = seen.lock().unwrap().last().unwrap().headers.clone();
        assert_eq!(header_values(&h, "x-forwarded-for"), ["127.0.0.1"]);
        assert!(h.get("forwarded").is_none(), "{h:?}");
        app
    }
);
