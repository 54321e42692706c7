//! Multi-factor authentication (TOTP) on `/auth/v1/factors`, the `aal` of tokens, and
//! organizations that require it. Codes are computed here from RFC 6238, not by the server's
//! code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::config::SecretString;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{clocked, parts, refused, sql, TestApp};
use crate::story;

pub(crate) const KEY: &str = "a test mfa encryption key of 32+ characters";
/// A manual clock's start: the first second of a TOTP step.
pub(crate) const T0: i64 = 1_800_000_000_000;

pub(crate) fn with_key(c: &mut gatehouse::config::Config) {
    c.mfa_encryption_key = Some(SecretString::from(KEY));
    c.rate_limit_mfa_verify = crate::helpers::generous();
}

/// RFC 4648 base32 (no padding) decoding.
fn base32(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut n, mut out) = (0u64, 0u32, Vec::new());
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// The RFC 6238 code (HMAC-SHA1, six digits, 30 s) of `secret` (base32) at `unix_secs`.
fn code(secret: &str, unix_secs: i64) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&base32(secret)).unwrap();
    mac.update(&((unix_secs / 30) as u64).to_be_bytes());
    let h = mac.finalize().into_bytes();
    let o = (h[19] & 0x0f) as usize;
    let n = u32::from_be_bytes([h[o] & 0x7f, h[o + 1], h[o + 2], h[o + 3]]) % 1_000_000;
    format!("{n:06}")
}

/// The claims of an access token (not verified: the server's own checks are tested elsewhere).
pub(crate) fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    parts(
        app.auth(Method::POST, path)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Enrols a TOTP factor: (factor id, base32 secret).
pub(crate) async fn enroll(app: &TestApp, token: &str, name: &str) -> (String, String) {
    let (status, body) = post(
        app,
        token,
        "/factors",
        json!({"factor_type": "totp", "friendly_name": name}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (
        body["id"].as_str().unwrap().to_string(),
        body["totp"]["secret"].as_str().unwrap().to_string(),
    )
}

async fn challenge(app: &TestApp, token: &str, factor: &str) -> String {
    let (status, body) = post(
        app,
        token,
        &format!("/factors/{factor}/challenge"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn verify(
    app: &TestApp,
    token: &str,
    factor: &str,
    challenge: &str,
    code: &str,
) -> (u16, Value) {
    post(
        app,
        token,
        &format!("/factors/{factor}/verify"),
        json!({"challenge_id": challenge, "code": code}),
    )
    .await
}

async fn user(app: &TestApp, token: &str) -> Value {
    let (status, body) = parts(
        app.auth(Method::GET, "/user")
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A user with a verified factor: (email, password, aal2 session, factor id, secret).
pub(crate) async fn with_factor(
    app: &TestApp,
    now_secs: i64,
) -> (String, String, Value, String, String) {
    let (email, password, session) = app.new_user().await;
    let token = session["access_token"].as_str().unwrap();
    let (factor, secret) = enroll(app, token, "phone").await;
    let c = challenge(app, token, &factor).await;
    let (status, aal2) = verify(app, token, &factor, &c, &code(&secret, now_secs)).await;
    assert_eq!(status, 200, "{aal2}");
    (email, password, aal2, factor, secret)
}

story!(
    a_verified_totp_factor_raises_the_session_to_aal2,
    setup: |db| clocked(db, T0, with_key),
    |(app, _clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (email, password, session) = app.new_user().await;
        let token = session["access_token"].as_str().unwrap();
        assert_eq!(claims(token)["aal"], "aal1");
        let (status, body) = post(
            &app,
            token,
            "/factors",
            json!({"factor_type": "totp", "friendly_name": "phone"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["type"], "totp");
        assert_eq!(body["friendly_name"], "phone");
        let secret = body["totp"]["secret"].as_str().unwrap().to_string();
        assert_eq!(base32(&secret).len(), 20);
        let uri = body["totp"]["uri"].as_str().unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        let qr = body["totp"]["qr_code"].as_str().unwrap();
        assert!(qr.contains("<svg") && qr.contains("</svg>"), "{qr}");
        let factor = body["id"].as_str().unwrap().to_string();
        // Unverified, it is listed but the session stays aal1.
        assert_eq!(user(&app, token).await["factors"][0]["status"], "unverified");

        let c = challenge(&app, token, &factor).await;
        let (status, aal2) = verify(&app, token, &factor, &c, &code(&secret, T0 / 1000)).await;
        assert_eq!(status, 200, "{aal2}");
        let t2 = aal2["access_token"].as_str().unwrap();
        let c2 = claims(t2);
        assert_eq!(c2["aal"], "aal2");
        assert_eq!(c2["amr"][0]["method"], "totp");
        assert_eq!(c2["amr"][1]["method"], "password");
        assert_eq!(c2["session_id"], claims(token)["session_id"]);
        assert_eq!(aal2["user"]["factors"][0]["status"], "verified");
        assert_eq!(aal2["user"]["factors"][0]["id"], json!(factor));

        // The refresh token handed out at aal1 no longer works; the new one keeps aal2.
        let old = session["refresh_token"].as_str().unwrap();
        assert_eq!(refused(app.refresh(old).await).await, "400 refresh_token_not_found");
        let (status, refreshed) = parts(
            app.refresh(aal2["refresh_token"].as_str().unwrap()).await,
        )
        .await;
        assert_eq!(status, 200, "{refreshed}");
        assert_eq!(claims(refreshed["access_token"].as_str().unwrap())["aal"], "aal2");

        // A new password sign-in is aal1 until the factor is verified in it.
        let (status, again) = parts(app.sign_in(&email, &password).await).await;
        assert_eq!(status, 200);
        assert_eq!(claims(again["access_token"].as_str().unwrap())["aal"], "aal1");
        assert_eq!(again["user"]["factors"][0]["status"], "verified");
        app
    }
);

story!(
    a_totp_code_is_refused_when_replayed_within_its_step,
    setup: |db| clocked(db, T0, with_key),
    |(app, clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (email, password, _, factor, secret) = with_factor(&app, T0 / 1000).await;
        let (_, s) = parts(app.sign_in(&email, &password).await).await;
        let token = s["access_token"].as_str().unwrap();
        // The same code, same step, another session and challenge: refused.
        clock.advance_ms(10_000);
        let c = challenge(&app, token, &factor).await;
        let used = code(&secret, T0 / 1000);
        let (status, body) = verify(&app, token, &factor, &c, &used).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("mfa_verification_failed")));
        // The previous step's code is older than the one used: refused too.
        let older = code(&secret, T0 / 1000 - 30);
        let (status, _) = verify(&app, token, &factor, &c, &older).await;
        assert_eq!(status, 422);
        // The next step's code is accepted once.
        clock.advance_ms(30_000);
        let next = code(&secret, T0 / 1000 + 30);
        let (status, body) = verify(&app, token, &factor, &c, &next).await;
        assert_eq!(status, 200, "{body}");
        let c = challenge(&app, token, &factor).await;
        let (status, body) = verify(&app, token, &factor, &c, &next).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("mfa_verification_failed")));
        app
    }
);

story!(
    wrong_codes_are_limited_per_challenge_and_per_factor,
    setup: |db| clocked(db, T0, |c| {
        with_key(c);
        c.rate_limit_mfa_verify = gatehouse::ratelimit::Rates::parse("7/60s").unwrap();
    }),
    |(app, _clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (_, _, session) = app.new_user().await;
        let token = session["access_token"].as_str().unwrap();
        let (factor, secret) = enroll(&app, token, "phone").await;
        let right = code(&secret, T0 / 1000);
        let wrong = if right == "000000" { "111111" } else { "000000" };
        // 1 challenge + 5 wrong codes spend the challenge.
        let c = challenge(&app, token, &factor).await;
        for _ in 0..5 {
            let (status, body) = verify(&app, token, &factor, &c, wrong).await;
            assert_eq!((status, body["code"].as_str()), (422, Some("mfa_verification_failed")));
        }
        let (status, body) = verify(&app, token, &factor, &c, &right).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("mfa_challenge_expired")));
        // 7 calls on this factor in the minute: the next is refused, right code or not.
        let (status, body) =
            post(&app, token, &format!("/factors/{factor}/challenge"), json!({})).await;
        assert_eq!((status, body["code"].as_str()), (429, Some("over_request_rate_limit")));
        app
    }
);

story!(
    an_expired_challenge_is_refused,
    setup: |db| clocked(db, T0, with_key),
    |(app, clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (_, _, session) = app.new_user().await;
        let token = session["access_token"].as_str().unwrap();
        let (factor, secret) = enroll(&app, token, "phone").await;
        let c = challenge(&app, token, &factor).await;
        clock.advance_ms(300_000);
        // A fresh access token: the first one expired meanwhile? No: it lives an hour.
        let now = (T0 + 300_000) / 1000;
        let (status, body) = verify(&app, token, &factor, &c, &code(&secret, now)).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("mfa_challenge_expired")));
        // Unknown challenges and factors.
        let other = uuid::Uuid::new_v4().to_string();
        let (status, body) = verify(&app, token, &factor, &other, "123456").await;
        assert_eq!((status, body["code"].as_str()), (422, Some("mfa_factor_not_found")));
        let (status, body) = post(&app, token, &format!("/factors/{other}/challenge"), json!({})).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("mfa_factor_not_found")));
        app
    }
);

story!(
    totp_secrets_are_sealed_at_rest,
    setup: |db| clocked(db, T0, with_key),
    |(app, _clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (_, _, session) = app.new_user().await;
        let token = session["access_token"].as_str().unwrap();
        let (factor, secret) = enroll(&app, token, "phone").await;
        let pool = sql(&app.db.url).await;
        let (sealed, id): (String, String) =
            sqlx::query_as("SELECT secret_sealed, id FROM mfa_factors WHERE id = $1")
                .bind(&factor)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(id, factor);
        assert!(sealed.starts_with("v1."), "{sealed}");
        assert!(!sealed.contains(&secret));
        // No column of the row holds the secret in any case or encoding we know of.
        let row: (String, String, String) = sqlx::query_as(
            "SELECT COALESCE(friendly_name, ''), status, factor_type FROM mfa_factors WHERE id = $1",
        )
        .bind(&factor)
        .fetch_one(&pool)
        .await
        .unwrap();
        let text = format!("{row:?} {sealed}").to_uppercase();
        assert!(!text.contains(&secret));
        assert!(!text.contains(&hex::encode_upper(base32(&secret))));
        pool.close().await;
        app
    }
);

story!(
    without_an_encryption_key_totp_is_off,
    |app: TestApp| async move {
        let (_, _, session) = app.new_user().await;
        let token = session["access_token"].as_str().unwrap();
        let (status, body) = post(&app, token, "/factors", json!({"factor_type": "totp"})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("mfa_totp_enroll_not_enabled"))
        );
        let (status, body) = post(&app, token, "/factors", json!({"factor_type": "phone"})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("validation_failed"))
        );
        app
    }
);

story!(
    a_verified_factor_is_removed_only_from_an_aal2_session,
    setup: |db| clocked(db, T0, with_key),
    |(app, _clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (email, password, aal2, factor, _) = with_factor(&app, T0 / 1000).await;
        let (_, s) = parts(app.sign_in(&email, &password).await).await;
        let aal1 = s["access_token"].as_str().unwrap();
        let del = |token: &str| {
            app.auth(Method::DELETE, &format!("/factors/{factor}"))
                .bearer_auth(token.to_string())
                .send()
        };
        let (status, body) = parts(del(aal1).await.unwrap()).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("insufficient_aal")));
        // Another factor cannot be added from aal1 either.
        let (status, body) =
            post(&app, aal1, "/factors", json!({"factor_type": "totp", "friendly_name": "2"})).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_aal")));
        let t2 = aal2["access_token"].as_str().unwrap();
        let (status, body) = parts(del(t2).await.unwrap()).await;
        assert_eq!((status, body["id"].as_str()), (200, Some(factor.as_str())));
        assert!(user(&app, t2).await.get("factors").is_none());
        // The session it raised is aal1 again at its next refresh.
        let (_, r) = parts(app.refresh(aal2["refresh_token"].as_str().unwrap()).await).await;
        assert_eq!(claims(r["access_token"].as_str().unwrap())["aal"], "aal1");
        app
    }
);

story!(
    an_org_requiring_mfa_refuses_aal1_people_but_not_api_keys,
    setup: |db| clocked(db, T0, with_key),
    |(app, _clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (email, password, aal2, _, _) = with_factor(&app, T0 / 1000).await;
        let (_, s) = parts(app.sign_in(&email, &password).await).await;
        let owner_aal1 = s["access_token"].as_str().unwrap().to_string();
        let owner_aal2 = aal2["access_token"].as_str().unwrap().to_string();
        let owner = crate::helpers::Person {
            email,
            id: aal2["user"]["id"].as_str().unwrap().to_string(),
            token: owner_aal2.clone(),
        };
        let org = app.org(&owner, "Secure").await;
        let member = app.person().await;
        app.add(&owner, &org, &member, "member").await;
        let (key, _) = app.key(&owner, &org, &["members:read"]).await;
        let path = format!("/orgs/{org}");
        // Turning the requirement on needs aal2 itself.
        let on = Some(json!({"require_mfa": true}));
        let (status, body) = app.call(Method::PATCH, &path, &owner_aal1, on.clone()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("mfa_required")));
        let (status, body) = app.call(Method::PATCH, &path, &owner_aal2, on).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["require_mfa"], true);
        // aal1 people are refused, with the new code; aal2 and API keys are not.
        let members = format!("/orgs/{org}/members");
        for token in [&owner_aal1, &member.token] {
            let (status, body) = app.call(Method::GET, &members, token, None).await;
            assert_eq!((status, body["error"]["code"].as_str()), (403, Some("mfa_required")), "{body}");
        }
        let (status, _) = app.call(Method::GET, &members, &owner_aal2, None).await;
        assert_eq!(status, 200);
        let (status, body) = app.call(Method::GET, &members, &key, None).await;
        assert_eq!(status, 200, "{body}");
        // A non-member still learns nothing about the organization.
        let stranger = app.person().await;
        let (status, body) = app.call(Method::GET, &members, &stranger.token, None).await;
        assert_eq!((status, body["error"]["details"]["reason"].as_str()), (403, Some("not_a_member")));
        // The audit log names the change.
        let (_, log) = app
            .call(Method::GET, &format!("/orgs/{org}/audit-log"), &owner_aal2, None)
            .await;
        assert!(log.to_string().contains("organization.mfa_requirement_changed"), "{log}");
        app
    }
);

story!(
    an_org_requiring_mfa_takes_oauth_clients_only_under_an_aal2_consent,
    setup: |db| clocked(db, T0, with_key),
    |(app, _clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (email, password, aal2, _, _) = with_factor(&app, T0 / 1000).await;
        let (_, s) = parts(app.sign_in(&email, &password).await).await;
        let id = aal2["user"]["id"].as_str().unwrap().to_string();
        let owner = crate::helpers::Person {
            email: email.clone(),
            id: id.clone(),
            token: aal2["access_token"].as_str().unwrap().to_string(),
        };
        let owner_aal1 = crate::helpers::Person {
            email,
            id,
            token: s["access_token"].as_str().unwrap().to_string(),
        };
        let org = app.org(&owner, "Secure").await;
        let member = app.person().await;
        app.add(&owner, &org, &member, "member").await;
        let members = format!("/orgs/{org}/members");
        // The member approved a client after signing in with a password alone (aal1).
        let (aal1_token, _) =
            crate::oauth_principal::access(&app, &member, &org, "members:read").await;
        assert_eq!(claims(&aal1_token)["aal"], "aal1");
        assert!(claims(&aal1_token).get("amr").is_none());
        let (status, body) = app.call(Method::GET, &members, &aal1_token, None).await;
        assert_eq!(status, 200, "{body}");
        // The owner approves another client from an aal2 dashboard session.
        let client = crate::oauth_principal::register(&app, "Strong").await;
        let t = crate::oauth_principal::authorize(&app, &owner, &client, &org, "members:read offline_access", "v1")
            .await;
        let strong = t["access_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&strong)["aal"], "aal2");
        assert_eq!(claims(&strong)["amr"], json!(["mfa"]));
        let on = Some(json!({"require_mfa": true}));
        let (status, body) = app.call(Method::PATCH, &format!("/orgs/{org}"), &owner.token, on).await;
        assert_eq!(status, 200, "{body}");
        // Now the aal1 consent is refused and the aal2 one is not.
        let (status, body) = app.call(Method::GET, &members, &aal1_token, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("mfa_required")), "{body}");
        let (status, body) = app.call(Method::GET, &members, &strong, None).await;
        assert_eq!(status, 200, "{body}");
        // The grants list the level they were given at.
        let (_, grants) = app.call(Method::GET, "/me/oauth/grants", &owner.token, None).await;
        assert_eq!(grants["data"][0]["aal"], "aal2", "{grants}");
        // Approving the same client again with a password alone lowers the grant: the tokens
        // of the aal2 consent stop working in the organization, and the new ones never do.
        let t = crate::oauth_principal::authorize(
            &app, &owner_aal1, &client, &org, "members:read offline_access", "v1",
        )
        .await;
        let weak = t["access_token"].as_str().unwrap().to_string();
        let weak_refresh = t["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&weak)["aal"], "aal1");
        for token in [&weak, &strong] {
            let (status, body) = app.call(Method::GET, &members, token, None).await;
            assert_eq!((status, body["error"]["code"].as_str()), (403, Some("mfa_required")), "{body}");
        }
        // An aal2 approval raises it again, for tokens issued at aal2 only.
        let t = crate::oauth_principal::authorize(&app, &owner, &client, &org, "members:read offline_access", "v1")
            .await;
        let renewed = t["access_token"].as_str().unwrap().to_string();
        let (status, body) = app.call(Method::GET, &members, &renewed, None).await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = app.call(Method::GET, &members, &weak, None).await;
        assert_eq!(status, 403);
        // What the aal1 consent got stays aal1 through refresh, whatever the grant is now.
        let (status, t) = parts(
            app.client
                .post(app.url("/oauth/token"))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", weak_refresh.as_str()),
                    ("client_id", client.as_str()),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{t}");
        let refreshed = t["access_token"].as_str().unwrap();
        assert_eq!(claims(refreshed)["aal"], "aal1");
        let (status, body) = app.call(Method::GET, &members, refreshed, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("mfa_required")), "{body}");
        app
    }
);
