//! Prometheus metrics, one registry per application (tests run many side by side).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// The `method` label: a method of RFC 9110 or PATCH by name, any other token `other`.
/// Every label value is kept for the life of the process, so a client choosing method
/// tokens must not be able to add any.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// A route pattern as a label value that lives for the process, each pattern copied once:
/// counting a request then allocates nothing. Patterns come from the router (a bounded
/// set, never a raw path), so what this keeps is bounded too.
pub fn route_label(route: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{LazyLock, RwLock};
    static ROUTES: LazyLock<RwLock<HashSet<&'static str>>> =
        LazyLock::new(|| RwLock::new(HashSet::new()));
    if let Some(r) = ROUTES.read().unwrap_or_else(|p| p.into_inner()).get(route) {
        return r;
    }
    let mut routes = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    match routes.get(route) {
        Some(r) => r,
        None => {
            let r: &'static str = Box::leak(route.to_owned().into_boxed_str());
            routes.insert(r);
            r
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

type HistogramMaker = fn() -> Histogram;

/// The application's counters and histograms.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, HistogramMaker>,
    decisions: Family<DecisionLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    redis_fallbacks: Counter,
    invalidations: Family<ReasonLabels, Counter>,
    widget_rejections: Family<ReasonLabels, Counter>,
    webhook_attempts: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<RouteLabels, Histogram, HistogramMaker> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18)));
        let decisions = Family::<DecisionLabels, Counter>::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let redis_fallbacks = Counter::default();
        let invalidations = Family::<ReasonLabels, Counter>::default();
        let widget_rejections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by matched route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by matched route",
            latency.clone(),
        );
        registry.register(
            "ratelimit_decisions",
            "Rate-limit decisions by policy and outcome (allowed, denied, unavailable)",
            decisions.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused credentials by reason",
            auth_failures.clone(),
        );
        registry.register(
            "ratelimit_redis_fallbacks",
            "Decisions made in memory because Redis did not answer",
            redis_fallbacks.clone(),
        );
        registry.register(
            "cache_invalidations_received",
            "Cache invalidations received from other instances, by kind",
            invalidations.clone(),
        );
        registry.register(
            "widget_rejections",
            "Refused public widget requests by reason (origin_not_allowed, bad_token, bad_signature, …)",
            widget_rejections.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome (succeeded, failed)",
            webhook_attempts.clone(),
        );
        Self {
            widget_rejections,
            webhook_attempts,
            registry,
            requests,
            latency,
            decisions,
            auth_failures,
            redis_fallbacks,
            invalidations,
        }
    }

    /// Counts one finished request. `route` must be a route pattern (a bounded set), never
    /// a raw path; `method` is labelled by [`method_label`].
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let route = route_label(route);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method_label(method),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// Counts one rate-limit decision.
    pub fn limit_decision(&self, policy: &'static str, outcome: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { policy, outcome })
            .inc();
    }

    /// Counts one refused credential.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one decision made in memory because Redis did not answer.
    pub fn redis_fallback(&self) {
        self.redis_fallbacks.inc();
    }

    /// Counts one invalidation received from another instance.
    pub fn invalidation(&self, kind: &'static str) {
        self.invalidations
            .get_or_create(&ReasonLabels { reason: kind })
            .inc();
    }

    /// Counts one refused widget request.
    pub fn widget_rejection(&self, reason: &'static str) {
        self.widget_rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one webhook delivery attempt.
    pub fn webhook_attempt(&self, succeeded: bool) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.webhook_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_become_labels() {
        let m = Metrics::new();
        m.request("/v1/me", "GET", 200, 0.001);
        m.request("/v1/me", "BREW", 405, 0.001);
        m.request("/v1/me", "get", 405, 0.001);
        m.request("/v1/me", &"X".repeat(1000), 405, 0.001);
        let text = m.render();
        assert!(text.contains("method=\"GET\""), "{text}");
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(!text.contains("BREW") && !text.contains("XXXX") && !text.contains("\"get\""));
    }
}
