//! One rule for access tokens on `/v1` and `/auth/v1`: dead from the `exp` second on (by the
//! server's clock), and only the canonical (low-S) form of an ES256 signature is accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse::clock::Clock;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{clocked, parts, refused, TestApp};
use crate::story;

/// `(GET /v1/me as "status code reason", status of GET /auth/v1/user)` for `token`.
async fn both_routes(app: &TestApp, token: &str) -> (String, u16) {
    let v1 = refused(app.me(token).await).await;
    let res = app
        .auth(Method::GET, "/user")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, body) = parts(res).await;
    if status != 200 {
        assert_eq!(body["code"], json!("bad_jwt"), "{body}");
    }
    (v1, status)
}

fn exp_of(token: &str) -> i64 {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["exp"].as_i64().unwrap()
}

story!(
    both_routes_refuse_a_token_from_its_expiry_second_on,
    setup: |db| clocked(db, Clock::System.now_ms(), |_| {}),
    |(app, _clock): (TestApp, Clock)| async move {
        let (_, _, session) = app.new_user().await;
        let token = session["access_token"].as_str().unwrap().to_string();
        let exp_ms = exp_of(&token) * 1000;
        let clock = app.state.edge.clock.clone();
        clock.advance_ms(exp_ms - 1000 - clock.now_ms());
        assert_eq!(
            both_routes(&app, &token).await,
            ("200".into(), 200),
            "its last second"
        );
        clock.advance_ms(1000);
        assert_eq!(clock.now_ms(), exp_ms);
        assert_eq!(
            both_routes(&app, &token).await,
            ("401 unauthorized expired".into(), 403),
            "its expiry second"
        );
        clock.advance_ms(5000);
        assert_eq!(
            both_routes(&app, &token).await,
            ("401 unauthorized expired".into(), 403),
            "later"
        );
        app
    }
);

/// The token in canonical low-S form and its high-S twin `(r, n - s)`.
fn low_and_high(token: &str) -> (String, String) {
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    let low = sig.normalize_s().unwrap_or(sig);
    let (r, s) = low.split_scalars();
    let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    assert!(high.normalize_s().is_some(), "the twin is high-S");
    let enc =
        |s: p256::ecdsa::Signature| format!("{signed}.{}", URL_SAFE_NO_PAD.encode(s.to_bytes()));
    (enc(low), enc(high))
}

story!(
    both_routes_refuse_a_high_s_signature,
    setup: |db| clocked(db, Clock::System.now_ms(), |_| {}),
    |(app, _clock): (TestApp, Clock)| async move {
        let (_, _, session) = app.new_user().await;
        let token = session["access_token"].as_str().unwrap();
        let (low, high) = low_and_high(token);
        assert_eq!(both_routes(&app, &low).await, ("200".into(), 200));
        assert_eq!(
            both_routes(&app, &high).await,
            ("401 unauthorized malformed".into(), 403)
        );
        app
    }
);
