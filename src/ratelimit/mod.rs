//! Rate limits: GCRA maths once ([`gcra`]), over windows decided all-or-nothing, with two
//! backends (memory, Redis) behind one [`Limiter`].
//!
//! Semantics, exactly: a window `limit/W` has emission interval `T = W / limit`. Each window
//! keeps a theoretical arrival time `tat`. A request at `now` would move it to
//! `tat' = max(tat, now) + T` and is admitted when `tat' - now <= W`. So `limit` requests
//! pass in one instant, then one per `T`; idle time refills the window continuously. The
//! arithmetic is integer, in units of `1/limit` ms, so `T` is exact for every limit.
//! A request is decided against every window that applies at once: it is admitted only if
//! all admit, and a denial writes nothing (a burst refused by the minute window does not
//! drain the day window).

pub mod failures;
mod leases;
mod limiter;
mod link;
mod memory;
pub mod noted;
pub mod quiet;
mod redis;

pub use failures::FailureBudget;
pub use leases::{Lease, LeaseError, LeaseSpec, Leases};
pub use limiter::{Limiter, LimiterError};
pub use link::{RedisConn, RedisLink, RedisSettings};
pub use memory::MemoryLimiter;
pub use quiet::Quiet;
pub use redis::{Joint, RedisFailure, RedisLimiter, Then};

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest accepted limit of one window.
pub const MAX_LIMIT: u32 = 1_000_000;
/// The longest accepted window: 30 days.
pub const MAX_WINDOW_SECONDS: u32 = 30 * 86_400;
/// The most windows one policy may have.
pub const MAX_WINDOWS: usize = 8;

/// A limit of `limit` requests per `window_seconds`, written `"20/60s"` in configuration.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Rate {
    /// Requests admitted per window.
    pub limit: u32,
    /// Window length in seconds.
    pub window_seconds: u32,
}

impl Rate {
    /// A rate of `limit` per `window_seconds`.
    pub const fn new(limit: u32, window_seconds: u32) -> Self {
        Self {
            limit,
            window_seconds,
        }
    }

    /// Checks the bounds: a positive limit up to [`MAX_LIMIT`], a window of 1 s to 30 days.
    pub fn checked(limit: u64, window_seconds: u64) -> Result<Self, String> {
        if limit == 0 || limit > u64::from(MAX_LIMIT) {
            return Err(format!("limit must be between 1 and {MAX_LIMIT}"));
        }
        if window_seconds == 0 || window_seconds > u64::from(MAX_WINDOW_SECONDS) {
            return Err(format!(
                "window_seconds must be between 1 and {MAX_WINDOW_SECONDS}"
            ));
        }
        Ok(Self::new(limit as u32, window_seconds as u32))
    }

    /// Parses `N/W` where W is seconds with an optional unit: `60`, `60s`, `5m`, `1h`, `1d`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (n, w) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?} is not of the form N/60s"))?;
        let limit: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("rate {s:?}: bad count"))?;
        let w = w.trim();
        let (digits, mult) = match w.chars().last() {
            Some('s') => (&w[..w.len() - 1], 1),
            Some('m') => (&w[..w.len() - 1], 60),
            Some('h') => (&w[..w.len() - 1], 3600),
            Some('d') => (&w[..w.len() - 1], 86400),
            _ => (w, 1),
        };
        let digits = if digits.is_empty() { "1" } else { digits };
        let window: u64 = digits
            .parse()
            .map_err(|_| format!("rate {s:?}: bad window"))?;
        Self::checked(limit, window.saturating_mul(mult)).map_err(|e| format!("rate {s:?}: {e}"))
    }

    fn window_ms(self) -> i128 {
        i128::from(self.window_seconds) * 1000
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.limit, self.window_seconds)
    }
}

/// The windows of one policy, all of which must admit a request.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Rates(pub Vec<Rate>);

impl Rates {
    /// One window.
    pub fn one(rate: Rate) -> Self {
        Self(vec![rate])
    }

    /// Checks a list: 1 to [`MAX_WINDOWS`] windows of distinct lengths.
    pub fn checked(rates: Vec<Rate>) -> Result<Self, String> {
        if rates.is_empty() || rates.len() > MAX_WINDOWS {
            return Err(format!("give between 1 and {MAX_WINDOWS} windows"));
        }
        let mut lengths: Vec<u32> = rates.iter().map(|r| r.window_seconds).collect();
        lengths.sort_unstable();
        lengths.dedup();
        if lengths.len() != rates.len() {
            return Err("two windows have the same length".into());
        }
        Ok(Self(rates))
    }

    /// The API form.
    pub fn specs(&self) -> Vec<RateLimitSpec> {
        self.0
            .iter()
            .map(|r| RateLimitSpec {
                limit: r.limit.into(),
                window_seconds: r.window_seconds.into(),
            })
            .collect()
    }

    /// Parses `"60/60s, 1000/1h"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rates = s
            .split(',')
            .map(Rate::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Self::checked(rates)
    }
}

impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl Serialize for Rates {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Rates {
    /// A string `"60/60s,1000/1h"` or a list of such strings.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        match Form::deserialize(d)? {
            Form::One(s) => Rates::parse(&s),
            Form::Many(v) => v
                .iter()
                .map(|s| Rate::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .and_then(Rates::checked),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// One window as the API takes and shows it.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests admitted per window (1-1,000,000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub limit: u64,
    /// Window length in seconds (1-2,592,000).
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub window_seconds: u64,
}

/// One window of a decision: which counter, under which rate.
#[derive(Clone, Debug)]
pub struct Window {
    /// The policy it belongs to (`api_key`, `org`, `sign_in`, …), for headers and metrics.
    pub policy: &'static str,
    /// Whose counter: a key id, an org id, an IP.
    pub subject: String,
    /// The rate.
    pub rate: Rate,
    /// What this request costs in the window: 1 for a request, a reservation of tokens for
    /// a token window (at most the window's limit, or it could never be admitted).
    pub cost: u32,
}

impl Window {
    /// The counter's name within its decision's tag; a changed rate starts a new counter.
    pub fn cell(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.policy, self.subject, self.rate.limit, self.rate.window_seconds
        )
    }
}

/// What one request asks of the limiter.
#[derive(Clone, Debug)]
pub struct Request {
    /// Every counter of one decision shares this tag (a Redis Cluster hash tag, a memory
    /// lock stripe), e.g. the organization for key traffic, the IP for sign-in.
    pub tag: String,
    /// The windows, all of which must admit.
    pub windows: Vec<Window>,
    /// When the shared backend is unreachable: refuse (503) instead of deciding in memory.
    pub fail_closed: bool,
}

impl Request {
    /// The windows of one policy's rates for one subject.
    pub fn add(&mut self, policy: &'static str, subject: &str, rates: &Rates) {
        for rate in &rates.0 {
            self.windows.push(Window {
                policy,
                subject: subject.to_string(),
                rate: *rate,
                cost: 1,
            });
        }
    }

    /// The name metrics use: the first window's policy.
    pub fn policy(&self) -> &'static str {
        self.windows.first().map_or("none", |w| w.policy)
    }
}

/// The state of one window after a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowState {
    /// The policy.
    pub policy: &'static str,
    /// The window's limit.
    pub limit: u32,
    /// The window length in seconds.
    pub window_seconds: u32,
    /// Requests still admitted right now (after this one, when it was admitted).
    pub remaining: u32,
    /// Unix seconds at which the window is fully replenished.
    pub reset_at: i64,
    /// Seconds to wait before this window admits a request (0 when it admits).
    pub retry_after: u64,
}

/// The outcome of one decision over all its windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether every window admitted the request.
    pub allowed: bool,
    /// One entry per window, in the request's order.
    pub windows: Vec<WindowState>,
}

impl Decision {
    /// The window that matters to the caller: when denied, the one with the longest wait;
    /// else the one closest to exhaustion (fewest remaining, then the latest reset).
    pub fn binding(&self) -> Option<&WindowState> {
        if self.allowed {
            self.windows
                .iter()
                .min_by_key(|w| (w.remaining, std::cmp::Reverse(w.reset_at)))
        } else {
            self.windows.iter().max_by_key(|w| w.retry_after)
        }
    }

    /// Seconds until a retry can succeed (0 when admitted).
    pub fn retry_after(&self) -> u64 {
        self.windows
            .iter()
            .map(|w| w.retry_after)
            .max()
            .unwrap_or(0)
    }
}

/// One window's step: the decision and the `tat` it would store if a request costing `cost`
/// is admitted. `tat` and the result are in units of `1/limit` ms. A cost of `c` moves `tat`
/// by `c` emission intervals, exactly as `c` requests in one instant would.
pub fn gcra(
    policy: &'static str,
    rate: Rate,
    cost: u32,
    tat: i64,
    now_ms: i64,
) -> (WindowState, i64) {
    let l = i128::from(rate.limit);
    let t = rate.window_ms(); // the emission interval, in 1/limit ms
    let window = rate.window_ms() * l;
    let now = i128::from(now_ms) * l;
    let base = i128::from(tat).max(now);
    let new_tat = base + t * i128::from(cost);
    let ahead = new_tat - now;
    let to_secs = |scaled: i128| ceil_div(scaled, l * 1000) as i64;
    if ahead > window {
        let wait_ms = ceil_div(ahead - window, l);
        let state = WindowState {
            policy,
            limit: rate.limit,
            window_seconds: rate.window_seconds,
            remaining: ((window - (base - now)) / t).clamp(0, l) as u32,
            reset_at: to_secs(base),
            retry_after: ceil_div(wait_ms, 1000).max(1) as u64,
        };
        return (state, tat);
    }
    let state = WindowState {
        policy,
        limit: rate.limit,
        window_seconds: rate.window_seconds,
        remaining: ((window - ahead) / t).clamp(0, l) as u32,
        reset_at: to_secs(new_tat),
        retry_after: 0,
    };
    (state, new_tat as i64)
}

/// Decides a request against every window: `tats` holds each window's state and is
/// updated only when all admit.
pub fn decide(windows: &[Window], tats: &mut [i64], now_ms: i64) -> Decision {
    let mut states = Vec::with_capacity(windows.len());
    let mut next = Vec::with_capacity(windows.len());
    for (w, tat) in windows.iter().zip(tats.iter()) {
        let (state, new_tat) = gcra(w.policy, w.rate, w.cost, *tat, now_ms);
        states.push(state);
        next.push(new_tat);
    }
    let allowed = states.iter().all(|s| s.retry_after == 0);
    if allowed {
        tats.copy_from_slice(&next);
    } else {
        // Nothing was consumed: report the windows that would admit as they stand.
        for (s, (w, tat)) in states.iter_mut().zip(windows.iter().zip(tats.iter())) {
            if s.retry_after == 0 {
                *s = standing(w, *tat, now_ms);
            }
        }
    }
    Decision {
        allowed,
        windows: states,
    }
}

/// A window's state without a request.
fn standing(w: &Window, tat: i64, now_ms: i64) -> WindowState {
    let l = i128::from(w.rate.limit);
    let t = w.rate.window_ms();
    let now = i128::from(now_ms) * l;
    let base = i128::from(tat).max(now);
    WindowState {
        policy: w.policy,
        limit: w.rate.limit,
        window_seconds: w.rate.window_seconds,
        remaining: ((t * l - (base - now)) / t).clamp(0, l) as u32,
        reset_at: ceil_div(base, l * 1000) as i64,
        retry_after: 0,
    }
}

/// A window's `tat` after `delta` units were charged (positive) or given back (negative)
/// outside a decision: the settle of a reservation. A charge starts from now when the window
/// is idle, as an admitted request would; a refund moves `tat` back by exactly what the
/// reservation had moved it (a `tat` in the past equals a fresh window, so going below now
/// is harmless).
pub fn adjusted(rate: Rate, delta: i64, tat: i64, now_ms: i64) -> i64 {
    let l = i128::from(rate.limit);
    let t = rate.window_ms();
    let now = i128::from(now_ms) * l;
    let moved = t * i128::from(delta);
    let next = if delta > 0 {
        i128::from(tat).max(now) + moved
    } else {
        i128::from(tat) + moved
    };
    next.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn ceil_div(a: i128, b: i128) -> i128 {
    -((-a).div_euclid(b))
}

#[cfg(test)]
mod tests;
