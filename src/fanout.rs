//! Cache invalidation between instances: a change on one instance is published over Redis
//! and applied by every other within milliseconds. Without Redis (or while it is down) the
//! caches' own lifetimes bound how long another instance may act on stale state.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::ratelimit::RedisLink;

/// What another instance must forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// An API key, by the SHA-256 of the key (revoked, rolled, changed, deleted).
    Key(String),
    /// A refresh session, by id (signed out).
    Session(String),
    /// An organization's rate limits, by id.
    Org(String),
    /// A dashboard session, by the SHA-256 of the cookie.
    WebSession(String),
    /// A widget, by id (changed, secret rotated, deleted).
    Widget(String),
    /// A person's organizations as `/v1/me` lists them, by user id, or [`EVERYONE`] when
    /// an organization or a role changed for all its members.
    Memberships(String),
    /// An OAuth grant, by id (revoked).
    OAuthGrant(String),
}

/// The id of [`Invalidation::Memberships`] that forgets every person's list.
pub const EVERYONE: &str = "*";

impl Invalidation {
    /// The message on the channel: `kind:id`.
    pub fn encode(&self) -> String {
        match self {
            Invalidation::Key(h) => format!("key:{h}"),
            Invalidation::Session(id) => format!("session:{id}"),
            Invalidation::Org(id) => format!("org:{id}"),
            Invalidation::WebSession(h) => format!("web:{h}"),
            Invalidation::Widget(id) => format!("widget:{id}"),
            Invalidation::Memberships(id) => format!("memberships:{id}"),
            Invalidation::OAuthGrant(id) => format!("oauth_grant:{id}"),
        }
    }

    /// Reads a message; `None` for anything else.
    pub fn decode(msg: &str) -> Option<Self> {
        let (kind, id) = msg.split_once(':')?;
        if id.is_empty() || id.len() > 128 {
            return None;
        }
        let id = id.to_string();
        Some(match kind {
            "key" => Invalidation::Key(id),
            "session" => Invalidation::Session(id),
            "org" => Invalidation::Org(id),
            "web" => Invalidation::WebSession(id),
            "widget" => Invalidation::Widget(id),
            "memberships" => Invalidation::Memberships(id),
            "oauth_grant" => Invalidation::OAuthGrant(id),
            _ => return None,
        })
    }

    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Invalidation::Key(_) => "key",
            Invalidation::Session(_) => "session",
            Invalidation::Org(_) => "org",
            Invalidation::WebSession(_) => "web_session",
            Invalidation::Widget(_) => "widget",
            Invalidation::Memberships(_) => "memberships",
            Invalidation::OAuthGrant(_) => "oauth_grant",
        }
    }
}

/// What holds the caches an invalidation may concern (the application's services).
/// The bus calls it for changes made here and for changes other instances publish.
pub trait Forget: Send + Sync {
    /// Forgets what `inv` names, on this instance.
    fn forget<'a>(&'a self, inv: &'a Invalidation) -> BoxFuture<'a, ()>;
    /// Empties every credential cache (after invalidations may have been missed).
    fn forget_everything(&self);
}

/// Cache invalidation for the services: applies a change here and tells the other instances.
/// Services hold a clone; the caches are attached once they exist ([`Bus::attach`]).
#[derive(Clone)]
pub struct Bus {
    redis: Option<RedisLink>,
    metrics: Arc<Metrics>,
    caches: Arc<OnceLock<Weak<dyn Forget>>>,
}

impl Bus {
    /// A bus over `redis` (none: this instance only).
    pub fn new(redis: Option<RedisLink>, metrics: Arc<Metrics>) -> Self {
        Bus {
            redis,
            metrics,
            caches: Arc::new(OnceLock::new()),
        }
    }

    /// Attaches the caches; later calls are ignored.
    pub fn attach(&self, caches: Weak<dyn Forget>) {
        let _ = self.caches.set(caches);
    }

    /// Forgets `inv` here and on every other instance.
    pub async fn invalidate(&self, inv: Invalidation) {
        self.apply(&inv).await;
        self.publish(&inv).await;
    }

    /// Forgets `inv` on this instance only.
    pub async fn apply(&self, inv: &Invalidation) {
        if let Some(caches) = self.caches.get().and_then(Weak::upgrade) {
            caches.forget(inv).await;
        }
    }

    fn forget_everything(&self) {
        if let Some(caches) = self.caches.get().and_then(Weak::upgrade) {
            caches.forget_everything();
        }
    }

    /// The channel's name under the deployment's prefix.
    fn channel(&self) -> Option<String> {
        self.redis.as_ref().map(|r| r.key("invalidate"))
    }

    /// Tells the other instances; a failure is logged and the cache lifetime bounds the delay.
    pub async fn publish(&self, inv: &Invalidation) {
        let (Some(link), Some(channel)) = (&self.redis, self.channel()) else {
            return;
        };
        let Some(mut conn) = link.connection() else {
            tracing::warn!(
                kind = inv.kind(),
                "Redis is not connected; other instances learn of this change when their cache expires"
            );
            return;
        };
        let sent = tokio::time::timeout(
            link.timeout.max(Duration::from_millis(250)),
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(inv.encode())
                .query_async::<i64>(&mut conn),
        )
        .instrument(tracing::debug_span!(
            "redis",
            otel.name = "PUBLISH invalidation",
            otel.kind = "client",
            db.system.name = "redis"
        ))
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            tracing::warn!(kind = inv.kind(), "publishing an invalidation failed; other instances learn of this change when their cache expires");
        }
    }

    /// Applies invalidations from other instances until the process ends. After every
    /// (re)connection all caches are emptied: messages sent while disconnected are lost.
    pub async fn subscribe(self) {
        let (Some(link), Some(channel)) = (self.redis.clone(), self.channel()) else {
            return;
        };
        let mut connected_before = false;
        // In a cluster, each attempt goes to the next seed node (see ratelimit::link).
        let mut attempt = 0;
        loop {
            let connected = link.pubsub(attempt, Duration::from_secs(5)).await;
            attempt = attempt.wrapping_add(1);
            match connected {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        if connected_before {
                            tracing::info!("invalidation channel reconnected; caches emptied");
                        }
                        connected_before = true;
                        self.forget_everything();
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            let Ok(payload) = msg.get_payload::<String>() else {
                                continue;
                            };
                            if let Some(inv) = Invalidation::decode(&payload) {
                                self.metrics.invalidation(inv.kind());
                                self.apply(&inv).await;
                            }
                        }
                        tracing::warn!("invalidation channel lost; reconnecting");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "invalidation channel: Redis unreachable"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_ignored() {
        for inv in [
            Invalidation::Key("ab12".into()),
            Invalidation::Session("s-1".into()),
            Invalidation::Org("org_1".into()),
            Invalidation::WebSession("cd34".into()),
            Invalidation::Widget("wgt_1".into()),
            Invalidation::Memberships("u-1".into()),
            Invalidation::Memberships(EVERYONE.into()),
            Invalidation::OAuthGrant("oag_1".into()),
        ] {
            assert_eq!(Invalidation::decode(&inv.encode()), Some(inv));
        }
        assert_eq!(Invalidation::decode("key:"), None);
        assert_eq!(Invalidation::decode("nope:1"), None);
        assert_eq!(Invalidation::decode("garbage"), None);
    }
}
