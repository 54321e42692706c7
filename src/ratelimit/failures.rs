//! The addresses whose credentials failed lately, kept so that only they are asked about at
//! the limiter's `auth_failures` budget.

use std::net::IpAddr;
use std::time::Duration;

use super::Rates;

/// Addresses whose credentials failed lately, on this instance.
///
/// Only they are asked about at the limiter, so the traffic of clients that never fail
/// (nearly all of it) pays one memory lookup here rather than a limiter decision (a Redis
/// round trip with `redis_url`). An entry lives as long as the longest window: a budget
/// untouched that long is full again. With several instances, an address over its shared
/// budget costs one storage read on each instance it has not failed on yet; the failure
/// noted then sends its next request to the limiter.
#[derive(Clone)]
pub struct FailureBudget {
    recent: moka::sync::Cache<IpAddr, ()>,
}

impl FailureBudget {
    /// Remembers up to 100,000 failing addresses for the longest of `rates`' windows.
    pub fn new(rates: &Rates) -> Self {
        let longest = rates.0.iter().map(|r| r.window_seconds).max().unwrap_or(60);
        Self {
            recent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(u64::from(longest)))
                .build(),
        }
    }

    /// Whether a credential from `bucket` failed lately.
    pub fn failed_lately(&self, bucket: &IpAddr) -> bool {
        self.recent.contains_key(bucket)
    }

    /// Notes a failed credential from `bucket`.
    pub fn failed(&self, bucket: IpAddr) {
        self.recent.insert(bucket, ());
    }
}
