//! The one place Redis connections are made from the settings: one server (`redis_url`,
//! `redis://` or `rediss://`) or a Redis/Valkey Cluster (`redis_cluster_urls`, seed nodes),
//! TLS with rustls trusting `redis_ca_file` (a private CA) or else the public web roots. The
//! limiter, credits, budgets, leases, the widget replay cache, the invalidation fan-out and
//! `gatehouse config check --connect` all connect through [`RedisLink`], and use the
//! connection as [`RedisConn`] without caring which of the two it is.
//!
//! Pub/sub on a cluster: `PUBLISH` goes through the cluster connection to any node, and Redis
//! Cluster forwards every published message to every node over its bus, so one subscriber on
//! any one node hears every instance. The subscriber connects to a seed node and moves to the
//! next seed when that connection fails (see `fanout::Bus::subscribe`). Sharded pub/sub
//! (`SPUBLISH`) would need RESP3 push messages on the cluster connection for one channel of
//! low volume: no gain here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::IntoConnectionInfo;
use secrecy::{ExposeSecret, SecretString};

/// What a link connects to.
enum Target {
    /// One server (or a proxy in front of several).
    Single(redis::Client),
    /// A cluster: the client for commands, and one plain client per seed node for the
    /// subscriber.
    Cluster {
        client: redis::cluster::ClusterClient,
        seeds: Vec<redis::Client>,
    },
}

/// A connection to Redis: one server's (reconnecting) connection manager, or a cluster
/// connection that routes each command to the node holding its keys' slot and follows
/// failovers. Cheap to clone; every clone shares the connection.
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis/Valkey Cluster.
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection to Redis shared by every Redis user of the process. It connects in the
/// background when Redis is down at start, and the connection reconnects after.
#[derive(Clone)]
pub struct RedisLink {
    target: Arc<Target>,
    conn: Arc<RwLock<Option<RedisConn>>>,
    /// Every key and channel starts with this.
    pub prefix: Arc<str>,
    /// The longest wait for one command.
    pub timeout: Duration,
}

/// Builds the client of one URL, trusting `ca` (PEM) for TLS when given.
fn client(url: &str, setting: &str, ca: Option<&[u8]>) -> anyhow::Result<redis::Client> {
    let info = url
        .into_connection_info()
        .map_err(|e| anyhow::anyhow!("{setting} is not a valid Redis URL: {e}"))?;
    let client = match ca {
        Some(pem) => redis::Client::build_with_tls(info, certificates(pem)),
        None => redis::Client::open(info),
    };
    client.map_err(|e| anyhow::anyhow!("{setting}: {e}"))
}

fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// The CA certificates of `redis_ca_file`.
fn read_ca(path: &str) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("redis_ca_file: cannot read {path}: {e}"))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("redis_ca_file: {path} holds no PEM certificate");
    }
    Ok(pem)
}

/// The TLS failure in `e`'s chain, if the connection failed in the TLS handshake.
fn tls_failure(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        let io = cause.downcast_ref::<std::io::Error>()?;
        let tls = io.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(tls.to_string())
    })
}

/// The Redis settings of a deployment (from `config`, which depends on this module and not the
/// other way round).
#[derive(Clone, Debug, Default)]
pub struct RedisSettings {
    /// `redis_url`: one server.
    pub url: Option<SecretString>,
    /// `redis_cluster_urls`, already split: a cluster's seed nodes.
    pub cluster_urls: Vec<String>,
    /// `redis_ca_file`: a PEM file of the CAs to trust for `rediss://`.
    pub ca_file: Option<String>,
    /// `redis_timeout_ms`.
    pub timeout: Duration,
    /// `redis_prefix`.
    pub prefix: String,
}

impl RedisLink {
    /// The link the settings describe (`None`: no Redis), not connected yet. A bad URL or CA
    /// file is an error.
    pub fn from_config(config: &RedisSettings) -> anyhow::Result<Option<Self>> {
        let ca = config.ca_file.as_deref().map(read_ca).transpose()?;
        let ca = ca.as_deref();
        let timeout = config.timeout;
        let target = if let Some(url) = &config.url {
            Target::Single(client(url.expose_secret(), "redis_url", ca)?)
        } else if !config.cluster_urls.is_empty() {
            let seeds = config
                .cluster_urls
                .iter()
                .map(|u| client(u, "redis_cluster_urls", ca))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut builder = redis::cluster::ClusterClient::builder(
                seeds.iter().map(|s| s.get_connection_info().clone()),
            )
            .connection_timeout(timeout.max(Duration::from_millis(200)))
            .response_timeout(timeout)
            .retries(3);
            if let Some(pem) = ca {
                builder = builder.certs(certificates(pem));
            }
            let client = builder
                .build()
                .map_err(|e| anyhow::anyhow!("redis_cluster_urls: {e}"))?;
            Target::Cluster { client, seeds }
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            target: Arc::new(target),
            conn: Arc::new(RwLock::new(None)),
            prefix: config.prefix.as_str().into(),
            timeout,
        }))
    }

    /// [`Self::from_config`], connected: in the background when Redis does not answer at
    /// start (the limits are decided in memory meanwhile). A TLS handshake that fails (a
    /// certificate no trusted CA signed, say) stops the start: that is a setting to fix,
    /// not an outage to wait out.
    pub async fn open(config: &RedisSettings) -> anyhow::Result<Option<Self>> {
        let Some(link) = Self::from_config(config)? else {
            return Ok(None);
        };
        if let Err(e) = link.try_connect().await {
            if let Some(tls) = link.tls_refusal().await {
                anyhow::bail!(
                    "cannot connect to Redis over TLS: {tls}. The server's certificate must be \
                     signed by the CA in redis_ca_file (or, without it, by a public CA) and \
                     name the URL's host"
                );
            }
            tracing::warn!(error = %e, "Redis is unreachable at start; deciding limits in memory until it answers");
            let l = link.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    match l.try_connect().await {
                        Ok(()) => {
                            tracing::info!("connected to Redis");
                            return;
                        }
                        Err(e) => tracing::debug!(error = %e, "Redis still unreachable"),
                    }
                }
            });
        }
        Ok(Some(link))
    }

    /// [`Self::open`] for one server's `url` alone (tests, benchmarks).
    pub async fn open_url(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let config = RedisSettings {
            url: Some(url.to_string().into()),
            prefix: prefix.to_string(),
            timeout,
            ..RedisSettings::default()
        };
        Self::open(&config)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no Redis URL"))
    }

    async fn try_connect(&self) -> anyhow::Result<()> {
        let wait = self.timeout.max(Duration::from_millis(500));
        let conn = match &*self.target {
            Target::Single(client) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout.max(Duration::from_millis(200)))
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1)
                    .set_max_delay(1000);
                let cm =
                    tokio::time::timeout(wait, client.get_connection_manager_with_config(config))
                        .await
                        .map_err(|_| anyhow::anyhow!("timed out"))??;
                RedisConn::Single(cm)
            }
            Target::Cluster { client, .. } => {
                // Discovering the slots asks the seeds in turn: more time than one command.
                let c = tokio::time::timeout(wait * 4, client.get_async_connection())
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out"))??;
                RedisConn::Cluster(c)
            }
        };
        if let Ok(mut slot) = self.conn.write() {
            *slot = Some(conn);
        }
        Ok(())
    }

    /// Why one plain connection to the server (in a cluster, the first seed) fails in the
    /// TLS handshake, if it does. Asked after a failed connection, whose own error may be a
    /// timeout of its retries or the cluster's summary.
    async fn tls_refusal(&self) -> Option<String> {
        let client = match &*self.target {
            Target::Single(c) => c,
            Target::Cluster { seeds, .. } => seeds.first()?,
        };
        let wait = self.timeout.max(Duration::from_millis(500));
        match tokio::time::timeout(wait, client.get_multiplexed_async_connection()).await {
            Ok(Err(e)) => tls_failure(&e.into()),
            _ => None,
        }
    }

    /// The connection, once there is one.
    pub fn connection(&self) -> Option<RedisConn> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    /// A dedicated connection for subscribing: to the server, or in a cluster to seed node
    /// `attempt` modulo their number (so a subscriber whose node failed tries the next).
    /// Bounded by `wait`.
    pub async fn pubsub(
        &self,
        attempt: usize,
        wait: Duration,
    ) -> anyhow::Result<redis::aio::PubSub> {
        let client = match &*self.target {
            Target::Single(c) => c,
            Target::Cluster { seeds, .. } => &seeds[attempt % seeds.len().max(1)],
        };
        let pubsub = tokio::time::timeout(wait, client.get_async_pubsub())
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))??;
        Ok(pubsub)
    }

    /// Where the link points, without credentials: `host:port`, or the cluster's seeds.
    pub fn describe(&self) -> String {
        match &*self.target {
            Target::Single(c) => c.get_connection_info().addr.to_string(),
            Target::Cluster { seeds, .. } => format!(
                "cluster seeds {}",
                seeds
                    .iter()
                    .map(|s| s.get_connection_info().addr.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Connects and sends `PING` (`gatehouse config check --connect`): what answered.
    pub async fn ping(&self) -> anyhow::Result<String> {
        if let Err(e) = self.try_connect().await {
            return Err(match self.tls_refusal().await {
                Some(tls) => anyhow::anyhow!("TLS: {tls} (is redis_ca_file the server's CA?)"),
                None => e,
            });
        }
        let mut conn = self
            .connection()
            .ok_or_else(|| anyhow::anyhow!("not connected"))?;
        let pong: String = tokio::time::timeout(
            self.timeout.max(Duration::from_secs(2)),
            redis::cmd("PING").query_async(&mut conn),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer to PING"))??;
        Ok(format!("{} answered {pong}", self.describe()))
    }

    /// `{prefix}:{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }
}
