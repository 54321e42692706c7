//! The delivery worker: claims due deliveries (so no two instances send the same attempt),
//! signs each attempt afresh, sends it, and records the outcome and the next attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{signing, ssrf, Webhooks, DISABLE_AFTER_MS, RESPONSE_CAP};
use crate::metrics::Metrics;
use crate::store::{AttemptResult, ClaimedDelivery};

/// Attempts in flight at once on one instance. A slow endpoint holds one slot for up to
/// the timeout; the others keep going.
const IN_FLIGHT: usize = 32;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// The running worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    grace: Duration,
}

/// What the worker works with: the service (its store, clock, client and schedule) and the
/// metrics that count attempts.
#[derive(Clone)]
struct Deps {
    webhooks: Arc<Webhooks>,
    metrics: Arc<Metrics>,
}

/// Starts the worker of this instance.
pub fn spawn(webhooks: Arc<Webhooks>, metrics: Arc<Metrics>) -> Worker {
    let (stop, rx) = watch::channel(false);
    let grace = webhooks.timeout + Duration::from_secs(2);
    let handle = tokio::spawn(run(Deps { webhooks, metrics }, rx));
    Worker {
        stop,
        handle,
        grace,
    }
}

impl Worker {
    /// Stops after the attempts in flight (bounded by the delivery timeout); an attempt cut
    /// short is sent again once its claim lapses.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut handle = self.handle;
        if tokio::time::timeout(self.grace, &mut handle).await.is_err() {
            handle.abort();
        }
    }
}

/// A claim outlives the slowest attempt and the write of its result.
fn lease(w: &Webhooks) -> Duration {
    w.timeout * 2 + Duration::from_secs(1)
}

async fn run(deps: Deps, mut stop: watch::Receiver<bool>) {
    let w = &deps.webhooks;
    let wake = w.store.webhook_wake();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let lease_ms = i64::try_from(lease(w).as_millis()).unwrap_or(i64::MAX);
    while !*stop.borrow() {
        let free = slots.available_permits();
        let claimed = if free == 0 {
            Ok(Vec::new())
        } else {
            let now = w.clock.now_ms();
            let limit = i64::try_from(free).unwrap_or(1);
            w.store.claim_webhook_deliveries(now, lease_ms, limit).await
        };
        let claimed = claimed.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "webhook worker: could not claim deliveries");
            Vec::new()
        });
        let full = free == 0 || claimed.len() == free;
        for d in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let deps = deps.clone();
            tokio::spawn(async move {
                deliver(&deps, d).await;
                drop(permit);
            });
        }
        if full {
            // More may be due: claim again as soon as a slot frees up.
            tokio::select! {
                _ = stop.changed() => break,
                _ = slots.acquire() => {},
            }
        } else {
            tokio::select! {
                _ = stop.changed() => break,
                _ = wake.notified() => {},
                _ = tokio::time::sleep(w.poll) => {},
            }
        }
    }
    // Let the attempts in flight finish (Worker::stop bounds the wait).
    let _ = slots.acquire_many(IN_FLIGHT as u32).await;
}

/// What an endpoint answered.
struct Answer {
    status: Option<u16>,
    body: String,
    retry_after: Option<Duration>,
}

/// One attempt in a trace of its own when tracing is on (the endpoint continues it from
/// `traceparent`); no span otherwise.
async fn deliver(deps: &Deps, d: ClaimedDelivery) {
    let span = if crate::telemetry::enabled() {
        let span = tracing::info_span!(parent: None, "webhook", otel.name = "webhook delivery", otel.kind = "client", event_type = %d.event_type, message_id = %d.message_id, endpoint_id = %d.endpoint_id, trace_id = tracing::field::Empty);
        crate::telemetry::record_trace_id(&span);
        span
    } else {
        tracing::Span::none()
    };
    attempt(deps, d).instrument(span).await;
}

async fn attempt(deps: &Deps, d: ClaimedDelivery) {
    let w = &deps.webhooks;
    let started = Instant::now();
    let answer = send(w, &d, w.clock.now_secs()).await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let now = w.clock.now_ms();
    let succeeded = answer.status.is_some_and(|s| (200..300).contains(&s));
    let gone = answer.status == Some(410);
    let retry_at = if succeeded || gone {
        None
    } else {
        let attempts_made = usize::try_from(d.attempts + 1).unwrap_or(usize::MAX);
        w.delay_before(attempts_made).map(|delay| {
            let delay = match answer.retry_after {
                Some(asked) => delay.max(asked.min(MAX_RETRY_AFTER)),
                None => delay,
            };
            now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2)
        })
    };
    deps.metrics.webhook_attempt(succeeded);
    if !succeeded {
        crate::telemetry::failed(&tracing::Span::current(), "the delivery failed");
    }
    let res = AttemptResult {
        status_code: answer.status.map(i64::from),
        latency_ms,
        response: answer.body,
        succeeded,
        retry_at,
        gone,
    };
    tracing::info!(
        message_id = %d.message_id,
        endpoint_id = %d.endpoint_id,
        attempt = d.attempts + 1,
        status = ?answer.status,
        latency_ms,
        "webhook attempt"
    );
    // A result that cannot be written leaves the claim to lapse (2 × timeout + 1 s) before the
    // next attempt, so a passing storage hiccup is retried a few times first; recording is
    // guarded by the claim, so a retry never writes twice.
    for pause_ms in [100, 400, 1600, 0] {
        match w
            .store
            .finish_webhook_attempt(&d, &res, now, DISABLE_AFTER_MS)
            .await
        {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(delivery_id = %d.id, "webhook claim lapsed before its result was recorded");
                return;
            }
            Err(e) if pause_ms == 0 => {
                tracing::warn!(error = %e, delivery_id = %d.id, "could not record a webhook attempt");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(pause_ms)).await,
        }
    }
}

/// Signs and sends one attempt.
async fn send(w: &Webhooks, d: &ClaimedDelivery, timestamp: i64) -> Answer {
    let failed = |why: String| Answer {
        status: None,
        body: cap(why),
        retry_after: None,
    };
    let url = match ssrf::parse(&d.url) {
        Ok(u) => u,
        Err(why) => return failed(format!("the URL {why}")),
    };
    if let Err(why) = ssrf::check_literal(&url, w.allow_private) {
        return failed(why);
    }
    let secrets: Vec<&str> = d.secrets.iter().map(|s| s.expose_secret()).collect();
    let signature =
        signing::signature_header(&secrets, &d.message_id, timestamp, d.payload.as_bytes());
    let sent = w
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .headers(crate::telemetry::outgoing())
        .body(d.payload.clone())
        .send()
        .await;
    let mut res = match sent {
        Ok(r) => r,
        Err(e) => return failed(describe(&e)),
    };
    let status = res.status().as_u16();
    crate::telemetry::attribute(
        &tracing::Span::current(),
        "http.response.status_code",
        i64::from(status),
    );
    let retry_after = if status == 429 || status == 503 {
        res.headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after)
    } else {
        None
    };
    let mut body = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() >= RESPONSE_CAP {
                    break;
                }
            }
            Ok(None) => break,
            // The status already decides the attempt; a body cut short is still logged.
            Err(_) => break,
        }
    }
    body.truncate(RESPONSE_CAP);
    Answer {
        status: Some(status),
        body: String::from_utf8_lossy(&body).into_owned(),
        retry_after,
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = (at - time::OffsetDateTime::now_utc())
        .whole_seconds()
        .max(0);
    Some(Duration::from_secs(u64::try_from(wait).unwrap_or(0)))
}

/// A network error with its causes (connection refused, DNS refusal, timeout…).
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn cap(mut s: String) -> String {
    if s.len() > RESPONSE_CAP {
        let mut end = RESPONSE_CAP;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let text = later
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap();
        let d = retry_after(&text).unwrap();
        assert!((88..=90).contains(&d.as_secs()), "{text} -> {d:?}");
        assert_eq!(retry_after("soon"), None);
    }
}
