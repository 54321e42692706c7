//! Changes made on one instance reach the other over Redis (PostgreSQL + Redis, two real
//! processes): a logout, a dashboard sign-out, a key rolled with no grace, changed limits
//! and a deleted organization; and an instance that reconnects to Redis empties its
//! credential caches, since it may have missed messages.
//!
//! The promise is "within a second". Each wait below is a generous ceiling on a polled
//! condition, yet shorter than the cache lifetime that would otherwise end the stale state
//! (10 s for sessions, 60 s for keys and limits), so only the fan-out can pass it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::{Client, RequestBuilder};
use serde_json::{json, Value};

use crate::helpers::{
    eventually, parts, redis_prefix, redis_url, tempdir, wait_until_subscribed, Db, OwnRedis,
    TestDb, PK,
};
use crate::process::{start_with, Server};

/// Well under the 10 s session caches.
const SESSION_WAIT: Duration = Duration::from_secs(5);
/// Well under the 60 s key and limit caches.
const KEY_WAIT: Duration = Duration::from_secs(15);

/// The public URL both instances share: the tokens' issuer and the dashboard's origin.
const PUBLIC_URL: &str = "http://gatehouse.test";

/// Two instances on one PostgreSQL database and one Redis prefix.
struct Two {
    a: Server,
    b: Server,
    db: TestDb,
    _dir: tempdir::Dir,
}

impl Two {
    /// Two processes on one PostgreSQL database; `redis` overrides the shared Redis.
    async fn start(redis: Option<&str>) -> Two {
        let url = match redis {
            Some(own) => own.to_string(),
            None => redis_url(),
        };
        let db = TestDb::new(Db::Postgres).await;
        let dir = tempdir::Dir::new();
        let prefix = redis_prefix();
        let env = [
            ("GATEHOUSE_REDIS_URL", url.as_str()),
            ("GATEHOUSE_REDIS_PREFIX", prefix.as_str()),
            ("GATEHOUSE_RATE_LIMIT_ORG", "100000/60s"),
            ("GATEHOUSE_REDIS_TIMEOUT_MS", "1000"),
            ("GATEHOUSE_PUBLIC_URL", PUBLIC_URL),
            ("GATEHOUSE_LOG", "info"),
        ];
        // One after the other: the first migrates and stores the signing key.
        let a = start_with(&db.url, &dir, &env).await;
        let b = start_with(&db.url, &dir, &env).await;
        wait_until_subscribed(&url, &prefix, 2).await;
        Two {
            a,
            b,
            db,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let Two { a, b, db, _dir } = self;
        drop((a, b));
        db.cleanup().await;
    }
}

async fn send(req: RequestBuilder) -> (u16, Value) {
    parts(req.send().await.unwrap()).await
}

/// A person signed up on `base`, with an organization: (session, org id).
async fn owner(c: &Client, base: &str) -> (Value, String) {
    let email = format!("fanout-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, session) = send(
        c.post(format!("{base}/auth/v1/signup"))
            .header("apikey", PK)
            .json(&json!({"email": email, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let (status, org) = send(
        c.post(format!("{base}/v1/orgs"))
            .bearer_auth(session["access_token"].as_str().unwrap())
            .json(&json!({"name": "Fan-out"})),
    )
    .await;
    assert_eq!(status, 201, "{org}");
    (session, org["data"]["id"].as_str().unwrap().to_string())
}

fn token(session: &Value) -> &str {
    session["access_token"].as_str().unwrap()
}

/// A key of `org` with its own window of 1000 an hour: (secret, id).
async fn key(c: &Client, base: &str, token: &str, org: &str) -> (String, String) {
    let (status, k) = send(
        c.post(format!("{base}/v1/orgs/{org}/api-keys"))
            .bearer_auth(token)
            .json(&json!({"name": "k", "scopes": [],
                "rate_limits": [{"limit": 1000, "window_seconds": 3600}]})),
    )
    .await;
    assert_eq!(status, 201, "{k}");
    (
        k["data"]["key"].as_str().unwrap().to_string(),
        k["data"]["id"].as_str().unwrap().to_string(),
    )
}

/// `GET /v1/me` on `base` with an API key: status, body and `X-RateLimit-Limit`.
async fn me_with_key(c: &Client, base: &str, key: &str) -> (u16, Value, String) {
    let res = c
        .get(format!("{base}/v1/me"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let limit = res
        .headers()
        .get("x-ratelimit-limit")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (status, body) = parts(res).await;
    (status, body, limit)
}

/// Waits until `base` refuses `key` with a 401 of `reason`; every answer before must be 200.
async fn key_refused(c: &Client, base: &str, key: &str, reason: &str, what: &str) {
    eventually(KEY_WAIT, what, || async {
        let (status, body, _) = me_with_key(c, base, key).await;
        if status == 401 {
            assert_eq!(body["error"]["details"]["reason"], reason, "{body}");
            return true;
        }
        assert_eq!(
            status, 200,
            "until it hears of it, B uses its cache: {body}"
        );
        false
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_ends_its_jwt_on_the_other_on_postgres_on_redis() {
    let two = Two::start(None).await;
    let c = Client::new();
    let (session, _) = owner(&c, &two.a.base).await;
    let me_on_b = || async {
        send(
            c.get(format!("{}/v1/me", two.b.base))
                .bearer_auth(token(&session)),
        )
        .await
    };
    assert_eq!(me_on_b().await.0, 200, "B caches the live session");
    let (status, body) = send(
        c.post(format!("{}/auth/v1/logout", two.a.base))
            .header("apikey", PK)
            .bearer_auth(token(&session)),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    eventually(SESSION_WAIT, "B refuses the signed-out JWT", || async {
        let (status, body) = me_on_b().await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
            assert_eq!(body["error"]["details"]["reason"], "revoked", "{body}");
            return true;
        }
        assert_eq!(status, 200, "{body}");
        false
    })
    .await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_sign_out_on_one_instance_reaches_the_other_on_postgres_on_redis() {
    let two = Two::start(None).await;
    let c = Client::new();
    let email = format!("dash-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, _) = send(
        c.post(format!("{}/auth/v1/signup", two.a.base))
            .header("apikey", PK)
            .json(&json!({"email": email, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200);
    let res = c
        .post(format!("{}/v1/session", two.a.base))
        .json(&json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let me_on_b = || async {
        send(
            c.get(format!("{}/v1/me", two.b.base))
                .header("cookie", &cookie),
        )
        .await
    };
    let (status, body) = me_on_b().await;
    assert_eq!(status, 200, "B caches the dashboard session: {body}");
    let (status, body) = send(
        c.delete(format!("{}/v1/session", two.a.base))
            .header("cookie", &cookie)
            .header("origin", PUBLIC_URL),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    eventually(SESSION_WAIT, "B refuses the signed-out cookie", || async {
        let (status, body) = me_on_b().await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
            return true;
        }
        assert_eq!(status, 200, "{body}");
        false
    })
    .await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rolled_with_no_grace_is_refused_by_the_other_instance_on_postgres_on_redis() {
    let two = Two::start(None).await;
    let c = Client::new();
    let (session, org) = owner(&c, &two.a.base).await;
    let (old, id) = key(&c, &two.a.base, token(&session), &org).await;
    assert_eq!(
        me_with_key(&c, &two.b.base, &old).await.0,
        200,
        "B caches the key"
    );
    let (status, rolled) = send(
        c.post(format!("{}/v1/orgs/{org}/api-keys/{id}/roll", two.a.base))
            .bearer_auth(token(&session))
            .json(&json!({"grace_seconds": 0})),
    )
    .await;
    assert_eq!(status, 201, "{rolled}");
    key_refused(&c, &two.b.base, &old, "expired", "B refuses the rolled key").await;
    let new = rolled["data"]["key"].as_str().unwrap();
    assert_eq!(
        me_with_key(&c, &two.b.base, new).await.0,
        200,
        "its successor works on B"
    );
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_limits_reach_the_other_instance_on_postgres_on_redis() {
    let two = Two::start(None).await;
    let c = Client::new();
    let (session, org) = owner(&c, &two.a.base).await;
    let (k, id) = key(&c, &two.a.base, token(&session), &org).await;
    let (status, body, limit) = me_with_key(&c, &two.b.base, &k).await;
    assert_eq!(
        (status, limit.as_str()),
        (200, "1000"),
        "B caches the key: {body}"
    );
    // The organization's limits.
    let (status, body) = send(
        c.patch(format!("{}/v1/orgs/{org}", two.a.base))
            .bearer_auth(token(&session))
            .json(&json!({"rate_limits": [{"limit": 500, "window_seconds": 3600}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        KEY_WAIT,
        "B applies the organization's new limit",
        || async {
            let (status, body, limit) = me_with_key(&c, &two.b.base, &k).await;
            assert_eq!(status, 200, "{body}");
            limit == "500"
        },
    )
    .await;
    // The key's own limits.
    let (status, body) = send(
        c.patch(format!("{}/v1/orgs/{org}/api-keys/{id}", two.a.base))
            .bearer_auth(token(&session))
            .json(&json!({"rate_limits": [{"limit": 200, "window_seconds": 3600}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(KEY_WAIT, "B applies the key's new limit", || async {
        let (status, body, limit) = me_with_key(&c, &two.b.base, &k).await;
        assert_eq!(status, 200, "{body}");
        limit == "200"
    })
    .await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_organization_s_keys_are_refused_by_the_other_instance_on_postgres_on_redis() {
    let two = Two::start(None).await;
    let c = Client::new();
    let (session, org) = owner(&c, &two.a.base).await;
    let (k, _) = key(&c, &two.a.base, token(&session), &org).await;
    assert_eq!(
        me_with_key(&c, &two.b.base, &k).await.0,
        200,
        "B caches the key"
    );
    let (status, body) = send(
        c.delete(format!("{}/v1/orgs/{org}", two.a.base))
            .bearer_auth(token(&session)),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    key_refused(
        &c,
        &two.b.base,
        &k,
        "not_found",
        "B refuses the deleted organization's key",
    )
    .await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_caches_are_emptied_when_redis_comes_back_on_postgres() {
    let mut own = OwnRedis::start();
    let two = Two::start(Some(&own.url())).await;
    let c = Client::new();
    let (session, org) = owner(&c, &two.a.base).await;
    let (k, id) = key(&c, &two.a.base, token(&session), &org).await;
    assert_eq!(
        me_with_key(&c, &two.b.base, &k).await.0,
        200,
        "B caches the key"
    );
    own.kill();
    // Revoked while Redis is down: the message is lost and B keeps its copy.
    let (status, body) = send(
        c.delete(format!("{}/v1/orgs/{org}/api-keys/{id}", two.a.base))
            .bearer_auth(token(&session)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = me_with_key(&c, &two.b.base, &k).await;
    assert_eq!(status, 200, "B still trusts its cached copy: {body}");
    own.restart();
    key_refused(
        &c,
        &two.b.base,
        &k,
        "revoked",
        "B empties its caches when Redis comes back",
    )
    .await;
    two.stop().await;
}
