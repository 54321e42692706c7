//! Credits per API key: spent by every use and by `cost` on verification, refused with 402
//! `credits_exhausted` (verify: `usage_exceeded`) at zero, refilled by the clock, exact under
//! concurrency on one instance and across instances (memory, PostgreSQL, Redis), rebuilt
//! from storage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::stream::{self, StreamExt};
use gatehouse::clock::Clock;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    clocked, parts, redis_prefix, redis_url, refusal, sql, Db, OwnRedis, Person, TestApp, TestDb,
};
use crate::story;

/// 2025-01-31T10:00:00Z.
const T0: i64 = 1_738_317_600_000;
const DAY: i64 = 86_400_000;

/// An organization of `owner`, a verifier key (`keys:verify`, no credits) and a key with
/// `credits`; returns (org, verifier, key, key id).
pub(crate) async fn setup(
    app: &TestApp,
    owner: &Person,
    credits: Value,
) -> (String, String, String, String) {
    let org = app.org(owner, "Credits").await;
    let (verifier, _) = app.key(owner, &org, &["keys:verify"]).await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/api-keys"),
            &owner.token,
            Some(json!({"name": "metered", "scopes": ["keys:read"], "credits": credits})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["credits"]["remaining"], credits["remaining"]);
    let key = body["data"]["key"].as_str().unwrap().to_string();
    let id = body["data"]["id"].as_str().unwrap().to_string();
    (org, verifier, key, id)
}

/// `POST /v1/keys/verify` on `base`: (valid, code, remaining).
async fn verify_on(
    c: &reqwest::Client,
    base: &str,
    verifier: &str,
    key: &str,
    cost: Option<i64>,
) -> (bool, String, Value) {
    let mut body = json!({ "key": key });
    if let Some(cost) = cost {
        body["cost"] = json!(cost);
    }
    let (status, v) = parts(
        c.post(format!("{base}/v1/keys/verify"))
            .bearer_auth(verifier)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let d = &v["data"];
    assert_eq!(
        d["code"].as_str().unwrap() == "valid",
        d["valid"].as_bool().unwrap(),
        "{v}"
    );
    (
        d["valid"].as_bool().unwrap(),
        d["code"].as_str().unwrap().to_string(),
        d["remaining"].clone(),
    )
}

async fn verify(
    app: &TestApp,
    verifier: &str,
    key: &str,
    cost: Option<i64>,
) -> (bool, String, Value) {
    verify_on(&app.client, &app.base, verifier, key, cost).await
}

/// The audit entries of `action` in `org`.
async fn audited(app: &TestApp, owner: &Person, org: &str, action: &str) -> Vec<Value> {
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/orgs/{org}/audit-log?action={action}"),
            &owner.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

story!(
    credits_are_spent_by_cost_refused_at_zero_and_set_back_on_the_clamped_refill_day,
    setup: |db| clocked(db, T0, |_| {}),
    |(app, clock): (TestApp, Clock)| async move {
        let owner = app.person().await;
        let credits = json!({"remaining": 10, "refill": {"interval": "monthly", "amount": 4, "day": 31}});
        let (org, verifier, key, id) = setup(&app, &owner, credits).await;
        assert_eq!(verify(&app, &verifier, &key, Some(9)).await, (true, "valid".into(), json!(1)));
        // More than is left: refused, nothing taken.
        assert_eq!(
            verify(&app, &verifier, &key, Some(2)).await,
            (false, "usage_exceeded".into(), json!(1))
        );
        assert_eq!(verify(&app, &verifier, &key, None).await, (true, "valid".into(), json!(0)));
        assert_eq!(
            verify(&app, &verifier, &key, Some(0)).await,
            (false, "usage_exceeded".into(), json!(0))
        );
        // The key itself, as a credential: 402 in the envelope, never served.
        let (status, body) = app.call(Method::GET, "/me", &key, None).await;
        assert_eq!(refusal(status, &body), (402, "credits_exhausted", ""), "{body}");
        assert_eq!(body["error"]["details"]["remaining"], 0);
        // Each alert once: 9 of 10 crossed 10 %, the last one reached zero.
        let low = audited(&app, &owner, &org, "credits.low").await;
        let gone = audited(&app, &owner, &org, "credits.exhausted").await;
        assert_eq!((low.len(), gone.len()), (1, 1), "{low:?} {gone:?}");
        assert_eq!(low[0]["actor"], "system");
        assert_eq!(low[0]["target"], id.as_str());
        assert_eq!(low[0]["details"]["remaining"], 1);
        assert_eq!(gone[0]["details"]["amount"], 10);
        // 31 January → the refill of day 31 comes on 28 February (2025 has no 29th).
        clock.advance_ms(27 * DAY + 13 * 3_600_000 + 59 * 60_000); // 27 Feb 23:59
        assert_eq!(
            verify(&app, &verifier, &key, Some(0)).await,
            (false, "usage_exceeded".into(), json!(0))
        );
        clock.advance_ms(60_000); // 28 Feb 00:00
        // Set to the amount (4), not added to; one spent.
        assert_eq!(verify(&app, &verifier, &key, None).await, (true, "valid".into(), json!(3)));
        let (status, body) = app.call(Method::GET, "/me", &key, None).await;
        assert_eq!(status, 200, "{body}");
        // A month on, the owner's access token has expired: a fresh one.
        let session: Value = app
            .sign_in(&owner.email, "correct horse battery")
            .await
            .json()
            .await
            .unwrap();
        let token = session["access_token"].as_str().unwrap().to_string();
        let (status, body) = app
            .call(Method::GET, &format!("/orgs/{org}/api-keys/{id}"), &token, None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["data"]["credits"],
            json!({"remaining": 2, "refill": {"interval": "monthly", "amount": 4, "day": 31}})
        );
        // Cleared: unlimited again.
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/api-keys/{id}"),
                &token,
                Some(json!({"credits": null})),
            )
            .await;
        assert_eq!((status, &body["data"]["credits"]), (200, &Value::Null), "{body}");
        assert_eq!(verify(&app, &verifier, &key, Some(50)).await, (true, "valid".into(), Value::Null));
        // Set again: a new balance, at once.
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/api-keys/{id}"),
                &token,
                Some(json!({"credits": {"remaining": 1}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app.call(Method::GET, "/me", &key, None).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app.call(Method::GET, "/me", &key, None).await;
        assert_eq!(refusal(status, &body), (402, "credits_exhausted", ""), "{body}");
        app
    }
);

story!(
    credit_settings_and_costs_out_of_range_are_refused_naming_the_field,
    |app: TestApp| async move {
        let owner = app.person().await;
        let (org, verifier, key, _) = setup(&app, &owner, json!({"remaining": 5})).await;
        for (credits, field) in [
            (json!({"remaining": -1}), "credits.remaining"),
            (
                json!({"remaining": 1, "refill": {"interval": "weekly", "amount": 1}}),
                "credits.refill.interval",
            ),
            (
                json!({"remaining": 1, "refill": {"interval": "daily", "amount": 1, "day": 3}}),
                "credits.refill.day",
            ),
            (
                json!({"remaining": 1, "refill": {"interval": "monthly", "amount": 1, "day": 32}}),
                "credits.refill.day",
            ),
        ] {
            let (status, body) = app
                .call(
                    Method::POST,
                    &format!("/orgs/{org}/api-keys"),
                    &owner.token,
                    Some(json!({"name": "bad", "credits": credits})),
                )
                .await;
            assert_eq!(status, 422, "{credits}: {body}");
            assert!(
                body["error"]["details"]["fields"][field].is_string(),
                "{field}: {body}"
            );
        }
        for cost in [-1, 1_000_001] {
            let (status, body) = app
                .call(
                    Method::POST,
                    "/keys/verify",
                    &verifier,
                    Some(json!({"key": key, "cost": cost})),
                )
                .await;
            assert_eq!(status, 422, "{body}");
            assert!(
                body["error"]["details"]["fields"]["cost"].is_string(),
                "{body}"
            );
        }
        // Nothing was spent by the refusals.
        assert_eq!(
            verify(&app, &verifier, &key, Some(0)).await,
            (true, "valid".into(), json!(5))
        );
        app
    }
);

/// `n` verifications of cost 1 at once, spread over `bases`; how many were admitted.
pub(crate) async fn concurrent_verifications(
    bases: &[String],
    verifier: &str,
    key: &str,
    n: usize,
) -> usize {
    let c = reqwest::Client::new();
    let results: Vec<bool> = stream::iter(0..n)
        .map(|i| {
            let (c, base) = (c.clone(), bases[i % bases.len()].clone());
            async move { verify_on(&c, &base, verifier, key, Some(1)).await.0 }
        })
        .buffer_unordered(n)
        .collect()
        .await;
    results.into_iter().filter(|v| *v).count()
}

/// What storage holds for a key: its balance and the ledger's total.
pub(crate) async fn stored(db_url: &str, id: &str) -> (i64, i64) {
    let pool = sql(db_url).await;
    let (remaining,): (i64,) =
        sqlx::query_as("SELECT credits_remaining FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let (spent,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_spends WHERE key_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (remaining, spent)
}

story!(
    concurrent_uses_admit_exactly_the_remaining_credits_and_storage_holds_them,
    |app: TestApp| async move {
        let owner = app.person().await;
        let (_, verifier, key, id) = setup(&app, &owner, json!({"remaining": 100})).await;
        let admitted =
            concurrent_verifications(std::slice::from_ref(&app.base), &verifier, &key, 200).await;
        assert_eq!(admitted, 100);
        // Every acknowledged spend is in storage when answered: the balance and the ledger.
        assert_eq!(stored(&app.db.url, &id).await, (0, 100));
        app
    }
);

story!(
    balances_are_rebuilt_from_storage_as_after_a_restart,
    |app: TestApp| async move {
        let owner = app.person().await;
        let (_, verifier, key, id) = setup(&app, &owner, json!({"remaining": 30})).await;
        assert_eq!(
            verify(&app, &verifier, &key, Some(12)).await,
            (true, "valid".into(), json!(18))
        );
        // What a restart loses: the balances held in memory (the storage meter holds none).
        app.state.keys.forget_balances();
        let admitted =
            concurrent_verifications(std::slice::from_ref(&app.base), &verifier, &key, 40).await;
        assert_eq!(admitted, 18);
        assert_eq!(stored(&app.db.url, &id).await, (0, 30));
        app
    }
);

/// Two instances on one fresh PostgreSQL database, with `redis` (URL and prefix) or without.
async fn two_instances(redis: Option<(String, String)>) -> (TestApp, TestApp) {
    let db = TestDb::new(Db::Postgres).await;
    let alias = db.alias();
    let tweak = move |c: &mut gatehouse::config::Config| {
        if let Some((url, prefix)) = redis {
            c.redis_url = Some(gatehouse::config::SecretString::from(url));
            c.redis_prefix = prefix;
        }
    };
    let a = TestApp::spawn_on(db, tweak.clone()).await;
    let b = TestApp::spawn_on(alias, tweak).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_admit_exactly_the_credits_on_postgres_and_on_redis() {
    let (a, b) = two_instances(Some((redis_url(), redis_prefix()))).await;
    assert_eq!(a.state.keys.meter_name(), "redis");
    let owner = a.person().await;
    let (_, verifier, key, id) = setup(&a, &owner, json!({"remaining": 100})).await;
    let admitted =
        concurrent_verifications(&[a.base.clone(), b.base.clone()], &verifier, &key, 200).await;
    assert_eq!(admitted, 100);
    assert_eq!(stored(&a.db.url, &id).await, (0, 100));
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_without_redis_admit_exactly_the_credits_on_postgres() {
    let (a, b) = two_instances(None).await;
    assert_eq!(a.state.keys.meter_name(), "storage");
    let owner = a.person().await;
    let (_, verifier, key, id) = setup(&a, &owner, json!({"remaining": 100})).await;
    let admitted =
        concurrent_verifications(&[a.base.clone(), b.base.clone()], &verifier, &key, 200).await;
    assert_eq!(admitted, 100);
    assert_eq!(stored(&a.db.url, &id).await, (0, 100));
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_survive_a_redis_flush_and_an_outage_refuses_on_postgres() {
    let mut redis = OwnRedis::start();
    let (a, b) = two_instances(Some((redis.url(), redis_prefix()))).await;
    let owner = a.person().await;
    let (_, verifier, key, id) = setup(&a, &owner, json!({"remaining": 50})).await;
    assert_eq!(
        verify(&a, &verifier, &key, Some(20)).await,
        (true, "valid".into(), json!(30))
    );
    // Redis forgets everything: the balance comes back from storage, not from the setting.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let admitted =
        concurrent_verifications(&[a.base.clone(), b.base.clone()], &verifier, &key, 60).await;
    assert_eq!(admitted, 30);
    assert_eq!(stored(&a.db.url, &id).await, (0, 50));
    // Redis gone: a key with credits is refused (503), never served unmetered.
    let (_, verifier2, key2, _) = setup(&a, &owner, json!({"remaining": 5})).await;
    redis.kill();
    let (status, body) = parts(
        a.client
            .post(a.url("/v1/keys/verify"))
            .bearer_auth(&verifier2)
            .json(&json!({"key": key2}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        refusal(status, &body),
        (503, "service_unavailable", ""),
        "{body}"
    );
    // Back (empty): rebuilt from storage, nothing was spent by the refusal.
    redis.restart();
    crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "the instance reconnects to Redis",
        || async {
            let res = a
                .client
                .post(a.url("/v1/keys/verify"))
                .bearer_auth(&verifier2)
                .json(&json!({"key": key2, "cost": 0}))
                .send()
                .await
                .unwrap();
            res.status() == 200
        },
    )
    .await;
    assert_eq!(
        verify(&a, &verifier2, &key2, Some(5)).await,
        (true, "valid".into(), json!(0))
    );
    b.stop().await;
    a.stop().await;
}

/// A person, an organization, a verifier key and a key with `credits` on a running process
/// at `base`: (verifier, key).
async fn process_setup(c: &reqwest::Client, base: &str, credits: Value) -> (String, String) {
    let email = format!("credits-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, s) = parts(
        c.post(format!("{base}/auth/v1/signup"))
            .header("apikey", crate::helpers::PK)
            .json(&json!({"email": email, "password": "correct horse battery"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    let token = s["access_token"].as_str().unwrap().to_string();
    let post = |path: String, body: Value| {
        let req = c
            .post(format!("{base}/v1{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move { parts(req.send().await.unwrap()).await }
    };
    let (status, org) = post("/orgs".into(), json!({"name": "Credits"})).await;
    assert_eq!(status, 201, "{org}");
    let org = org["data"]["id"].as_str().unwrap().to_string();
    let keys = format!("/orgs/{org}/api-keys");
    let (status, v) = post(
        keys.clone(),
        json!({"name": "v", "scopes": ["keys:verify"]}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, k) = post(keys, json!({"name": "k", "credits": credits})).await;
    assert_eq!(status, 201, "{k}");
    (
        v["data"]["key"].as_str().unwrap().to_string(),
        k["data"]["key"].as_str().unwrap().to_string(),
    )
}

async fn acknowledged_spends_survive_kill_9(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = crate::helpers::tempdir::Dir::new();
    let c = reqwest::Client::new();
    let mut server = crate::process::start_with(&test_db.url, &dir, &[]).await;
    let (verifier, key) = process_setup(&c, &server.base, json!({"remaining": 10})).await;
    for remaining in [8, 6, 4] {
        assert_eq!(
            verify_on(&c, &server.base, &verifier, &key, Some(2)).await,
            (true, "valid".into(), json!(remaining))
        );
    }
    server.child.kill().unwrap(); // SIGKILL: nothing is flushed
    server.child.wait().unwrap();
    let again = crate::process::start_with(&test_db.url, &dir, &[]).await;
    // Every answered spend was in storage before its answer: 4 left, not 10.
    assert_eq!(
        verify_on(&c, &again.base, &verifier, &key, Some(5)).await,
        (false, "usage_exceeded".into(), json!(4))
    );
    assert_eq!(
        verify_on(&c, &again.base, &verifier, &key, Some(4)).await,
        (true, "valid".into(), json!(0))
    );
    drop(again);
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spends_survive_kill_9_on_sqlite() {
    acknowledged_spends_survive_kill_9(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spends_survive_kill_9_on_postgres() {
    acknowledged_spends_survive_kill_9(Db::Postgres).await;
}

story!(
    a_chat_spends_a_credit_of_its_key_and_is_not_served_at_zero,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Chat credits").await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &owner.token,
                Some(
                    json!({"name": "chat", "scopes": ["chat:write"], "credits": {"remaining": 1}}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let key = body["data"]["key"].as_str().unwrap().to_string();
        let ask = || {
            app.call(
                Method::POST,
                "/chat",
                &key,
                Some(json!({"message": "hello"})),
            )
        };
        let (status, body) = ask().await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = ask().await;
        assert_eq!(
            refusal(status, &body),
            (402, "credits_exhausted", ""),
            "{body}"
        );
        app
    }
);

/// Rolls key `id` of `org` with an hour's grace: (new key, new id).
async fn roll(app: &TestApp, owner: &Person, org: &str, id: &str) -> (String, String) {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/api-keys/{id}/roll"),
            &owner.token,
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["data"]["credits"]["remaining"], 10,
        "the balance carried on: {body}"
    );
    (
        body["data"]["key"].as_str().unwrap().to_string(),
        body["data"]["id"].as_str().unwrap().to_string(),
    )
}

/// The balance `GET …/api-keys/{id}` shows.
async fn shown(app: &TestApp, owner: &Person, org: &str, id: &str) -> Value {
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/orgs/{org}/api-keys/{id}"),
            &owner.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["credits"]["remaining"].clone()
}

/// `n` concurrent uses of cost 1, alternating between `keys` and `bases`: how many were
/// admitted.
async fn split_uses(bases: &[String], verifier: &str, keys: [&str; 2], n: usize) -> usize {
    let c = reqwest::Client::new();
    let results: Vec<bool> = stream::iter(0..n)
        .map(|i| {
            let (c, base) = (c.clone(), bases[i % bases.len()].clone());
            let key = keys[(i / bases.len()) % 2];
            async move { verify_on(&c, &base, verifier, key, Some(1)).await.0 }
        })
        .buffer_unordered(n)
        .collect()
        .await;
    results.into_iter().filter(|v| *v).count()
}

/// The credits ledger's total for `ids`.
async fn ledger_total(db_url: &str, ids: &[&str]) -> i64 {
    let mut total = 0;
    for id in ids {
        total += stored(db_url, id).await.1;
    }
    total
}

/// A key with 12 credits spends 2, is rolled with a grace period, and 20 uses split across
/// the old and the new key (on `bases`) admit exactly the 10 left.
async fn roll_keeps_the_credits(app: &TestApp, bases: &[String]) {
    let owner = app.person().await;
    let (org, verifier, old, old_id) = setup(app, &owner, json!({"remaining": 12})).await;
    assert_eq!(
        verify(app, &verifier, &old, Some(2)).await,
        (true, "valid".into(), json!(10))
    );
    let (new, new_id) = roll(app, &owner, &org, &old_id).await;
    // One balance, not two: 20 uses across both keys admit exactly 10.
    assert_eq!(split_uses(bases, &verifier, [&old, &new], 20).await, 10);
    for key in [&old, &new] {
        assert_eq!(
            verify(app, &verifier, key, None).await,
            (false, "usage_exceeded".into(), json!(0))
        );
    }
    assert_eq!(shown(app, &owner, &org, &new_id).await, 0);
    assert_eq!(shown(app, &owner, &org, &old_id).await, 0);
    // Storage holds the one balance (on the line's first key) and every spend once, each
    // under the key that spent it.
    assert_eq!(stored(&app.db.url, &old_id).await.0, 0);
    assert_eq!(ledger_total(&app.db.url, &[&old_id, &new_id]).await, 12);
    // Setting the credits on the new key sets the line's: the old key sees them at once.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/orgs/{org}/api-keys/{new_id}"),
            &owner.token,
            Some(json!({"credits": {"remaining": 3}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        verify(app, &verifier, &old, None).await,
        (true, "valid".into(), json!(2))
    );
    assert_eq!(
        verify(app, &verifier, &new, None).await,
        (true, "valid".into(), json!(1))
    );
    // Rolled again within the grace period: still the one balance, across three keys.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/api-keys/{new_id}/roll"),
            &owner.token,
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["credits"]["remaining"], 1);
    let third = body["data"]["key"].as_str().unwrap().to_string();
    assert_eq!(
        verify(app, &verifier, &third, None).await,
        (true, "valid".into(), json!(0))
    );
    assert_eq!(
        verify(app, &verifier, &old, None).await,
        (false, "usage_exceeded".into(), json!(0))
    );
}

story!(
    a_rolled_key_continues_the_balance_and_shares_it_with_the_old_key_during_grace,
    |app: TestApp| async move {
        let bases = [app.base.clone()];
        roll_keeps_the_credits(&app, &bases).await;
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_key_shares_one_balance_across_two_instances_on_postgres_and_on_redis() {
    let (a, b) = two_instances(Some((redis_url(), redis_prefix()))).await;
    assert_eq!(a.state.keys.meter_name(), "redis");
    roll_keeps_the_credits(&a, &[a.base.clone(), b.base.clone()]).await;
    b.stop().await;
    a.stop().await;
}

/// A change of the credit settings reaches every key of the roll line: the old key, used
/// after the change, refills by the new rule; and so does a record of it that was read before
/// the change (a use in flight, or a cache an invalidation has not reached yet).
async fn a_settings_change_reaches_every_key_of_the_line(app: &TestApp, clock: &Clock) {
    let owner = app.person().await;
    let credits = json!({"remaining": 10, "refill": {"interval": "daily", "amount": 4}});
    let (org, verifier, old, old_id) = setup(app, &owner, credits).await;
    assert_eq!(
        verify(app, &verifier, &old, None).await,
        (true, "valid".into(), json!(9))
    );
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/api-keys/{old_id}/roll"),
            &owner.token,
            Some(json!({"grace_seconds": 7 * 86_400})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let new = body["data"]["key"].as_str().unwrap().to_string();
    let new_id = body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        verify(app, &verifier, &new, None).await,
        (true, "valid".into(), json!(8))
    );
    // The old key's record as this instance holds it, under the settings of before.
    let before = app.state.keys.check(&old).await.unwrap();
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/orgs/{org}/api-keys/{new_id}"),
            &owner.token,
            Some(
                json!({"credits": {"remaining": 5, "refill": {"interval": "daily", "amount": 7}}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        verify(app, &verifier, &old, None).await,
        (true, "valid".into(), json!(4))
    );
    // The next day the old key refills by the new rule (7), not the old one (4).
    clock.advance_ms(DAY);
    assert_eq!(
        verify(app, &verifier, &old, None).await,
        (true, "valid".into(), json!(6))
    );
    // And a record from before the change spends under the new rule too, the day after.
    clock.advance_ms(DAY);
    let spent = app.state.keys.spend(&before, 1).await.unwrap().unwrap();
    assert!(spent.admitted);
    assert_eq!(spent.balance.remaining, 6, "refilled to 7, not to 4");
    assert_eq!(
        verify(app, &verifier, &new, None).await,
        (true, "valid".into(), json!(5))
    );
    // (The owner's access token has expired by now: storage tells.)
    assert_eq!(stored(&app.db.url, &old_id).await.0, 5);
}

story!(
    a_credit_settings_change_reaches_every_key_of_the_roll_line,
    setup: |db| clocked(db, T0, |_| {}),
    |(app, clock): (TestApp, Clock)| async move {
        a_settings_change_reaches_every_key_of_the_line(&app, &clock).await;
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_settings_change_reaches_every_key_of_the_roll_line_on_postgres_and_on_redis() {
    let (url, prefix) = (redis_url(), redis_prefix());
    let (app, clock) = clocked(Db::Postgres, T0, move |c| {
        c.redis_url = Some(gatehouse::config::SecretString::from(url));
        c.redis_prefix = prefix;
    })
    .await;
    assert_eq!(app.state.keys.meter_name(), "redis");
    a_settings_change_reaches_every_key_of_the_line(&app, &clock).await;
    app.stop().await;
}
