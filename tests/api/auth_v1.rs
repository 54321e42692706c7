//! The Supabase-compatible routes, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, refused, TestApp, PK};
use crate::story;

story!(
    sign_up_returns_a_session_that_reads_the_user,
    |app: TestApp| async move {
        let (email, _, session) = app.new_user().await;
        assert_eq!(session["token_type"], "bearer");
        assert_eq!(session["expires_in"], 3600);
        assert!(session["refresh_token"].as_str().unwrap().len() >= 43);
        let user = &session["user"];
        assert_eq!(user["email"], json!(email));
        assert_eq!(user["aud"], "authenticated");
        assert_eq!(user["identities"][0]["provider"], "email");
        for field in [
            "id",
            "app_metadata",
            "user_metadata",
            "created_at",
            "updated_at",
            "is_anonymous",
            "role",
        ] {
            assert!(!user[field].is_null(), "user.{field} missing");
        }
        let token = session["access_token"].as_str().unwrap();
        let res = app
            .auth(Method::GET, "/user")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], user["id"]);
        app
    }
);

story!(
    a_second_sign_up_with_the_same_email_is_refused,
    |app: TestApp| async move {
        let (email, _, _) = app.new_user().await;
        let (status, body) =
            parts(app.signup(&email.to_uppercase(), "another password").await).await;
        assert_eq!(status, 422);
        assert_eq!(body["code"], "user_already_exists");
        app
    }
);

story!(
    a_short_password_is_a_weak_password,
    |app: TestApp| async move {
        let (status, body) = parts(app.signup("weak@example.com", "abc").await).await;
        assert_eq!(status, 422);
        assert_eq!(body["code"], "weak_password");
        assert_eq!(body["weak_password"]["reasons"], json!(["length"]));
        app
    }
);

story!(
    unknown_email_and_wrong_password_answer_alike,
    |app: TestApp| async move {
        let (email, _, _) = app.new_user().await;
        let (s1, b1) = parts(app.sign_in(&email, "wrong password").await).await;
        let (s2, b2) = parts(app.sign_in("nobody@example.com", "wrong password").await).await;
        assert_eq!((s1, s2), (400, 400));
        assert_eq!(b1, b2);
        assert_eq!(b1["code"], "invalid_credentials");
        app
    }
);

story!(
    errors_use_the_legacy_shape_without_the_api_version_header,
    |app: TestApp| async move {
        let res = app
            .client
            .post(app.url("/auth/v1/token?grant_type=password"))
            .header("apikey", PK)
            .json(&json!({"email": "x@example.com", "password": "nope-nope"}))
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("x-supabase-api-version").is_none());
        let (status, body) = parts(res).await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], 400);
        assert_eq!(body["error_code"], "invalid_credentials");
        assert_eq!(body["msg"], "Invalid login credentials");
        let res = app
            .auth(Method::POST, "/token?grant_type=password")
            .json(&json!({"email": "x@example.com", "password": "nope-nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-supabase-api-version"], "2024-01-01");
        app
    }
);

story!(the_apikey_header_is_required, |app: TestApp| async move {
    let res = app
        .client
        .get(app.url("/auth/v1/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await, "401 no_api_key");
    let res = app
        .client
        .get(app.url("/auth/v1/settings"))
        .header("apikey", "wrong")
        .send()
        .await
        .unwrap();
    let (status, body) = parts(res).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_code"], "invalid_api_key");
    let res = app.auth(Method::GET, "/settings").send().await.unwrap();
    let (status, body) = parts(res).await;
    assert_eq!(status, 200);
    assert_eq!(body["external"]["email"], true);
    // Public keys need no apikey.
    let res = app
        .client
        .get(app.url("/auth/v1/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app
});

story!(
    public_routes_ignore_a_stale_authorization_header,
    |app: TestApp| async move {
        let (email, password, _) = app.new_user().await;
        let res = app
        .auth(Method::POST, "/token?grant_type=password")
        .bearer_auth("stale.or.garbage")
        .json(&json!({"email": email, "password": password, "gotrue_meta_security": {}, "unknown": null}))
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        app
    }
);

story!(
    a_refresh_rotates_and_a_racing_reuse_gets_the_same_successor,
    |app: TestApp| async move {
        let (_, _, session) = app.new_user().await;
        let first = session["refresh_token"].as_str().unwrap().to_string();
        let (status, s2) = parts(app.refresh(&first).await).await;
        assert_eq!(status, 200);
        let second = s2["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(first, second);
        // Within the reuse interval the old token yields the same successor.
        let (status, again) = parts(app.refresh(&first).await).await;
        assert_eq!(status, 200);
        assert_eq!(again["refresh_token"], json!(second));
        app
    }
);

/// `successor` sealed the way older databases hold it: XOR with HMAC-SHA256(parent,
/// label ‖ counter) blocks, no tag.
fn keystream_sealed(parent: &str, successor: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut stream = Vec::new();
    for counter in 0u32.. {
        if stream.len() >= successor.len() {
            break;
        }
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(parent.as_bytes()).unwrap();
        mac.update(b"gatehouse-refresh-successor");
        mac.update(&counter.to_be_bytes());
        stream.extend_from_slice(&mac.finalize().into_bytes());
    }
    let sealed: Vec<u8> = successor.bytes().zip(stream).map(|(a, b)| a ^ b).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
}

story!(
    a_successor_sealed_in_the_keystream_format_is_not_read_and_ends_the_session,
    |app: TestApp| async move {
        // The same value as the fixture of the unit test in src/auth/tokens.rs.
        assert_eq!(
            keystream_sealed(
                "lEgRqaUFMW3xmv0mTN1HsyKkpsGxCkdz_yCbTrFUc8M",
                "Q2xv5JCxkK8-9FYaNvR5wOLQ-cBvq8TWVzV8Mm9y3kE"
            ),
            "QQyo0Euhw9MNC7V60hMoFeexfxPSeUkBf6C-wEBKvtcEu6oEWJ5MlSclMQ"
        );
        let (_, _, session) = app.new_user().await;
        let first = session["refresh_token"].as_str().unwrap().to_string();
        let (status, s2) = parts(app.refresh(&first).await).await;
        assert_eq!(status, 200);
        let second = s2["refresh_token"].as_str().unwrap().to_string();
        sqlx::any::install_default_drivers();
        let db = sqlx::AnyPool::connect(&app.db.url).await.unwrap();
        let updated =
            sqlx::query("UPDATE refresh_tokens SET successor_sealed = $1 WHERE token_hash = $2")
                .bind(keystream_sealed(&first, &second))
                .bind(gatehouse::auth::tokens::sha256_hex(&first))
                .execute(&db)
                .await
                .unwrap();
        assert_eq!(updated.rows_affected(), 1);
        db.close().await;
        // Within the reuse interval, yet answered as a reuse after it.
        let (status, body) = parts(app.refresh(&first).await).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("refresh_token_already_used"))
        );
        let (status, body) = parts(app.refresh(&second).await).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("refresh_token_not_found"))
        );
        app
    }
);

// The reuse test drives time by hand.
mod manual_clock {
    pub fn clock() -> gatehouse::clock::Clock {
        gatehouse::clock::Clock::manual(gatehouse::clock::Clock::System.now_ms())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_after_the_interval_revokes_the_session() {
    let app =
        TestApp::spawn_with_clock(crate::helpers::Db::Sqlite, manual_clock::clock(), |_| {}).await;
    let (_, _, session) = app.new_user().await;
    let first = session["refresh_token"].as_str().unwrap().to_string();
    let (_, s2) = parts(app.refresh(&first).await).await;
    let second = s2["refresh_token"].as_str().unwrap().to_string();
    app.state.edge.clock.advance_ms(9_000);
    assert_eq!(app.refresh(&first).await.status(), 200, "still within 10 s");
    app.state.edge.clock.advance_ms(2_000);
    let (status, body) = parts(app.refresh(&first).await).await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("refresh_token_already_used"))
    );
    // The whole session is revoked: its newest token is gone too.
    let (status, body) = parts(app.refresh(&second).await).await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("refresh_token_not_found"))
    );
    app.stop().await;
}

story!(
    concurrent_refreshes_get_the_same_successor,
    |app: TestApp| async move {
        let (_, _, session) = app.new_user().await;
        let token = session["refresh_token"].as_str().unwrap().to_string();
        let racing: Vec<_> = (0..4)
            .map(|_| {
                let req = app
                    .auth(Method::POST, "/token?grant_type=refresh_token")
                    .json(&json!({"refresh_token": token}));
                tokio::spawn(req.send())
            })
            .collect();
        let mut successors = Vec::new();
        for task in racing {
            let (status, body) = parts(task.await.unwrap().unwrap()).await;
            assert_eq!(status, 200, "{body}");
            successors.push(body["refresh_token"].as_str().unwrap().to_string());
        }
        successors.dedup();
        assert_eq!(
            successors.len(),
            1,
            "all racing refreshes share one successor"
        );
        app
    }
);

story!(
    sign_out_scopes_end_the_right_sessions,
    |app: TestApp| async move {
        let (email, password, a) = app.new_user().await;
        let (_, b) = parts(app.sign_in(&email, &password).await).await;
        let (_, c) = parts(app.sign_in(&email, &password).await).await;
        let tok = |s: &Value, k: &str| s[k].as_str().unwrap().to_string();
        // others: b stays, a and c end.
        let res = app
            .auth(Method::POST, "/logout?scope=others")
            .bearer_auth(tok(&b, "access_token"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(
            refused(app.refresh(&tok(&a, "refresh_token")).await).await,
            "400 refresh_token_not_found"
        );
        assert_eq!(
            refused(app.refresh(&tok(&c, "refresh_token")).await).await,
            "400 refresh_token_not_found"
        );
        let (status, b2) = parts(app.refresh(&tok(&b, "refresh_token")).await).await;
        assert_eq!(status, 200);
        // local: the current session ends; the access token no longer reads the user.
        let (_, d) = parts(app.sign_in(&email, &password).await).await;
        let res = app
            .auth(Method::POST, "/logout?scope=local")
            .bearer_auth(tok(&b2, "access_token"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let (status, body) = parts(
            app.auth(Method::GET, "/user")
                .bearer_auth(tok(&b2, "access_token"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["code"].clone()),
            (403, json!("session_not_found"))
        );
        assert_eq!(
            refused(app.me(&tok(&b2, "access_token")).await).await,
            "401 unauthorized revoked"
        );
        assert_eq!(app.refresh(&tok(&d, "refresh_token")).await.status(), 200);
        // global: everything ends.
        let (_, e) = parts(app.sign_in(&email, &password).await).await;
        let res = app
            .auth(Method::POST, "/logout?scope=global")
            .bearer_auth(tok(&e, "access_token"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(
            refused(app.refresh(&tok(&e, "refresh_token")).await).await,
            "400 refresh_token_not_found"
        );
        app
    }
);

story!(
    update_user_changes_password_and_metadata,
    |app: TestApp| async move {
        let (email, password, s) = app.new_user().await;
        let token = s["access_token"].as_str().unwrap();
        let (status, body) = parts(
            app.auth(Method::PUT, "/user")
                .bearer_auth(token)
                .json(&json!({"password": password}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["code"].clone()),
            (422, json!("same_password"))
        );
        let (status, _) = parts(
            app.auth(Method::PUT, "/user")
                .bearer_auth(token)
                .json(&json!({"password": "a brand new one"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            refused(app.sign_in(&email, &password).await).await,
            "400 invalid_credentials"
        );
        assert_eq!(app.sign_in(&email, "a brand new one").await.status(), 200);
        let (status, body) = parts(
            app.auth(Method::PUT, "/user")
                .bearer_auth(token)
                .json(&json!({"data": {"plan": "pro"}}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["user_metadata"]["plan"], "pro");
        app
    }
);

story!(
    access_tokens_verify_against_the_jwks_with_supabase_claims,
    |app: TestApp| async move {
        let (email, _, s) = app.new_user().await;
        let token = s["access_token"].as_str().unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = app
            .client
            .get(app.url("/auth/v1/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("kid in JWKS");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&["authenticated"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &v)
            .unwrap()
            .claims;
        assert_eq!(claims["iss"], json!(format!("{}/auth/v1", app.base)));
        assert_eq!(claims["sub"], s["user"]["id"]);
        assert_eq!(claims["email"], json!(email));
        assert_eq!(claims["role"], "authenticated");
        assert_eq!(claims["aal"], "aal1");
        assert_eq!(claims["amr"][0]["method"], "password");
        assert_eq!(claims["is_anonymous"], false);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
        for k in ["session_id", "app_metadata", "user_metadata", "phone"] {
            assert!(!claims[k].is_null(), "claim {k}");
        }
        app
    }
);

story!(
    a_rotated_signing_key_keeps_old_tokens_valid,
    |app: TestApp| async move {
        let (_, _, s) = app.new_user().await;
        let old = s["access_token"].as_str().unwrap().to_string();
        let now = app.state.edge.clock.now_ms();
        app.state
            .runtime
            .store
            .add_jwt_key(&gatehouse::auth::jwt::generate_key(now + 1).unwrap())
            .await
            .unwrap();
        let keys = app
            .state
            .runtime
            .store
            .jwt_keys(now + 1, 3_600_000)
            .await
            .unwrap();
        app.state.accounts.jwt.reload(&keys).unwrap();
        let jwks: Value = app
            .client
            .get(app.url("/auth/v1/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert_eq!(app.me(&old).await.status(), 200);
        let (_, s2) = parts(app.refresh(s["refresh_token"].as_str().unwrap()).await).await;
        let new_kid = jsonwebtoken::decode_header(s2["access_token"].as_str().unwrap())
            .unwrap()
            .kid;
        assert_ne!(new_kid, jsonwebtoken::decode_header(&old).unwrap().kid);
        app
    }
);

story!(
    sign_in_waits_for_confirmation_when_autoconfirm_is_off,
    |c: &mut gatehouse::config::Config| {
        c.autoconfirm = false;
        // The repeated sign-up below resends the confirmation mail at once.
        c.mail_min_interval_seconds = 0;
    },
    |app: TestApp| async move {
        let (status, body) = parts(app.signup("pending@example.com", "long enough pw").await).await;
        assert_eq!(status, 200);
        assert!(
            body["access_token"].is_null(),
            "no session before confirmation"
        );
        assert_eq!(body["email"], "pending@example.com");
        let (status, body) =
            parts(app.sign_in("pending@example.com", "long enough pw").await).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("email_not_confirmed"))
        );
        // A repeated sign-up does not reveal that the address is taken.
        let (status, body) = parts(app.signup("pending@example.com", "long enough pw").await).await;
        assert_eq!(status, 200);
        assert_eq!(body["identities"][0]["provider"], "email", "{body}");
        app
    }
);

story!(
    per_ip_limits_answer_over_request_rate_limit,
    |c: &mut gatehouse::config::Config| {
        c.rate_limit_sign_up =
            gatehouse::ratelimit::Rates::one(gatehouse::ratelimit::Rate::new(2, 60));
    },
    |app: TestApp| async move {
        assert_eq!(
            app.signup("l1@example.com", "long enough pw")
                .await
                .status(),
            200
        );
        let res = app.signup("l2@example.com", "long enough pw").await;
        assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
        let res = app.signup("l3@example.com", "long enough pw").await;
        assert_eq!(res.status(), 429);
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry), "retry-after {retry}");
        let (_, body) = parts(res).await;
        assert_eq!(body["code"], "over_request_rate_limit");
        app
    }
);

story!(
    hs256_mode_signs_with_the_shared_secret,
    |c: &mut gatehouse::config::Config| {
        c.jwt_secret = Some(gatehouse::config::SecretString::from(
            "0123456789abcdef0123456789abcdef-shared",
        ));
    },
    |app: TestApp| async move {
        let (_, _, s) = app.new_user().await;
        let token = s["access_token"].as_str().unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&["authenticated"]);
        let key =
            jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef-shared");
        assert!(jsonwebtoken::decode::<Value>(token, &key, &v).is_ok());
        assert_eq!(app.me(token).await.status(), 200);
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_access_token_still_expires_on_time() {
    let app =
        TestApp::spawn_with_clock(crate::helpers::Db::Sqlite, manual_clock::clock(), |_| {}).await;
    let (_, _, session) = app.new_user().await;
    let token = session["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.me(&token).await.status(), 200);
    assert_eq!(
        app.me(&token).await.status(),
        200,
        "served from the verified-token cache"
    );
    app.state.edge.clock.advance_ms(3_600_000);
    let (status, body) = parts(app.me(&token).await).await;
    assert_eq!(
        (status, body["error"]["details"]["reason"].clone()),
        (401, json!("expired"))
    );
    app.stop().await;
}
