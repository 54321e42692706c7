//! Rate limits over HTTP: key and organization policies, per-key and per-organization
//! overrides, headers and the 429 envelope, trusted proxies, metrics; and the Redis
//! backend against the same exact semantics as memory, with a controlled clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::clock::Clock;
use gatehouse::config::Config;
use gatehouse::ratelimit::{
    decide, MemoryLimiter, Rate, Rates, RedisLimiter, RedisLink, Request, Then, Window,
};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{clocked, parts, redis_prefix, redis_url, refusal, refused, Db, TestApp};
use crate::story;

const T0: i64 = 1_800_000_000_000;

fn rates(s: &str) -> Rates {
    Rates::parse(s).unwrap()
}

async fn me(app: &TestApp, key: &str) -> reqwest::Response {
    app.v1(Method::GET, "/me", key).send().await.unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

story!(
    a_key_is_held_to_every_window_with_exact_retry_after,
    setup: |db| clocked(db, T0, |c| c.rate_limit_api_key = rates("3/60s,5/1h")),
    |(app, clock): (TestApp, Clock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (key, _) = app.key(&owner, &org, &[]).await;
        let (_, body) = app.call(Method::GET, "/me", &key, None).await;
        assert_eq!(
            body["data"]["rate_limit"][0],
            json!({"policy": "api_key", "limit": 3, "window_seconds": 60, "remaining": 2,
                   "reset": T0 / 1000 + 20})
        );
        assert_eq!(body["data"]["rate_limit"][1]["window_seconds"], 3600);
        assert_eq!(body["data"]["rate_limit"][2]["policy"], "org");
        clock.advance_ms(20_000);
        for left in [2, 1, 0] {
            let res = me(&app, &key).await;
            assert_eq!(res.status(), 200);
            assert_eq!(header(&res, "x-ratelimit-limit"), "3");
            assert_eq!(header(&res, "x-ratelimit-remaining"), left.to_string());
            assert_eq!(
                header(&res, "ratelimit-policy"),
                "\"api_key_60s\";q=3;w=60, \"api_key_3600s\";q=5;w=3600, \"org_60s\";q=100000;w=60"
            );
            assert!(
                header(&res, "ratelimit").starts_with(&format!("\"api_key_60s\";r={left};t="))
            );
        }
        let res = me(&app, &key).await;
        assert_eq!(res.status(), 429);
        assert_eq!(header(&res, "retry-after"), "20");
        let reset: i64 = header(&res, "x-ratelimit-reset").parse().unwrap();
        assert_eq!(reset, T0 / 1000 + 80, "when the minute window is full again");
        let (_, body) = parts(res).await;
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(
            body["error"]["message"],
            "Rate limit exceeded. Try again in 20 seconds."
        );
        assert_eq!(
            body["error"]["details"],
            json!({"retry_after": 20, "limit": 3, "window": 60})
        );
        // Still refused a second before Retry-After, admitted at it.
        clock.advance_ms(19_000);
        assert_eq!(refused(me(&app, &key).await).await, "429 rate_limited");
        clock.advance_ms(1_000);
        assert_eq!(me(&app, &key).await.status(), 200);
        // Five requests so far: the hour window (5) binds next, as the refusals above
        // consumed nothing.
        clock.advance_ms(60_000);
        let res = me(&app, &key).await;
        assert_eq!(res.status(), 429);
        let (_, body) = parts(res).await;
        assert_eq!(body["error"]["details"]["window"], 3600);
        app
    }
);

story!(
    the_organization_window_is_shared_by_all_its_keys,
    setup: |db| clocked(db, T0, |c| c.rate_limit_org = rates("4/60s")),
    |(app, _clock): (TestApp, Clock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (k1, _) = app.key(&owner, &org, &[]).await;
        let (k2, _) = app.key(&owner, &org, &[]).await;
        let other_org = app.org(&owner, "Other").await;
        let (k3, _) = app.key(&owner, &other_org, &[]).await;
        let mut admitted = 0;
        for i in 0..10 {
            let key = if i % 2 == 0 { &k1 } else { &k2 };
            if me(&app, key).await.status() == 200 {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 4);
        let res = me(&app, &k1).await;
        let (status, body) = parts(res).await;
        assert_eq!(refusal(status, &body), (429, "rate_limited", ""), "{body}");
        assert_eq!(body["error"]["details"]["limit"], 4);
        // Another organization has its own window.
        assert_eq!(me(&app, &k3).await.status(), 200);
        // People are not limited by the key policies.
        let (status, _) = app.call(Method::GET, "/me", &owner.token, None).await;
        assert_eq!(status, 200);
        app
    }
);

story!(
    keys_and_organizations_carry_their_own_limits,
    setup: |db| clocked(db, T0, |_| {}),
    |(app, _clock): (TestApp, Clock)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &owner.token,
                Some(json!({"name": "tight", "rate_limits": [{"limit": 2, "window_seconds": 60}]})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["data"]["rate_limits"],
            json!([{"limit": 2, "window_seconds": 60}])
        );
        let key = body["data"]["key"].as_str().unwrap().to_string();
        let id = body["data"]["id"].as_str().unwrap().to_string();
        assert_eq!(me(&app, &key).await.status(), 200);
        assert_eq!(me(&app, &key).await.status(), 200);
        assert_eq!(refused(me(&app, &key).await).await, "429 rate_limited");
        // Raising the key's limit applies at once.
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/api-keys/{id}"),
                &owner.token,
                Some(json!({"rate_limits": [{"limit": 10, "window_seconds": 60}], "name": "roomier"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["name"], "roomier");
        let res = me(&app, &key).await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "x-ratelimit-limit"), "10");
        // null restores the default.
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/api-keys/{id}"),
                &owner.token,
                Some(json!({"rate_limits": null})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["data"]["rate_limits"].is_null());
        // The organization's own limit.
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}"),
                &owner.token,
                Some(json!({"rate_limits": [{"limit": 1, "window_seconds": 60}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["rate_limits"], json!([{"limit": 1, "window_seconds": 60}]));
        assert_eq!(body["data"]["name"], "Acme");
        let res = me(&app, &key).await;
        assert_eq!(res.status(), 200);
        let (status, body) = parts(me(&app, &key).await).await;
        assert_eq!(refusal(status, &body), (429, "rate_limited", ""), "{body}");
        assert_eq!(body["error"]["details"]["limit"], 1);
        // Both changes are audited.
        let (_, log) = app
            .call(Method::GET, &format!("/orgs/{org}/audit-log"), &owner.token, None)
            .await;
        let actions: Vec<&str> = log["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert!(actions.contains(&"api_key.updated"), "{actions:?}");
        assert!(actions.contains(&"organization.rate_limits_changed"), "{actions:?}");
        app
    }
);

story!(
    bad_rate_limits_are_refused_clearly,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let member = app.person().await;
        app.add(&owner, &org, &member, "member").await;
        for bad in [
            json!([]),
            json!([{"limit": 0, "window_seconds": 60}]),
            json!([{"limit": 5, "window_seconds": 0}]),
            json!([{"limit": 5, "window_seconds": 99_999_999}]),
            json!([{"limit": 5, "window_seconds": 60}, {"limit": 9, "window_seconds": 60}]),
            json!((0..9)
                .map(|i| json!({"limit": 5, "window_seconds": 60 + i}))
                .collect::<Vec<_>>()),
        ] {
            let (status, body) = app
                .call(
                    Method::POST,
                    &format!("/orgs/{org}/api-keys"),
                    &owner.token,
                    Some(json!({"name": "k", "rate_limits": bad})),
                )
                .await;
            assert_eq!(status, 422, "{bad}: {body}");
            assert_eq!(body["error"]["code"], "validation_failed");
            assert!(body["error"]["details"]["fields"]["rate_limits"].is_string());
            let (status, refused) = app
                .call(
                    Method::PATCH,
                    &format!("/orgs/{org}"),
                    &owner.token,
                    Some(json!({"rate_limits": bad})),
                )
                .await;
            assert_eq!(
                refusal(status, &refused),
                (422, "validation_failed", ""),
                "{bad}: {refused}"
            );
        }
        for bad in [
            json!([{"limit": -1, "window_seconds": 60}]),
            json!([{"limit": 5}]),
            json!("60/60s"),
        ] {
            let (status, body) = app
                .call(
                    Method::PATCH,
                    &format!("/orgs/{org}"),
                    &owner.token,
                    Some(json!({"rate_limits": bad})),
                )
                .await;
            // Not a list of {limit, window_seconds} with non-negative integers: the shape is
            // wrong, so 400 `invalid_request` (422 is for values out of range, above).
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["error"]["code"], "invalid_request", "{bad}: {body}");
        }
        // Members cannot change the organization's limits.
        let (status, refused) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}"),
                &member.token,
                Some(json!({"rate_limits": [{"limit": 1000000, "window_seconds": 1}]})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (403, "forbidden", ""),
            "{refused}"
        );
        assert_eq!(
            refused["error"]["details"]["required"], "admin",
            "{refused}"
        );
        // Another tenant's key cannot be changed.
        let stranger = app.person().await;
        let their_org = app.org(&stranger, "Theirs").await;
        let (_, their_key) = app.key(&stranger, &their_org, &[]).await;
        let (status, refused) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/api-keys/{their_key}"),
                &owner.token,
                Some(json!({"name": "mine now"})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (404, "not_found", ""),
            "{refused}"
        );
        app
    }
);

story!(
    verifying_a_key_counts_against_its_own_limit,
    |c: &mut Config| c.rate_limit_api_key = rates("2/60s"),
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &owner.token,
                Some(json!({"name": "verifier", "scopes": ["keys:verify"],
                        "rate_limits": [{"limit": 100, "window_seconds": 60}]})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let verifier = body["data"]["key"].as_str().unwrap().to_string();
        let (customer_key, _) = app.key(&owner, &org, &[]).await;
        for remaining in [1, 0] {
            let (status, body) = app
                .call(
                    Method::POST,
                    "/keys/verify",
                    &verifier,
                    Some(json!({"key": customer_key})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"]["valid"], true);
            assert_eq!(body["data"]["ratelimit"]["remaining"], remaining);
        }
        let res = app
            .v1(Method::POST, "/keys/verify", &verifier)
            .json(&json!({"key": customer_key}))
            .send()
            .await
            .unwrap();
        // The response headers describe the caller's own limit, not the verified key's.
        assert_eq!(header(&res, "x-ratelimit-limit"), "100");
        let (status, body) = parts(res).await;
        assert_eq!(status, 200);
        assert_eq!(body["data"]["valid"], false);
        assert_eq!(body["data"]["reason"], "rate_limited");
        assert!(body["data"]["ratelimit"]["retry_after"].as_u64().unwrap() >= 1);
        app
    }
);

story!(
    forwarded_addresses_count_only_behind_a_trusted_proxy,
    |c: &mut Config| {
        c.rate_limit_sign_in = rates("1/60s");
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
    },
    |app: TestApp| async move {
        let sign_in = |xff: &'static str| {
            let app = &app;
            async move {
                refused(
                    app.client
                        .post(app.url("/v1/session"))
                        .header("x-forwarded-for", xff)
                        .json(&json!({"email": "nobody@example.com", "password": "wrong password"}))
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }
        };
        const WRONG: &str = "401 unauthorized invalid_credentials";
        const LIMITED: &str = "429 rate_limited";
        // Two clients behind the proxy have a window each; the leftmost entry is the
        // client's own claim and is ignored once an untrusted hop is found.
        assert_eq!(sign_in("203.0.113.9").await, WRONG);
        assert_eq!(sign_in("203.0.113.9").await, LIMITED);
        assert_eq!(sign_in("198.51.100.7").await, WRONG);
        assert_eq!(sign_in("1.2.3.4, 198.51.100.7").await, LIMITED);
        assert_eq!(sign_in("2001:db8:1:2::1").await, WRONG);
        assert_eq!(
            sign_in("2001:db8:1:2::ffff").await,
            LIMITED,
            "one /64, one window"
        );
        app
    }
);

story!(
    forwarded_addresses_are_ignored_without_a_trusted_proxy,
    |c: &mut Config| c.rate_limit_sign_in = rates("1/60s"),
    |app: TestApp| async move {
        for (xff, expected) in [("203.0.113.9", 401), ("198.51.100.7", 429)] {
            let status = app
                .client
                .post(app.url("/v1/session"))
                .header("x-forwarded-for", xff)
                .json(&json!({"email": "nobody@example.com", "password": "wrong password"}))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, expected, "{xff}");
        }
        app
    }
);

story!(
    metrics_count_requests_decisions_and_failures,
    |c: &mut Config| c.rate_limit_api_key = rates("1/60s"),
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (key, _) = app.key(&owner, &org, &[]).await;
        assert_eq!(me(&app, &key).await.status(), 200);
        assert_eq!(refused(me(&app, &key).await).await, "429 rate_limited");
        let last = if key.ends_with('x') { "y" } else { "x" };
        let bogus = format!("{}{last}", &key[..key.len() - 1]);
        assert_eq!(
            refused(me(&app, &bogus).await).await,
            "401 unauthorized malformed"
        );
        let res = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        let has = |needle: &str| {
            assert!(
                text.lines().any(|l| l.contains(needle)),
                "no {needle} in\n{text}"
            );
        };
        has(r#"gatehouse_http_requests_total{route="/v1/me",method="GET",status="200"} 1"#);
        has(r#"gatehouse_http_requests_total{route="/v1/me",method="GET",status="429"} 1"#);
        has(r#"gatehouse_ratelimit_decisions_total{policy="api_key",outcome="denied"} 1"#);
        has(r#"gatehouse_auth_failures_total{reason="malformed"} 1"#);
        has("gatehouse_http_request_duration_seconds_bucket");
        // Paths with ids are reported by route pattern, never raw.
        has(r#"route="/v1/orgs/{org}/api-keys""#);
        assert!(
            !text.contains(&org),
            "an organization id leaked into metrics"
        );
        app
    }
);

// ---- The Redis backend, decision by decision, against the same semantics as memory ----

async fn redis_limiter() -> RedisLimiter {
    let url = redis_url();
    let link = RedisLink::open_url(&url, &redis_prefix(), std::time::Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        link.connection().is_some(),
        "Redis at {url} does not answer"
    );
    RedisLimiter::new(link)
}

fn request(tag: &str, windows: &[(&'static str, u32, u32)]) -> Request {
    Request {
        tag: tag.into(),
        windows: windows
            .iter()
            .map(|(p, l, w)| Window {
                policy: p,
                subject: "s".into(),
                rate: Rate::new(*l, *w),
                cost: 1,
            })
            .collect(),
        fail_closed: false,
    }
}

#[tokio::test]
async fn decisions_on_redis_are_exact() {
    let redis = redis_limiter().await;
    let req = request("a", &[("p", 5, 60)]);
    for left in (0..5).rev() {
        let d = redis.check(&req, Some(T0)).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.windows[0].remaining, left);
    }
    let d = redis.check(&req, Some(T0)).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.retry_after(), 12);
    assert!(!redis.check(&req, Some(T0 + 11_000)).await.unwrap().allowed);
    assert!(redis.check(&req, Some(T0 + 12_000)).await.unwrap().allowed);
    // 600 per second: an emission interval of 5/3 ms stays exact in Lua's doubles. All at
    // once (batched): the counter expires a second of real time after the test clock's
    // instant, which 700 decisions one after the other may outlast on a busy machine.
    let req = request("b", &[("p", 600, 1)]);
    let decisions = (0..700).map(|_| redis.check(&req, Some(T0)));
    let admitted = futures_util::future::join_all(decisions)
        .await
        .into_iter()
        .filter(|d| d.as_ref().unwrap().allowed)
        .count();
    assert_eq!(admitted, 600);
    // Without a test clock Redis TIME decides.
    let req = request("c", &[("p", 1, 60)]);
    assert!(redis.check(&req, None).await.unwrap().allowed);
    assert!(!redis.check(&req, None).await.unwrap().allowed);
}

/// Decisions that arrive together are decided in one script call per hash tag, one after the
/// other: as exact as one call each. Three subjects share one organization's window; peeks
/// mixed in store nothing; another tag and another clock go in calls of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_batched_on_redis_are_exact() {
    let redis = redis_limiter().await;
    let org = Window {
        policy: "org",
        subject: "o".into(),
        rate: Rate::new(150, 60),
        cost: 1,
    };
    let key = |subject: &str, limit: u32| {
        let mut req = request("batch", &[]);
        req.windows.push(Window {
            policy: "api_key",
            subject: subject.into(),
            rate: Rate::new(limit, 60),
            cost: 1,
        });
        req.windows.push(org.clone());
        req
    };
    let (x, y, z) = (key("x", 100), key("y", 40), key("z", 1000));
    let other_tag = request("batch-other", &[("p", 30, 60)]);
    let mut tasks = tokio::task::JoinSet::new();
    let plan = [
        (&x, 160, Some(T0)),
        (&y, 60, Some(T0)),
        (&z, 60, Some(T0)),
        (&other_tag, 50, Some(T0)),
        (&other_tag, 50, Some(T0 + 1)),
    ];
    for (n, (req, count, now)) in plan.iter().enumerate() {
        for i in 0..*count {
            let (redis, req, now) = (redis.clone(), (*req).clone(), *now);
            // Every third decision of x is a peek: it decides and stores nothing.
            let peek = n == 0 && i % 3 == 0;
            tasks.spawn(async move {
                let d = if peek {
                    redis.peek(&req, now).await
                } else {
                    redis.check(&req, now).await
                };
                (n, peek, d.unwrap())
            });
        }
    }
    let mut admitted = [0usize; 5];
    let mut remaining: Vec<Vec<u32>> = vec![Vec::new(); 5];
    let mut decided = 0u64;
    while let Some(r) = tasks.join_next().await {
        let (n, peek, d) = r.unwrap();
        decided += 1;
        if d.allowed && !peek {
            admitted[n] += 1;
            remaining[n].push(d.windows[0].remaining);
        }
    }
    // x, y and z share the organization's 150: x and y are held by their own windows first
    // or not, but never more than 150 together, and never more than their own limits.
    assert!(admitted[0] <= 100 && admitted[1] <= 40);
    assert_eq!(admitted[0] + admitted[1] + admitted[2], 150);
    // Each admitted decision saw the counter one lower than the one before: no two decisions
    // of a batch were decided on the same state.
    for (n, limit) in [(0, 100), (1, 40), (2, 1000)] {
        let mut seen = remaining[n].clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), admitted[n], "subject {n}: {:?}", remaining[n]);
        assert!(seen.iter().all(|r| *r < limit));
    }
    // The other tag's two clocks: 30 in all, whichever instant came first.
    assert_eq!(admitted[3] + admitted[4], 30);
    // The peeks stored nothing: x's counter holds exactly its admitted checks.
    let d = redis.peek(&x, Some(T0)).await.unwrap();
    assert_eq!(d.windows[0].remaining as usize, 100 - admitted[0]);
    assert!(
        redis.calls() < decided,
        "{decided} decisions in {} calls: none was batched",
        redis.calls()
    );
}

/// Identical decisions sent together travel as one shape with a count and are decided in
/// closed form: each answers exactly what the memory limiter answers the same decisions one
/// after the other (every window's remaining, reset and wait), over windows of different
/// costs, in a burst and after part of a window has refilled. Their credit spends answer as
/// `Balance::spend` does, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_decisions_on_redis_answer_as_one_after_the_other() {
    use gatehouse::domain::credits::Balance;
    use gatehouse::ratelimit::{Decision, Joint};
    let redis = redis_limiter().await;
    let mut req = request(
        "same",
        &[("second", 7, 1), ("minute", 25, 60), ("hour", 1000, 3600)],
    );
    req.windows[1].cost = 2;
    let memory = MemoryLimiter::new(1000);
    let sorted = |mut v: Vec<Decision>| {
        v.sort_by_key(|d| format!("{d:?}"));
        v
    };
    let mut admitted = Vec::new();
    for now in [T0, T0, T0 + 500, T0 + 61_000] {
        let together = (0..40).map(|_| redis.check(&req, Some(now)));
        let by_redis: Vec<Decision> = futures_util::future::join_all(together)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let by_memory: Vec<Decision> = (0..40).map(|_| memory.check(&req, now)).collect();
        admitted.push(by_memory.iter().filter(|d| d.allowed).count());
        assert_eq!(sorted(by_redis), sorted(by_memory), "at {now}");
    }
    // The burst fills the 7-per-second window; half a second later 3 more fit (3.5 refilled).
    assert_eq!(admitted[..3], [7, 0, 3]);
    assert!(
        redis.calls() < 160,
        "160 decisions in {} calls: none was batched",
        redis.calls()
    );
    // A spend whose balance Redis does not hold, without one to start from: every decision of
    // the shape is asked to fill it, and none counts in the window.
    let req = request("org:same-fill", &[("p", 3, 60)]);
    let then = Then {
        key: format!("{}:cr:{{org:same-fill}}key_1", redis_prefix()),
        args: [1, 1, 0, -1, -1, -1, -1],
    };
    let together = (0..10).map(|_| redis.check_then(&req, Some(T0), &then));
    for joint in futures_util::future::join_all(together).await {
        assert!(matches!(joint.unwrap(), Joint::Retry(-1)));
    }
    assert_eq!(
        redis.peek(&req, Some(T0)).await.unwrap().windows[0].remaining,
        2
    );
    // Credits: 20 admitted by the window, of which the balance of 50 at 5 each pays for 10.
    let req = request("org:same-credits", &[("p", 20, 60)]);
    let then = Then {
        key: format!("{}:cr:{{org:same-credits}}key_1", redis_prefix()),
        args: [1, 5, 0, -1, 50, 50, 0],
    };
    let together = (0..30).map(|_| redis.check_then(&req, Some(T0), &then));
    let mut spends = Vec::new();
    let mut denied = 0;
    for joint in futures_util::future::join_all(together).await {
        match joint.unwrap() {
            Joint::Admitted(d, tail) => {
                assert!(d.allowed);
                spends.push(tail);
            }
            Joint::Denied(d) => {
                assert!(!d.allowed);
                denied += 1;
            }
            Joint::Retry(code) => panic!("asked to fill again ({code}) with a balance given"),
        }
    }
    assert_eq!((spends.len(), denied), (20, 10));
    let mut model = Balance {
        remaining: 50,
        base: 50,
        period: 0,
    };
    let mut expected = Vec::new();
    for _ in 0..20 {
        let s = model.spend(None, T0, 5);
        model = s.balance;
        expected.push(vec![
            i64::from(s.admitted),
            s.balance.remaining,
            50,
            0,
            i64::from(s.low),
            i64::from(s.exhausted),
            1,
        ]);
    }
    spends.sort();
    expected.sort();
    assert_eq!(spends, expected);
}

/// A decision Redis cannot make (its balance's key holds a string) fails alone: the call that
/// held it with others is sent again one decision at a time. A counter holding something this
/// limiter never wrote counts as a fresh window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_decision_in_a_batch_fails_alone_on_redis() {
    let prefix = redis_prefix();
    let link = RedisLink::open_url(&redis_url(), &prefix, std::time::Duration::from_secs(2))
        .await
        .unwrap();
    let mut conn = link.connection().expect("Redis answers");
    let redis = RedisLimiter::new(link.clone());
    let req = request("org:bad", &[("p", 1000, 60)]);
    let garbage = format!("{prefix}:rl:{{org:bad}}p:s:1000:60");
    let balance = format!("{prefix}:cr:{{org:bad}}key_1");
    for k in [&garbage, &balance] {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("not a counter")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (redis, req, balance) = (redis.clone(), req.clone(), balance.clone());
        tasks.spawn(async move {
            if i == 20 {
                let then = Then {
                    key: balance,
                    args: [1, 1, 0, -1, 10, 10, 0],
                };
                (true, redis.check_then(&req, Some(T0), &then).await.is_ok())
            } else {
                (false, redis.check(&req, Some(T0)).await.is_ok())
            }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        outcomes.push(r.unwrap());
    }
    assert!(outcomes.contains(&(true, false)), "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == (false, true)).count(), 39);
    // The 39 checks counted from a fresh window, and the failed one not at all: a peek
    // answers what would remain after one more.
    let d = redis.peek(&req, Some(T0)).await.unwrap();
    assert_eq!(d.windows[0].remaining, 1000 - 39 - 1);
}

#[tokio::test]
async fn multi_window_denials_on_redis_consume_nothing() {
    let redis = redis_limiter().await;
    let req = request("m", &[("minute", 2, 60), ("day", 3, 86_400)]);
    assert!(redis.check(&req, Some(T0)).await.unwrap().allowed);
    assert!(redis.check(&req, Some(T0)).await.unwrap().allowed);
    for _ in 0..20 {
        let d = redis.check(&req, Some(T0)).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.windows[1].remaining, 1);
    }
    assert!(redis.check(&req, Some(T0 + 60_000)).await.unwrap().allowed);
    let d = redis.check(&req, Some(T0 + 60_000)).await.unwrap();
    assert_eq!(d.binding().unwrap().policy, "day");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_on_redis_and_in_memory_agree() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, TestRunner};
    let redis = redis_limiter().await;
    let rt = tokio::runtime::Handle::current();
    let strategy = (
        1u32..30,
        1u32..120,
        1u32..60,
        proptest::collection::vec((0i64..4_000, any::<bool>()), 1..120),
    );
    let mut runner = TestRunner::new(PtConfig {
        cases: 48,
        ..PtConfig::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&strategy, |(l1, w1, l2, steps)| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let req = request(
                &format!("prop{n}"),
                &[("a", l1, w1), ("b", l2 + l1, w1 * 60)],
            );
            // The memory limiter never lets time run backwards (it keeps the latest time
            // seen): it is the model of a clock that stood still instead of stepping back.
            let memory = MemoryLimiter::new(1000);
            let mut tats = vec![i64::MIN; 2];
            let (mut now, mut stepped_back) = (T0, false);
            let (mut by_redis, mut by_model) = (0, 0);
            for (dt, back) in steps {
                now = if back { now - dt / 4 } else { now + dt };
                stepped_back |= back && dt >= 4;
                let r = tokio::task::block_in_place(|| rt.block_on(redis.check(&req, Some(now))))
                    .unwrap();
                let m = memory.check(&req, now);
                if !stepped_back {
                    // Forward time: Redis, memory and the pure function agree exactly.
                    prop_assert_eq!(&r, &m);
                    prop_assert_eq!(&r, &decide(&req.windows, &mut tats, now));
                }
                by_redis += usize::from(r.allowed);
                by_model += usize::from(m.allowed);
                prop_assert!(by_redis <= by_model, "a backwards step loosened the limit");
            }
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_redis_enforces_the_same_limits() {
    let url = redis_url();
    let clock = Clock::manual(T0);
    let prefix = redis_prefix();
    let app = TestApp::spawn_with_clock(Db::Sqlite, clock.clone(), move |c| {
        c.redis_url = Some(gatehouse::config::SecretString::from(url));
        c.redis_prefix = prefix;
        c.rate_limit_api_key = rates("2/60s");
    })
    .await;
    assert_eq!(app.state.limits.limiter().backend_name(), "redis");
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let (key, _) = app.key(&owner, &org, &[]).await;
    assert_eq!(me(&app, &key).await.status(), 200);
    assert_eq!(me(&app, &key).await.status(), 200);
    let res = me(&app, &key).await;
    assert_eq!(header(&res, "retry-after"), "30");
    assert_eq!(refused(res).await, "429 rate_limited");
    clock.advance_ms(30_000);
    assert_eq!(me(&app, &key).await.status(), 200);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("gatehouse_ratelimit_redis_fallbacks_total 0"),
        "{text}"
    );
    app.stop().await;
}

story!(
    every_key_request_and_every_429_is_counted_per_key,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Counted").await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &ann.token,
                Some(json!({"name": "tight", "rate_limits": [{"limit": 3, "window_seconds": 60}]})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let key = body["data"]["key"].as_str().unwrap().to_string();
        let key_id = body["data"]["id"].as_str().unwrap().to_string();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(app.me(&key).await.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429]);
        app.state.chat.usage.flush().await.unwrap();
        let (status, body) = app
            .call(Method::GET, &format!("/orgs/{org}/usage"), &ann.token, None)
            .await;
        assert_eq!(status, 200, "{body}");
        let row = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key_id"] == key_id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no row for the key: {body}"));
        assert_eq!(row["api_requests"], 3, "{row}");
        assert_eq!(row["rate_limited"], 2, "{row}");
        assert_eq!(row["requests"], 0, "no chat requests");
        app
    }
);
