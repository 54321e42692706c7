use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A limit of `limit` requests per `window_seconds`, written `"20/60s"` in configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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

    /// Parses `N/W` where W is seconds with an optional unit: `60`, `60s`, `5m`, `1h`, `1d`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (n, w) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?} is not of the form N/60s"))?;
        let limit: u32 = n
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
        let window: u32 = digits
            .parse()
            .map_err(|_| format!("rate {s:?}: bad window"))?;
        let window_seconds = window
            .checked_mul(mult)
            .ok_or_else(|| format!("rate {s:?}: window too long"))?;
        if limit == 0 || window_seconds == 0 {
            return Err(format!("rate {s:?}: count and window must be positive"));
        }
        Ok(Self {
            limit,
            window_seconds,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.limit, self.window_seconds)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Rate::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The outcome of one limiter decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The window's limit.
    pub limit: u32,
    /// The window length in seconds.
    pub window_seconds: u32,
    /// Requests still admitted right now.
    pub remaining: u32,
    /// Unix seconds at which the window is fully replenished.
    pub reset_at: i64,
    /// Seconds to wait before retrying (0 when admitted).
    pub retry_after: u64,
}

/// GCRA on integer milliseconds. `tat` is the theoretical arrival time stored per key.
///
/// Admits a request at `now` when `tat' = max(tat, now) + T` stays within `now + window`,
/// where `T = window / limit` is the emission interval; this admits `limit` requests in a
/// burst and then one every `T`. Returns the decision and the new `tat` (unchanged on deny).
pub fn gcra(rate: Rate, tat: i64, now_ms: i64) -> (Decision, i64) {
    let window = i64::from(rate.window_seconds) * 1000;
    let interval = (window / i64::from(rate.limit)).max(1);
    let base = tat.max(now_ms);
    let new_tat = base + interval;
    if new_tat - now_ms > window {
        let wait_ms = new_tat - now_ms - window;
        let decision = Decision {
            allowed: false,
            limit: rate.limit,
            window_seconds: rate.window_seconds,
            remaining: 0,
            reset_at: ceil_div(base, 1000),
            retry_after: ceil_div(wait_ms, 1000).max(1) as u64,
        };
        return (decision, tat);
    }
    let remaining =
        ((window - (new_tat - now_ms)) / interval).clamp(0, i64::from(rate.limit)) as u32;
    let decision = Decision {
        allowed: true,
        limit: rate.limit,
        window_seconds: rate.window_seconds,
        remaining,
        reset_at: ceil_div(new_tat, 1000),
        retry_after: 0,
    };
    (decision, new_tat)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1).div_euclid(b)
}

/// An in-process limiter: one atomic `tat` per key, idle keys evicted after their window.
#[derive(Clone)]
pub struct MemoryLimiter {
    cells: moka::sync::Cache<String, Arc<AtomicI64>>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLimiter {
    /// A limiter holding at most a million keys, each forgotten a day after its last use.
    pub fn new() -> Self {
        Self {
            cells: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
        }
    }

    /// Decides one request for `key` under `rate` at `now_ms`.
    pub fn check(&self, key: &str, rate: Rate, now_ms: i64) -> Decision {
        let cell = self
            .cells
            .get_with_by_ref(key, || Arc::new(AtomicI64::new(0)));
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let (decision, new_tat) = gcra(rate, current, now_ms);
            if !decision.allowed {
                return decision;
            }
            match cell.compare_exchange_weak(current, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return decision,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_with_units() {
        assert_eq!(Rate::parse("20/60s"), Ok(Rate::new(20, 60)));
        assert_eq!(Rate::parse("150/5m"), Ok(Rate::new(150, 300)));
        assert_eq!(Rate::parse("10000/1d"), Ok(Rate::new(10000, 86400)));
        assert_eq!(Rate::parse("5/60"), Ok(Rate::new(5, 60)));
        assert!(Rate::parse("0/60s").is_err());
        assert!(Rate::parse("abc").is_err());
    }

    #[test]
    fn admits_a_full_burst_then_denies_with_exact_retry_after() {
        let rate = Rate::new(5, 60);
        let mut tat = 0;
        let now = 1_000_000;
        for i in 0..5 {
            let (d, t) = gcra(rate, tat, now);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
            tat = t;
        }
        let (d, t) = gcra(rate, tat, now);
        assert!(!d.allowed);
        assert_eq!(t, tat, "a denied request consumes nothing");
        assert_eq!(d.retry_after, 12);
        // One emission interval later exactly one more is admitted.
        let (d, _) = gcra(rate, tat, now + 12_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn memory_limiter_keeps_keys_apart() {
        let l = MemoryLimiter::new();
        let rate = Rate::new(1, 60);
        assert!(l.check("a", rate, 5_000).allowed);
        assert!(!l.check("a", rate, 5_000).allowed);
        assert!(l.check("b", rate, 5_000).allowed);
        assert!(l.check("a", rate, 65_000).allowed);
    }
}
