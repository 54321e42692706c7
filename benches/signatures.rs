//! Cost of the signatures on Gatehouse's request paths, each beside the least such a check
//! costs (a bare HMAC-SHA256 of the same bytes with the `hmac` crate, or a constant-time
//! compare), so the ratio shows what the code around the cryptography adds:
//!
//! - `jwt`: signing and verifying an access token through [`JwtKeys`], ES256 (the default,
//!   a stored P-256 key) and HS256 (`jwt_secret` set), with Supabase-shaped claims;
//! - `widget_signature`: [`widget::verify_request`] on a signed chat call (parse the headers,
//!   HMAC, constant-time compare, freshness), and [`widget::sign_request`];
//! - `webhook_signing`: [`signing::sign`] of a 1 KiB event body (base64 secret decoding,
//!   HMAC, base64 of the MAC).
//!
//! `cargo bench --bench signatures`; `cargo bench --bench signatures -- jwt` for one group.
//! API-key parsing, its checksum and hash are in `benches/verify.rs`, rate-limit decisions in
//! `benches/ratelimit.rs`. See bench/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::auth::jwt::{generate_key, Amr, Claims, JwtKeys};
use gatehouse::auth::tokens::ct_eq;
use gatehouse::auth::widget;
use gatehouse::webhooks::signing;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const ISSUER: &str = "http://127.0.0.1:8080/auth/v1";
const HS_SECRET: &str = "bench-hs256-secret-of-at-least-32-characters";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> Claims {
    let now = now_secs();
    Claims {
        iss: ISSUER.into(),
        sub: uuid::Uuid::new_v4().to_string(),
        aud: "authenticated".into(),
        exp: now + 3600,
        iat: now,
        email: "bench@example.com".into(),
        phone: String::new(),
        role: "authenticated".into(),
        aal: "aal1".into(),
        amr: vec![Amr {
            method: "password".into(),
            timestamp: now,
        }],
        session_id: uuid::Uuid::new_v4().to_string(),
        is_anonymous: false,
        app_metadata: serde_json::json!({ "provider": "email", "providers": ["email"] }),
        user_metadata: serde_json::json!({}),
    }
}

/// A bare HMAC-SHA256 of `parts` under `key`: the floor of every signature here.
fn bare_hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn jwt(c: &mut Criterion) {
    let stored = generate_key(now_secs() * 1000).unwrap();
    let es = JwtKeys::new(std::slice::from_ref(&stored), None, ISSUER.into()).unwrap();
    let hs = JwtKeys::new(&[stored], Some(HS_SECRET), ISSUER.into()).unwrap();
    let claims = claims();
    let now = claims.iat;
    let es_token = es.sign(&claims).unwrap();
    let hs_token = hs.sign(&claims).unwrap();
    assert!(es_token.starts_with("eyJ") && es.verify(&es_token, now).is_ok());
    assert!(hs.verify(&hs_token, now).is_ok());
    let (hs_signed, _) = hs_token.rsplit_once('.').unwrap();

    let mut g = c.benchmark_group("jwt");
    g.bench_function(
        "baseline: HMAC-SHA256 of an HS256 token's signed part",
        |b| b.iter(|| bare_hmac(HS_SECRET.as_bytes(), &[black_box(hs_signed.as_bytes())])),
    );
    g.bench_function("HS256 sign", |b| {
        b.iter(|| hs.sign(black_box(&claims)).unwrap())
    });
    g.bench_function("HS256 verify", |b| {
        b.iter(|| hs.verify(black_box(&hs_token), now).unwrap())
    });
    g.bench_function("ES256 sign", |b| {
        b.iter(|| es.sign(black_box(&claims)).unwrap())
    });
    g.bench_function("ES256 verify", |b| {
        b.iter(|| es.verify(black_box(&es_token), now).unwrap())
    });
    g.finish();
}

fn widget_signature(c: &mut Criterion) {
    // A session's signing secret has this shape (`gss_` + base64url of 32 bytes).
    let secret = format!("gss_{}", "A".repeat(43));
    let ts = now_secs().to_string();
    let nonce = "bench0123456789abcdef";
    let path = "/v1/widgets/wgt_0123456789abcdef0123456789abcdef/chat";
    let body = br#"{"message":"Hello from the bench"}"#;
    let sig = widget::sign_request(&secret, &ts, nonce, "POST", path, body);
    let now = now_secs();
    assert!(widget::verify_request(&secret, &ts, nonce, &sig, "POST", path, body, now).is_ok());
    let head = format!("{ts}.{nonce}.POST.{path}.");

    let mut g = c.benchmark_group("widget_signature");
    g.bench_function("baseline: HMAC-SHA256 of the signed string", |b| {
        b.iter(|| bare_hmac(secret.as_bytes(), &[black_box(head.as_bytes()), body]))
    });
    g.bench_function("baseline: constant-time compare of the header", |b| {
        b.iter(|| ct_eq(black_box(&sig), black_box(&sig)))
    });
    g.bench_function("verify_request", |b| {
        b.iter(|| {
            widget::verify_request(
                black_box(&secret),
                black_box(&ts),
                black_box(nonce),
                black_box(&sig),
                "POST",
                black_box(path),
                black_box(body),
                now,
            )
            .unwrap()
        })
    });
    g.bench_function("sign_request", |b| {
        b.iter(|| widget::sign_request(black_box(&secret), &ts, nonce, "POST", path, body))
    });
    g.finish();
}

fn webhook_signing(c: &mut Criterion) {
    let secret = signing::new_secret();
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix(signing::SECRET_PREFIX).unwrap())
            .unwrap()
    };
    let msg_id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    let ts = now_secs();
    // A 1 KiB event body.
    let body = format!(
        r#"{{"type":"api_key.created","timestamp":"2026-11-23T00:00:00Z","data":{{"id":"key_0","pad":"{}"}}}}"#,
        "x".repeat(940)
    );
    let body = body.as_bytes();
    let ts_s = ts.to_string();

    let mut g = c.benchmark_group("webhook_signing");
    g.bench_function("baseline: HMAC-SHA256 of id.timestamp.body (1 KiB)", |b| {
        b.iter(|| {
            bare_hmac(
                &key,
                &[
                    msg_id.as_bytes(),
                    b".",
                    ts_s.as_bytes(),
                    b".",
                    black_box(body),
                ],
            )
        })
    });
    g.bench_function("sign (1 KiB body)", |b| {
        b.iter(|| signing::sign(black_box(&secret), msg_id, ts, black_box(body)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, jwt, widget_signature, webhook_signing);
criterion_main!(benches);
