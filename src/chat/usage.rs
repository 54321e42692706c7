//! Usage counters: counted in memory on the request path, written behind in batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::upstream::Tokens;
use crate::clock::Clock;
use crate::store::{Store, StoreError, UsageDelta};

const HOUR_MS: i64 = 3_600_000;

/// (organization, key or `""`, hour start in unix ms).
type UsageKey = (String, String, i64);

/// Requests and tokens per (organization, key, hour) not yet written.
#[derive(Clone)]
pub struct Usage {
    store: Store,
    clock: Clock,
    pending: Arc<Mutex<HashMap<UsageKey, UsageDelta>>>,
}

impl Usage {
    /// Counters over `store`.
    pub fn new(store: Store, clock: Clock) -> Self {
        Self {
            store,
            clock,
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Counts one request.
    pub fn count(&self, org_id: &str, key_id: Option<&str>, tokens: Tokens) {
        let hour = self.clock.now_ms().div_euclid(HOUR_MS) * HOUR_MS;
        if let Ok(mut p) = self.pending.lock() {
            let d = p
                .entry((org_id.to_string(), key_id.unwrap_or("").to_string(), hour))
                .or_default();
            d.requests += 1;
            d.prompt_tokens += tokens.prompt as i64;
            d.completion_tokens += tokens.completion as i64;
        }
    }

    /// Writes what is pending; on failure keeps it for the next try.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let batch: Vec<_> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => return Ok(0),
        };
        let n = batch.len();
        if let Err(e) = self.store.add_usage(&batch).await {
            if let Ok(mut p) = self.pending.lock() {
                for (k, d) in batch {
                    let slot = p.entry(k).or_default();
                    slot.requests += d.requests;
                    slot.prompt_tokens += d.prompt_tokens;
                    slot.completion_tokens += d.completion_tokens;
                }
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Flushes every `every` until the process ends.
    pub async fn write_behind(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "writing usage counters failed; will retry");
            }
        }
    }
}
