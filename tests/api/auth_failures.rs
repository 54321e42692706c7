//! The failure budget (`rate_limit_auth_failures`): failed credential checks counted per
//! client IP, refused with 429 before any storage read once over budget; the peek it is
//! built on, on Redis; and the key caches under a flood of unknown keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::auth::api_key::{generate, Environment};
use gatehouse::clock::Clock;
use gatehouse::config::{Config, SecretString};
use gatehouse::ratelimit::{Rate, Rates, RedisLimiter, RedisLink, Request, Window};
use gatehouse::store::Audit;
use reqwest::{Method, Response};
use serde_json::json;

use crate::helpers::{clocked, parts, redis_prefix, redis_url, refused, Db, TestApp};
use crate::story;

const T0: i64 = 1_800_000_000_000;
/// The flooding client and a bystander, both behind the trusted proxy (the test client).
const FLOODER: &str = "203.0.113.9";
const BYSTANDER: &str = "198.51.100.7";

fn budget(c: &mut Config, rates: &str) {
    c.rate_limit_auth_failures = Rates::parse(rates).unwrap();
    c.trusted_proxies = vec!["127.0.0.0/8".into()];
}

/// A key with a valid checksum that no one minted.
fn unknown_key() -> String {
    generate("gk", Environment::Live)
}

async fn me_from(app: &TestApp, ip: &str, key: &str) -> Response {
    app.client
        .get(app.url("/v1/me"))
        .header("x-forwarded-for", ip)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

fn header(res: &Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn metrics(app: &TestApp) -> String {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    res.text().await.unwrap()
}

/// Asserts a 429 of the failure budget in the envelope, with its headers.
async fn assert_over_budget(res: Response, limit: u32, retry_after: u64) {
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after"), retry_after.to_string());
    assert_eq!(header(&res, "x-ratelimit-limit"), limit.to_string());
    assert_eq!(header(&res, "x-ratelimit-remaining"), "0");
    assert_eq!(
        header(&res, "ratelimit-policy"),
        format!("\"auth_failures_60s\";q={limit};w=60")
    );
    let (_, body) = parts(res).await;
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(
        body["error"]["details"],
        json!({"retry_after": retry_after, "limit": limit, "window": 60})
    );
}

story!(
    unknown_keys_past_the_budget_are_refused_before_they_are_looked_up,
    |c: &mut Config| budget(c, "3/60s"),
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (key, _) = app.key(&owner, &org, &[]).await;
        for _ in 0..3 {
            let (status, body) = parts(me_from(&app, FLOODER, &unknown_key()).await).await;
            assert_eq!(status, 401);
            assert_eq!(body["error"]["details"]["reason"], "not_found");
        }
        // Over budget: refused without the key being looked up (no fourth not_found).
        assert_over_budget(me_from(&app, FLOODER, &unknown_key()).await, 3, 20).await;
        let text = metrics(&app).await;
        assert!(
            text.contains(r#"gatehouse_auth_failures_total{reason="not_found"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gatehouse_ratelimit_decisions_total{policy="auth_failures",outcome="denied"} 1"#
            ),
            "{text}"
        );
        // A valid key from the flooded address is refused too, while over budget: the check
        // comes before the key is looked at.
        assert_over_budget(me_from(&app, FLOODER, &key).await, 3, 20).await;
        // Another address behind the same proxy is unaffected, for unknown and valid keys.
        assert_eq!(
            refused(me_from(&app, BYSTANDER, &unknown_key()).await).await,
            "401 unauthorized not_found"
        );
        assert_eq!(me_from(&app, BYSTANDER, &key).await.status(), 200);
        // So is a credential-less request (a missing credential is no failure), and a key
        // refused by its checksum never counted.
        let (status, body) = parts(
            app.client
                .get(app.url("/v1/me"))
                .header("x-forwarded-for", BYSTANDER)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["error"]["details"]["reason"].clone()),
            (401, json!("missing"))
        );
        // A different last character: the key itself may end in `x`.
        let last = if key.ends_with('x') { 'y' } else { 'x' };
        let typo = format!("{}{last}", &key[..key.len() - 1]);
        for _ in 0..5 {
            assert_eq!(
                refused(me_from(&app, BYSTANDER, &typo).await).await,
                "401 unauthorized malformed"
            );
        }
        assert_eq!(me_from(&app, BYSTANDER, &key).await.status(), 200);
        app
    }
);

story!(
    forged_tokens_cookies_and_widget_credentials_spend_the_budget,
    |c: &mut Config| budget(c, "4/60s"),
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (status, w) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets"),
                &owner.token,
                Some(json!({"name": "Help", "allowed_origins": ["https://shop.example.com"]})),
            )
            .await;
        assert_eq!(status, 201, "{w}");
        let widget = w["data"]["id"].as_str().unwrap().to_string();
        // A JWT whose signature does not verify.
        let mut forged = owner.token.clone();
        forged.pop();
        forged.push(if owner.token.ends_with('A') { 'B' } else { 'A' });
        let from_flooder = |req: reqwest::RequestBuilder| req.header("x-forwarded-for", FLOODER);
        let res = from_flooder(app.client.get(app.url("/v1/me")).bearer_auth(&forged))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(res).await, "401 unauthorized malformed");
        // A dashboard cookie that is no session.
        let res = from_flooder(
            app.client
                .get(app.url("/v1/me"))
                .header("cookie", "gatehouse_session=not-a-session"),
        )
        .send()
        .await
        .unwrap();
        // Unknown and ended cookie sessions are answered alike.
        assert_eq!(refused(res).await, "401 unauthorized expired");
        // A widget token that is not one, and a signed call with a forged session token.
        let open = || {
            from_flooder(
                app.client
                    .post(app.url(&format!("/v1/widgets/{widget}/session")))
                    .header("origin", "https://shop.example.com")
                    .json(&json!({"token": "bm90LWEtdG9rZW4"})),
            )
        };
        let (status, body) = parts(open().send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["details"]["reason"].clone()),
            (401, json!("bad_token"))
        );
        let res = from_flooder(
            app.client
                .post(app.url(&format!("/v1/widgets/{widget}/chat")))
                .header("origin", "https://shop.example.com")
                .bearer_auth("forged.session.token")
                .json(&json!({"message": "hi"})),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(refused(res).await, "401 unauthorized bad_session");
        // Four failures: every credential from this address is refused now, the real
        // access token too, and the widget routes answer in the envelope with the headers.
        let res = from_flooder(app.client.get(app.url("/v1/me")).bearer_auth(&owner.token))
            .send()
            .await
            .unwrap();
        assert_over_budget(res, 4, 15).await;
        assert_over_budget(open().send().await.unwrap(), 4, 15).await;
        // The person's own address is fine.
        let (status, _) = app.call(Method::GET, "/me", &owner.token, None).await;
        assert_eq!(status, 200);
        app
    }
);

story!(
    wrong_passwords_spend_the_budget_on_both_sign_in_routes,
    |c: &mut Config| budget(c, "2/60s"),
    |app: TestApp| async move {
        let (email, password, _) = app.new_user().await;
        let gotrue = |password: &str| {
            app.auth(Method::POST, "/token?grant_type=password")
                .header("x-forwarded-for", FLOODER)
                .json(&json!({"email": email, "password": password}))
        };
        let session = |password: &str| {
            app.client
                .post(app.url("/v1/session"))
                .header("x-forwarded-for", FLOODER)
                .json(&json!({"email": email, "password": password}))
        };
        let (status, body) = parts(gotrue("wrong password").send().await.unwrap()).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("invalid_credentials"))
        );
        assert_eq!(
            refused(session("wrong password").send().await.unwrap()).await,
            "401 unauthorized invalid_credentials"
        );
        // Over budget: the right password is refused too, in each route's own format.
        let res = gotrue(&password).send().await.unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(header(&res, "retry-after"), "30");
        let (_, body) = parts(res).await;
        assert_eq!(body["code"], "over_request_rate_limit", "{body}");
        assert_over_budget(session(&password).send().await.unwrap(), 2, 30).await;
        // Elsewhere the password works.
        assert_eq!(app.sign_in(&email, &password).await.status(), 200);
        app
    }
);

story!(
    keys_verified_for_others_do_not_spend_the_callers_budget,
    |c: &mut Config| budget(c, "2/60s"),
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (root, _) = app.key(&owner, &org, &["keys:verify"]).await;
        // A service verifying its users' keys answers for them; their unknown keys are no
        // failure of the service's own credential.
        for _ in 0..5 {
            let res = app
                .client
                .post(app.url("/v1/keys/verify"))
                .header("x-forwarded-for", FLOODER)
                .header("x-api-key", &root)
                .json(&json!({"key": unknown_key()}))
                .send()
                .await
                .unwrap();
            let (status, body) = parts(res).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"]["reason"], "not_found");
        }
        // The presented root key counts like any other credential.
        for _ in 0..2 {
            assert_eq!(
                refused(me_from(&app, FLOODER, &unknown_key()).await).await,
                "401 unauthorized not_found"
            );
        }
        let res = app
            .client
            .post(app.url("/v1/keys/verify"))
            .header("x-forwarded-for", FLOODER)
            .header("x-api-key", &root)
            .json(&json!({"key": unknown_key()}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(res).await, "429 rate_limited");
        app
    }
);

/// Successes spend nothing, and the budget refills with time, one failure per
/// `window / limit`.
async fn successes_are_free_and_the_budget_refills(app: TestApp, clock: Clock) -> TestApp {
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let (key, _) = app.key(&owner, &org, &[]).await;
    for _ in 0..10 {
        assert_eq!(me_from(&app, FLOODER, &key).await.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(
            refused(me_from(&app, FLOODER, &unknown_key()).await).await,
            "401 unauthorized not_found"
        );
    }
    assert_over_budget(me_from(&app, FLOODER, &key).await, 3, 20).await;
    // A refusal spends nothing: one failure is back after 20 s, not later.
    clock.advance_ms(19_000);
    assert_eq!(
        refused(me_from(&app, FLOODER, &key).await).await,
        "429 rate_limited"
    );
    clock.advance_ms(1_000);
    assert_eq!(me_from(&app, FLOODER, &key).await.status(), 200);
    assert_eq!(
        refused(me_from(&app, FLOODER, &unknown_key()).await).await,
        "401 unauthorized not_found"
    );
    assert_eq!(
        refused(me_from(&app, FLOODER, &key).await).await,
        "429 rate_limited"
    );
    // A full window later the whole budget is back.
    clock.advance_ms(60_000);
    for _ in 0..3 {
        assert_eq!(
            refused(me_from(&app, FLOODER, &unknown_key()).await).await,
            "401 unauthorized not_found"
        );
    }
    assert_eq!(
        refused(me_from(&app, FLOODER, &unknown_key()).await).await,
        "429 rate_limited"
    );
    app
}

story!(
    successes_spend_nothing_and_the_budget_refills_after_its_window,
    setup: |db| clocked(db, T0, |c| budget(c, "3/60s")),
    |(app, clock): (TestApp, Clock)| successes_are_free_and_the_budget_refills(app, clock)
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_shared_on_redis() {
    let url = redis_url();
    let clock = Clock::manual(T0);
    let prefix = redis_prefix();
    let app = TestApp::spawn_with_clock(Db::Sqlite, clock.clone(), move |c| {
        budget(c, "3/60s");
        c.redis_url = Some(SecretString::from(url));
        c.redis_prefix = prefix;
    })
    .await;
    assert_eq!(app.state.limits.limiter().backend_name(), "redis");
    let app = successes_are_free_and_the_budget_refills(app, clock).await;
    assert_eq!(
        refused(me_from(&app, BYSTANDER, &unknown_key()).await).await,
        "401 unauthorized not_found"
    );
    let text = metrics(&app).await;
    assert!(
        text.contains("gatehouse_ratelimit_redis_fallbacks_total 0"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_peek_on_redis_tells_the_decision_and_spends_nothing() {
    let url = redis_url();
    let link = RedisLink::open_url(&url, &redis_prefix(), std::time::Duration::from_secs(2))
        .await
        .unwrap();
    let redis = RedisLimiter::new(link);
    let req = Request {
        tag: "ip:192.0.2.1".into(),
        windows: vec![
            Window {
                policy: "failures",
                subject: "192.0.2.1".into(),
                rate: Rate::new(3, 60),
                cost: 1,
            },
            Window {
                policy: "failures",
                subject: "192.0.2.1".into(),
                rate: Rate::new(5, 3600),
                cost: 1,
            },
        ],
        fail_closed: false,
    };
    for _ in 0..10 {
        let d = redis.peek(&req, Some(T0)).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.windows[0].remaining, 2, "as a check would leave it");
    }
    for _ in 0..3 {
        assert!(redis.check(&req, Some(T0)).await.unwrap().allowed);
    }
    let peeked = redis.peek(&req, Some(T0)).await.unwrap();
    assert!(!peeked.allowed);
    assert_eq!(peeked, redis.check(&req, Some(T0)).await.unwrap());
    assert_eq!(peeked.retry_after(), 20);
    assert!(!redis.peek(&req, Some(T0 + 19_999)).await.unwrap().allowed);
    assert!(redis.peek(&req, Some(T0 + 20_000)).await.unwrap().allowed);
    // The peek at 20 s did not take the slot it saw.
    assert!(redis.check(&req, Some(T0 + 20_000)).await.unwrap().allowed);
    assert!(!redis.peek(&req, Some(T0 + 20_000)).await.unwrap().allowed);
}

story!(
    a_flood_of_unknown_keys_evicts_no_verified_key,
    |c: &mut Config| c.key_cache_capacity = 1000,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (key, id) = app.key(&owner, &org, &[]).await;
        assert!(app.state.keys.check(&key).await.is_ok());
        // Revoked in storage behind the cache's back: from now on, only an eviction would
        // make the key read as revoked before its cache time is up.
        let audit = Audit {
            actor: "cli".into(),
            ip: None,
            now: T0,
        };
        app.state
            .runtime
            .store
            .revoke_api_key(&org, &id, &audit)
            .await
            .unwrap();
        for _ in 0..3000 {
            assert!(app.state.keys.check(&unknown_key()).await.is_err());
        }
        assert!(
            app.state.keys.check(&key).await.is_ok(),
            "the verified key was evicted by unknown ones"
        );
        app
    }
);

story!(
    unknown_refresh_tokens_and_bad_tokens_on_auth_routes_spend_the_budget,
    |c: &mut Config| budget(c, "3/60s"),
    |app: TestApp| async move {
        let (_, _, session) = app.new_user().await;
        let refresh = session["refresh_token"].as_str().unwrap().to_string();
        let access = session["access_token"].as_str().unwrap().to_string();
        let grant = |token: &str| {
            app.auth(Method::POST, "/token?grant_type=refresh_token")
                .header("x-forwarded-for", FLOODER)
                .json(&json!({"refresh_token": token}))
        };
        let user = |token: &str| {
            app.auth(Method::GET, "/user")
                .header("x-forwarded-for", FLOODER)
                .bearer_auth(token)
        };
        // A valid token spends nothing.
        assert_eq!(user(&access).send().await.unwrap().status(), 200);
        // An unknown refresh token, a forged access token on /user and on /logout: three
        // failures, the whole budget.
        let (status, body) = parts(grant("no-such-refresh-token").send().await.unwrap()).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("refresh_token_not_found"))
        );
        let forged = format!("{access}x");
        assert_eq!(
            refused(user(&forged).send().await.unwrap()).await,
            "403 bad_jwt"
        );
        let res = app
            .auth(Method::POST, "/logout")
            .header("x-forwarded-for", FLOODER)
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(res).await, "403 bad_jwt");
        // Over budget: the valid refresh token and access token are refused too.
        let res = grant(&refresh).send().await.unwrap();
        assert_eq!(res.status(), 429);
        let (_, body) = parts(res).await;
        assert_eq!(body["code"], "over_request_rate_limit", "{body}");
        assert_eq!(
            refused(user(&access).send().await.unwrap()).await,
            "429 over_request_rate_limit"
        );
        // From elsewhere they work.
        let res = app
            .auth(Method::POST, "/token?grant_type=refresh_token")
            .header("x-forwarded-for", BYSTANDER)
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        app
    }
);
