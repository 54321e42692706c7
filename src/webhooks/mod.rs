//! Signed webhooks (Standard Webhooks): the endpoint use cases, signing, the SSRF guard,
//! and the delivery worker. Events are written to the outbox by the store, in the
//! transaction of their change.

pub mod endpoints;
pub mod signing;
pub mod ssrf;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::clock::Clock;
use crate::config::Config;
use crate::ratelimit::{Decision, Request};
use crate::store::Store;

pub use endpoints::{Actor, EndpointUpdate, NewEndpoint, WebhookError, WithSecret};

/// How long a failing endpoint keeps receiving before it is disabled.
pub const DISABLE_AFTER_MS: i64 = 5 * 86_400_000;
/// How long the old secret keeps signing after a rotation.
pub const ROTATION_GRACE_MS: i64 = 86_400_000;
/// The most response bytes kept in the delivery log.
pub const RESPONSE_CAP: usize = 4096;

/// The webhooks service: endpoints and their delivery log (see [`endpoints`]), the settings
/// and HTTP client of the delivery worker, and `rate_limit.exceeded` events.
pub struct Webhooks {
    /// Endpoints, the outbox and the delivery log.
    pub(crate) store: Store,
    /// Time.
    pub(crate) clock: Clock,
    /// Sends deliveries: no redirects, a resolver that refuses internal addresses.
    pub(crate) client: reqwest::Client,
    /// `webhooks_allow_private`, or development mode.
    pub allow_private: bool,
    /// How target names are resolved (`webhooks_dns_server`).
    pub(crate) lookup: ssrf::Lookup,
    /// Seconds before each attempt.
    pub(crate) schedule: Vec<u64>,
    /// The idle poll interval.
    pub(crate) poll: Duration,
    /// The timeout of one delivery.
    pub(crate) timeout: Duration,
    /// `rate_limit.exceeded` events already recorded here, so a flood of 429s costs storage
    /// one write per key and window, not one per request.
    recent_limits: moka::sync::Cache<String, ()>,
}

impl Webhooks {
    /// From the configuration, over `store`.
    pub fn new(config: &Config, store: Store, clock: Clock) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(config.webhooks_timeout_ms);
        let lookup = ssrf::Lookup::new(config.webhooks_dns_server);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(ssrf::GuardedResolver {
                allow_private: config.webhooks_private_allowed(),
                lookup: lookup.clone(),
            }))
            // An HTTP(S)_PROXY in the environment would connect on the worker's behalf,
            // around the address checks.
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("Gatehouse-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            clock,
            client,
            allow_private: config.webhooks_private_allowed(),
            lookup,
            schedule: config.webhooks_retry_schedule.clone(),
            poll: Duration::from_millis(config.webhooks_poll_interval_ms),
            timeout,
            recent_limits: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(86_400))
                .build(),
        })
    }

    /// Records `rate_limit.exceeded` for an API key's refused request: at most one event per
    /// key and window (per window-length period, across instances), written off the request path.
    pub fn rate_limited(&self, store: &Store, clock: &Clock, req: &Request, d: &Decision) {
        let Some(key_id) = req
            .windows
            .iter()
            .find(|w| w.policy == crate::config::Policy::ApiKey.name())
            .map(|w| w.subject.clone())
        else {
            return;
        };
        self.limited(store, clock, req, d, Limited::Requests { key_id: &key_id });
    }

    /// Records `rate_limit.exceeded` for a chat a token window refused (`policy`
    /// `key_tokens`, `org_tokens`, `widget_tokens` or `visitor_tokens`; `window` names the
    /// setting, `limit` is in tokens), as [`Webhooks::rate_limited`] does for requests.
    pub fn tokens_limited(
        &self,
        store: &Store,
        clock: &Clock,
        req: &Request,
        d: &Decision,
        key_id: Option<&str>,
        widget_id: Option<&str>,
    ) {
        self.limited(store, clock, req, d, Limited::Tokens { key_id, widget_id });
    }

    fn limited(&self, store: &Store, clock: &Clock, req: &Request, d: &Decision, by: Limited<'_>) {
        let Some(org) = req.tag.strip_prefix("org:") else {
            return;
        };
        let now = clock.now_ms();
        for (w, s) in req.windows.iter().zip(&d.windows) {
            if s.retry_after == 0 {
                continue;
            }
            let window_ms = i64::from(w.rate.window_seconds.max(1)) * 1000;
            let (limit, secs) = (w.rate.limit, w.rate.window_seconds);
            let dedup = format!(
                "rate_limit:{}:{}:{limit}/{secs}:{}",
                w.subject,
                w.policy,
                now / window_ms
            );
            if self.recent_limits.contains_key(&dedup) {
                continue;
            }
            self.recent_limits.insert(dedup.clone(), ());
            let data = match by {
                Limited::Requests { key_id } => json!({
                    "org_id": org,
                    "key_id": key_id,
                    "policy": w.policy,
                    "limit": limit,
                    "window_seconds": secs,
                    "retry_after": s.retry_after,
                }),
                Limited::Tokens { key_id, widget_id } => {
                    let window = match (w.policy, secs) {
                        ("visitor_tokens", _) => "visitor_tokens_per_day",
                        (_, 60) => "tokens_per_minute",
                        _ => "tokens_per_day",
                    };
                    let mut data = json!({
                        "org_id": org,
                        "key_id": key_id,
                        "policy": w.policy,
                        "window": window,
                        "unit": "tokens",
                        // The decision's limit is in tokens (the window may count in steps).
                        "limit": s.limit,
                        "window_seconds": secs,
                        "retry_after": s.retry_after,
                    });
                    if let Some(wid) = widget_id {
                        data["widget_id"] = json!(wid);
                    }
                    data
                }
            };
            let (store, org) = (store.clone(), org.to_string());
            tokio::spawn(async move {
                if let Err(e) = store.record_rate_limit_event(&org, data, &dedup, now).await {
                    tracing::warn!(error = %e, "could not record a rate_limit.exceeded event");
                }
            });
        }
    }

    /// The delay before attempt `n` (0-based: 0 is the first), with up to 10% jitter so
    /// endpoints that fail together do not retry together; `None` past the schedule.
    pub fn delay_before(&self, n: usize) -> Option<Duration> {
        let secs = *self.schedule.get(n)?;
        let ms = secs.saturating_mul(1000);
        let jitter = if ms >= 10 {
            rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ms / 10)
        } else {
            0
        };
        Some(Duration::from_millis(ms.saturating_add(jitter)))
    }
}

/// Who a refused decision was counting.
#[derive(Clone, Copy)]
enum Limited<'a> {
    /// An API key's request windows.
    Requests { key_id: &'a str },
    /// A chat's token windows: the key or the widget that asked.
    Tokens {
        key_id: Option<&'a str>,
        widget_id: Option<&'a str>,
    },
}
