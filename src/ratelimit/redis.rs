//! The shared backend: one script call per decision for all its windows, Redis `TIME` as
//! the clock, every counter of a decision under one hash tag (Redis Cluster safe).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tracing::Instrument;

use super::{Decision, Request, WindowState};

/// A connection to Redis shared by the limiter and the invalidation fan-out. It connects in
/// the background when Redis is down at start, and the connection manager reconnects after.
#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    conn: Arc<RwLock<Option<ConnectionManager>>>,
    /// Every key and channel starts with this.
    pub prefix: Arc<str>,
    /// The longest wait for one command.
    pub timeout: Duration,
}

impl RedisLink {
    /// Parses `url` (a bad URL stops the start) and connects, in the background if need be.
    pub async fn open(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("redis_url is not a valid Redis URL: {e}"))?;
        let link = Self {
            client,
            conn: Arc::new(RwLock::new(None)),
            prefix: prefix.into(),
            timeout,
        };
        if let Err(e) = link.try_connect().await {
            tracing::warn!(error = %e, "Redis is unreachable at start; deciding limits in memory until it answers");
            let l = link.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    if l.try_connect().await.is_ok() {
                        tracing::info!("connected to Redis");
                        return;
                    }
                }
            });
        }
        Ok(link)
    }

    async fn try_connect(&self) -> anyhow::Result<()> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout.max(Duration::from_millis(200)))
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let cm = tokio::time::timeout(
            self.timeout.max(Duration::from_millis(500)),
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))??;
        if let Ok(mut slot) = self.conn.write() {
            *slot = Some(cm);
        }
        Ok(())
    }

    /// The connection, once there is one.
    pub fn connection(&self) -> Option<ConnectionManager> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    /// The client, for a dedicated subscriber connection.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `{prefix}:{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }
}

/// Why a Redis decision did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// No connection yet.
    #[error("not connected")]
    NotConnected,
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// Redis answered with an error, or the connection broke.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// The script answered something else than it should.
    #[error("unexpected reply")]
    Reply,
}

/// The Redis-backed limiter.
#[derive(Clone)]
pub struct RedisLimiter {
    link: RedisLink,
    script: Arc<redis::Script>,
    adjust: Arc<redis::Script>,
}

impl RedisLimiter {
    /// A limiter over `link`.
    pub fn new(link: RedisLink) -> Self {
        Self {
            link,
            script: Arc::new(redis::Script::new(include_str!("gcra.lua"))),
            adjust: Arc::new(redis::Script::new(include_str!("adjust.lua"))),
        }
    }

    /// Decides `req` in one `EVALSHA`. `now_ms` is for tests; production passes `None`
    /// and Redis's own clock decides, so instances with skewed clocks agree.
    pub async fn check(
        &self,
        req: &Request,
        now_ms: Option<i64>,
    ) -> Result<Decision, RedisFailure> {
        self.decide(req, now_ms, true).await
    }

    /// The decision `check` would make, in the same script, storing nothing.
    pub async fn peek(&self, req: &Request, now_ms: Option<i64>) -> Result<Decision, RedisFailure> {
        self.decide(req, now_ms, false).await
    }

    /// Charges or gives back `deltas` in each window of `req`, in one `EVALSHA`.
    pub async fn adjust(
        &self,
        req: &Request,
        deltas: &[i64],
        now_ms: Option<i64>,
    ) -> Result<(), RedisFailure> {
        let mut conn = self.link.connection().ok_or(RedisFailure::NotConnected)?;
        let mut inv = self.adjust.prepare_invoke();
        for w in &req.windows {
            inv.key(self.link.key(&format!("rl:{{{}}}{}", req.tag, w.cell())));
        }
        inv.arg(now_ms.map(|n| n.to_string()).unwrap_or_default());
        for (w, d) in req.windows.iter().zip(deltas) {
            inv.arg(w.rate.limit)
                .arg(u64::from(w.rate.window_seconds) * 1000)
                .arg(*d);
        }
        let _: i64 = tokio::time::timeout(self.link.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| RedisFailure::Timeout)??;
        Ok(())
    }

    async fn decide(
        &self,
        req: &Request,
        now_ms: Option<i64>,
        spend: bool,
    ) -> Result<Decision, RedisFailure> {
        let mut conn = self.link.connection().ok_or(RedisFailure::NotConnected)?;
        let mut inv = self.script.prepare_invoke();
        for w in &req.windows {
            inv.key(self.link.key(&format!("rl:{{{}}}{}", req.tag, w.cell())));
        }
        inv.arg(now_ms.map(|n| n.to_string()).unwrap_or_default());
        for w in &req.windows {
            inv.arg(w.rate.limit)
                .arg(u64::from(w.rate.window_seconds) * 1000)
                .arg(w.cost);
        }
        if !spend {
            inv.arg("peek");
        }
        let span = tracing::debug_span!(
            "redis",
            otel.name = "EVALSHA rate limit",
            otel.kind = "client",
            db.system.name = "redis"
        );
        let reply: Vec<i64> = tokio::time::timeout(self.link.timeout, inv.invoke_async(&mut conn))
            .instrument(span)
            .await
            .map_err(|_| RedisFailure::Timeout)??;
        if reply.len() != 1 + 3 * req.windows.len() {
            return Err(RedisFailure::Reply);
        }
        let windows = req
            .windows
            .iter()
            .zip(reply[1..].chunks_exact(3))
            .map(|(w, r)| WindowState {
                policy: w.policy,
                limit: w.rate.limit,
                window_seconds: w.rate.window_seconds,
                remaining: r[0].clamp(0, i64::from(u32::MAX)) as u32,
                reset_at: r[1],
                retry_after: r[2].max(0) as u64,
            })
            .collect();
        Ok(Decision {
            allowed: reply[0] == 1,
            windows,
        })
    }
}
