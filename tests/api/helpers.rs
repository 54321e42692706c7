//! Test helpers: a real server per test ([`TestApp`]), fresh databases ([`TestDb`]), and
//! [`story!`], which runs one story on SQLite and on PostgreSQL.
//!
//! **Naming convention: a test that needs a service says so in its name.** A test that needs
//! PostgreSQL has `on_postgres` in its full name (module path included: `story!` makes
//! `name::on_postgres`), one that needs the shared Redis `on_redis` (the scale-out module is
//! `scaleout_on_postgres_on_redis`). [`postgres_url`] and [`redis_url`] panic when the service
//! is not configured, and when the calling test's name lacks the marker; `naming.rs` scans the
//! sources for the same. `scripts/test` runs `cargo nextest` with a filter that leaves out the
//! tests of a missing service (`-E 'not test(/on_postgres/)'`), so they show as skipped in
//! its summary and are never counted as passed. A test on its own redis-server ([`OwnRedis`])
//! needs no marker.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use gatehouse::app::AppState;
use gatehouse::clock::Clock;
use gatehouse::config::{Config, DatabasePooler, SecretString};
use gatehouse::ratelimit::{Rate, Rates};
use gatehouse::server;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The publishable key every test server uses.
pub const PK: &str = "gk_publishable_test";

/// Which engine a story runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A database for one test: a fresh SQLite file or a fresh PostgreSQL database.
pub struct TestDb {
    /// A direct URL: what the test itself reads storage with.
    pub url: String,
    /// The same database through a PgBouncer in transaction mode, when
    /// `GATEHOUSE_TEST_PGBOUNCER_URL` names one (`scripts/test` starts one and runs the
    /// PostgreSQL tests through it a second time): servers the helpers start use it.
    pub pooled_url: Option<String>,
    _dir: Option<tempdir::Dir>,
    /// The admin URL and the database's name, until it is dropped.
    pg_admin: std::sync::Mutex<Option<(String, String)>>,
}

pub mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir()
                .join(format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The test-name marker of a test that needs PostgreSQL (see the module documentation).
pub const NEEDS_POSTGRES: &str = "on_postgres";
/// The test-name marker of a test that needs the shared Redis.
pub const NEEDS_REDIS: &str = "on_redis";

/// The value of `var`, for a test whose name carries `marker`. Panics (never skips) when the
/// variable is unset: `scripts/test` leaves such tests out of the run, so reaching this
/// without the service is a misconfiguration, and a misnamed test fails even with the service.
fn service_url(var: &str, marker: &str) -> String {
    // libtest (and so nextest) names the thread that runs a test after the test; the body of
    // a `#[tokio::test]` runs on that thread. Spawned tasks run on tokio's workers, whose
    // names say nothing: only the test's own thread is checked.
    if let Some(name) = std::thread::current().name() {
        if name != "main" && !name.starts_with("tokio-") && !name.contains(marker) {
            panic!(
                "test {name} uses {var} but its name lacks `{marker}`: without the service \
                 scripts/test could not leave it out (see tests/api/helpers.rs)"
            );
        }
    }
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "{var} is not set, and this test needs it; run ./scripts/test, which leaves out \
             the tests named `*{marker}*` when their service is missing"
        ),
    }
}

/// The PostgreSQL admin URL, `GATEHOUSE_TEST_POSTGRES_URL`; only for tests whose name
/// contains [`NEEDS_POSTGRES`].
pub fn postgres_url() -> String {
    service_url("GATEHOUSE_TEST_POSTGRES_URL", NEEDS_POSTGRES)
}

/// The shared Redis URL, `GATEHOUSE_TEST_REDIS_URL`; only for tests whose name contains
/// [`NEEDS_REDIS`].
pub fn redis_url() -> String {
    service_url("GATEHOUSE_TEST_REDIS_URL", NEEDS_REDIS)
}

/// How long a change may take to reach another instance in a test. Fan-out takes
/// milliseconds and the promise is "within a second"; the bound allows for a loaded 2-core
/// test machine and still tells fan-out from its absence (a cached copy lives 60 s).
pub const FANOUT_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// A key prefix of its own for one test, so runs and tests never share counters.
pub fn redis_prefix() -> String {
    format!("ghtest-{}", uuid::Uuid::new_v4().simple())
}

/// A redis-server of the test's own, for tests that stop Redis. Never the machine's shared
/// instance. Stopped on drop.
///
/// redis-server cannot report a port it chose, so this picks a free one and passes it: a
/// port taken in between makes the server exit at once, and `start` then tries another.
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts one and waits until it answers.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut r = OwnRedis { port, child: None };
            if r.try_start() {
                return r;
            }
        }
        panic!("own redis-server did not start on any of five free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Restarts the server on the same port (after [`OwnRedis::kill`]).
    pub fn restart(&mut self) {
        for _ in 0..20 {
            if self.try_start() {
                return;
            }
            // The old server's socket may linger for a moment; the port is ours to retry.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("own redis-server did not restart on {}", self.port);
    }

    /// Starts the server on `self.port`; false when it exited (the port was taken).
    fn try_start(&mut self) -> bool {
        let mut child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test");
        for _ in 0..200 {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if redis_answers(self.port, child.id()) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("own redis-server did not answer on {}", self.port);
    }

    /// Kills the server at once (an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether the redis-server with process id `pid` answers on `port` (not another one that
/// holds the port: `INFO server` names the process).
fn redis_answers(port: u16, pid: u32) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
    if s.write_all(b"INFO server\r\n").is_err() {
        return false;
    }
    let (mut seen, mut buf) = (Vec::new(), [0u8; 1024]);
    while let Ok(n @ 1..) = s.read(&mut buf) {
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(rest) = text.split("process_id:").nth(1) {
            if let Some((id, _)) = rest.split_once("\r\n") {
                return id == pid.to_string();
            }
        }
    }
    false
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestDb {
    /// A fresh database on `db`; PostgreSQL needs `GATEHOUSE_TEST_POSTGRES_URL` (and a test
    /// named after it, see [`postgres_url`]).
    pub async fn new(db: Db) -> Self {
        match db {
            Db::Sqlite => {
                let dir = tempdir::Dir::new();
                let url = format!("sqlite://{}/gatehouse.db", dir.0.display());
                TestDb {
                    url,
                    pooled_url: None,
                    _dir: Some(dir),
                    pg_admin: std::sync::Mutex::new(None),
                }
            }
            Db::Postgres => {
                let admin = postgres_url();
                let name = format!("gh_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = connect_pg(&admin).await;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let url = replace_db(&admin, &name);
                let pooled_url = std::env::var("GATEHOUSE_TEST_PGBOUNCER_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .map(|u| replace_db(&u, &name));
                TestDb {
                    url,
                    pooled_url,
                    _dir: None,
                    pg_admin: std::sync::Mutex::new(Some((admin, name))),
                }
            }
        }
    }

    /// The same database for a second server (two instances on one database): the alias
    /// never drops it; the original does.
    pub fn alias(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            pooled_url: self.pooled_url.clone(),
            _dir: None,
            pg_admin: std::sync::Mutex::new(None),
        }
    }

    /// Drops a PostgreSQL test database now (a test that ends normally); otherwise the drop
    /// guard does it.
    pub async fn cleanup(&self) {
        let taken = self.pg_admin.lock().unwrap().take();
        if let Some((admin, name)) = taken {
            drop_pg_database(&admin, &name).await;
        }
    }
}

impl Drop for TestDb {
    /// A test that panicked (or forgot [`TestDb::cleanup`]) still drops its PostgreSQL
    /// database. `Drop` cannot await, and may run inside the test's runtime: a thread of its
    /// own runs the statement on a small runtime of its own.
    fn drop(&mut self) {
        let taken = self.pg_admin.get_mut().map(Option::take).unwrap_or(None);
        if let Some((admin, name)) = taken {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_pg_database(&admin, &name));
                }
            })
            .join();
        }
    }
}

async fn drop_pg_database(admin: &str, name: &str) {
    let mut conn = connect_pg(admin).await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}

async fn connect_pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .expect("cannot reach GATEHOUSE_TEST_POSTGRES_URL")
}

fn replace_db(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// A limit no story reaches unless it means to.
pub fn generous() -> Rates {
    Rates::one(Rate::new(100_000, 60))
}

/// The configuration tests start from: autoconfirm on, generous limits.
pub fn test_config(db_url: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db_url.to_string(),
        publishable_key: Some(SecretString::from(PK)),
        autoconfirm: true,
        rate_limit_sign_in: generous(),
        rate_limit_sign_up: generous(),
        rate_limit_token_refresh: generous(),
        rate_limit_api_key: generous(),
        rate_limit_org: generous(),
        rate_limit_magic_link: generous(),
        rate_limit_verify: generous(),
        rate_limit_invitation_org: generous(),
        rate_limit_invitation_user: generous(),
        rate_limit_auth_failures: generous(),
        password_hash_concurrency: 2,
        // Without SMTP, mails go to the development outbox: never into the source tree.
        mail_outbox_dir: std::env::temp_dir()
            .join("gatehouse-test-outbox")
            .display()
            .to_string(),
        ..Config::default()
    }
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: Client,
    pub state: AppState,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// Starts a server with a fresh database; `tweak` adjusts the configuration.
    pub async fn spawn(db: Db, tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_with_clock(db, Clock::System, tweak).await
    }

    pub async fn spawn_with_clock(
        db: Db,
        clock: Clock,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        let db = TestDb::new(db).await;
        Self::spawn_on_with_clock(db, clock, tweak).await
    }

    /// Starts a server on a database made beforehand (to reach it another way, say).
    pub async fn spawn_on(db: TestDb, tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_on_with_clock(db, Clock::System, tweak).await
    }

    pub async fn spawn_on_with_clock(
        db: TestDb,
        clock: Clock,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = test_config(&db.url);
        config.public_url = format!("http://{addr}");
        if let Some(pooled) = &db.pooled_url {
            config.database_url = pooled.clone();
            config.database_pooler = DatabasePooler::Transaction;
            config.migrate_database_url = Some(db.url.clone());
        }
        tweak(&mut config);
        let state = AppState::build(config, clock).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let s = state.clone();
        let handle = tokio::spawn(async move {
            server::run(s, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let client = Client::builder().cookie_store(true).build().unwrap();
        TestApp {
            addr,
            base: format!("http://{addr}"),
            client,
            state,
            db,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        self.db.cleanup().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request to `/auth/v1` with the publishable key and the 2024-01-01 API version.
    pub fn auth(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(&format!("/auth/v1{path}")))
            .header("apikey", PK)
            .header("x-supabase-api-version", "2024-01-01")
    }

    pub async fn signup(&self, email: &str, password: &str) -> Response {
        self.auth(Method::POST, "/signup")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> Response {
        self.auth(Method::POST, "/token?grant_type=password")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn refresh(&self, token: &str) -> Response {
        self.auth(Method::POST, "/token?grant_type=refresh_token")
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap()
    }

    /// Signs up a fresh user and returns (email, password, session JSON).
    pub async fn new_user(&self) -> (String, String, Value) {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = "correct horse battery".to_string();
        let res = self.signup(&email, &password).await;
        assert_eq!(res.status(), 200, "sign-up failed");
        let session: Value = res.json().await.unwrap();
        (email, password, session)
    }

    pub async fn me(&self, bearer: &str) -> Response {
        self.client
            .get(self.url("/v1/me"))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }
}

/// Status and JSON body of a response.
pub async fn parts(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A `/v1` refusal as (status, `error.code`, `error.details.reason`), "" for an absent
/// field: one assertion pins all three (`assert_eq!(refusal(s, &b), (404, "not_found", ""))`).
pub fn refusal(status: u16, body: &Value) -> (u16, &str, &str) {
    let error = &body["error"];
    (
        status,
        error["code"].as_str().unwrap_or(""),
        error["details"]["reason"].as_str().unwrap_or(""),
    )
}

/// A refused response as "status code reason" ("401 unauthorized not_found"): `/v1`'s
/// `error.code` and `error.details.reason`, or `/auth/v1`'s `error_code` (legacy format) or
/// string `code`, which carry no reason. Reads the body.
pub async fn refused(res: Response) -> String {
    let (status, body) = parts(res).await;
    let gotrue = body["error_code"]
        .as_str()
        .or_else(|| body["code"].as_str())
        .unwrap_or("");
    let (_, code, reason) = refusal(status, &body);
    let code = if code.is_empty() { gotrue } else { code };
    format!("{status} {code} {reason}").trim_end().to_string()
}

/// Runs a story on SQLite and on PostgreSQL, one test per engine in a module named after the
/// story (`name::on_sqlite`, `name::on_postgres`: the second carries the PostgreSQL marker):
///
/// - `story!(name, |app: TestApp| async move { …; app })`: the default test config;
/// - `story!(name, |c: &mut Config| …, body)`: the config changed first;
/// - `story!(name, setup: |db| …, body)`: `setup(db)` starts the server and whatever else
///   the story needs (a mock, a mail sink, a clock) and returns it as one value `S` (a tuple,
///   say); the body takes that `S` and hands back the `TestApp` to stop.
///
/// The one place that runs a story on both engines: [`run_story`] does the work.
#[macro_export]
macro_rules! story {
    ($name:ident, setup: $setup:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                $crate::helpers::run_story($crate::helpers::Db::Sqlite, $setup, $body).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                $crate::helpers::run_story($crate::helpers::Db::Postgres, $setup, $body).await;
            }
        }
    };
    ($name:ident, $body:expr) => {
        $crate::story!($name, |_c| {}, $body);
    };
    ($name:ident, $tweak:expr, $body:expr) => {
        $crate::story!(
            $name,
            setup: |db| $crate::helpers::TestApp::spawn(db, $tweak),
            $body
        );
    };
}

/// One story on one engine: `setup(db)`, then `body`, then the server stops and its database
/// is dropped (on a panic, [`TestDb`]'s drop guard drops it).
pub async fn run_story<S, SetupFut, BodyFut>(
    db: Db,
    setup: impl FnOnce(Db) -> SetupFut,
    body: impl FnOnce(S) -> BodyFut,
) where
    SetupFut: std::future::Future<Output = S>,
    BodyFut: std::future::Future<Output = TestApp>,
{
    let s = setup(db).await;
    body(s).await.stop().await;
}

/// A server on `db` with a manual clock starting at `t0` (ms), for stories that move time:
/// `story!(name, setup: |db| clocked(db, T0, |c| …), |(app, clock)| async move { … })`.
pub async fn clocked(db: Db, t0: i64, tweak: impl FnOnce(&mut Config)) -> (TestApp, Clock) {
    let clock = Clock::manual(t0);
    let app = TestApp::spawn_with_clock(db, clock.clone(), tweak).await;
    (app, clock)
}

/// A signed-up person with a live access token.
pub struct Person {
    pub email: String,
    pub id: String,
    pub token: String,
}

impl TestApp {
    /// Signs up a fresh person.
    pub async fn person(&self) -> Person {
        let (email, _, s) = self.new_user().await;
        Person {
            email,
            id: s["user"]["id"].as_str().unwrap().to_string(),
            token: s["access_token"].as_str().unwrap().to_string(),
        }
    }

    /// A `/v1` request with a bearer credential (JWT or API key).
    pub fn v1(&self, method: Method, path: &str, bearer: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(&format!("/v1{path}")))
            .bearer_auth(bearer)
    }

    /// Sends a `/v1` request and returns status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.v1(method, path, bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        parts(req.send().await.unwrap()).await
    }

    /// Creates an organization owned by `owner`; returns its id.
    pub async fn org(&self, owner: &Person, name: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/orgs",
                &owner.token,
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["data"]["id"].as_str().unwrap().to_string()
    }

    /// Adds `who` to `org` with `role` (as `by`).
    /// Members join by invitation only: `by` invites, `who` accepts.
    pub async fn add(&self, by: &Person, org: &str, who: &Person, role: &str) {
        self.add_by_token(&by.token, org, who, role).await;
    }

    /// [`TestApp::add`] with the inviter's token.
    pub async fn add_by_token(&self, by: &str, org: &str, who: &Person, role: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/orgs/{org}/invitations"),
                by,
                Some(json!({"email": who.email, "role": role})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["data"]["id"].as_str().unwrap();
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/invitations/{id}/accept"),
                &who.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Creates a key in `org` (as `by`); returns (key, id).
    pub async fn key(&self, by: &Person, org: &str, scopes: &[&str]) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &by.token,
                Some(json!({"name": "test key", "scopes": scopes})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["data"]["key"].as_str().unwrap().to_string(),
            body["data"]["id"].as_str().unwrap().to_string(),
        )
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `within`. For
/// promises such as "within a second": the bound is a generous ceiling, never a timing.
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what} (waited {within:?})");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A pool on a test database, for checking what storage holds.
pub async fn sql(db_url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(db_url).await.unwrap()
}

/// Waits until `n` instances listen on the deployment's invalidation channel (`{prefix}:invalidate`
/// on the Redis at `url`), so no test races the subscription each instance makes at start.
pub async fn wait_until_subscribed(url: &str, prefix: &str, n: i64) {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let channel = format!("{prefix}:invalidate");
    for _ in 0..200 {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        if count >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{n} instances did not subscribe to {channel}");
}
