//! Usage counters: counted in memory on the request path, written behind in batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::upstream::Tokens;
use crate::clock::Clock;
use crate::ids::{KeyId, OrgId};
use crate::store::{ExportRow, Store, StoreError, UsageDelta, UsageRow};

const HOUR_MS: i64 = 3_600_000;

/// (organization, key or `""`, hour start in unix ms).
type UsageKey = (String, String, i64);

/// Per hour start, per key id: (organization, admitted, refused).
type Traffic = HashMap<i64, HashMap<String, (String, i64, i64)>>;

/// Requests and tokens per (organization, key, hour) not yet written.
#[derive(Clone)]
pub struct Usage {
    store: Store,
    clock: Clock,
    pending: Arc<Mutex<HashMap<UsageKey, UsageDelta>>>,
    /// API-key requests per hour and key: (organization, admitted, refused).
    traffic: Arc<Mutex<Traffic>>,
}

impl Usage {
    /// Counters over `store`.
    pub fn new(store: Store, clock: Clock) -> Self {
        Self {
            store,
            clock,
            pending: Arc::new(Mutex::new(HashMap::new())),
            traffic: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// An organization's usage in `[from, to)`, per bucket of `bucket_ms` and key (only
    /// `key` when given).
    pub async fn report(
        &self,
        org: &OrgId,
        from: i64,
        to: i64,
        bucket_ms: i64,
        key: Option<&KeyId>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let key = key.map(KeyId::as_str);
        let mut rows = self
            .store
            .usage(org.as_str(), from, to, bucket_ms, key)
            .await?;
        // Cost comes from the spend ledger, the numbers budgets are enforced with.
        let mut costs: HashMap<(i64, Option<String>), i64> = HashMap::new();
        for s in self
            .store
            .spend_report(org.as_str(), from, to, bucket_ms, key)
            .await?
        {
            *costs.entry((s.start, s.key_id)).or_default() += s.cost;
        }
        for r in &mut rows {
            if let Some(c) = costs.remove(&(r.start, r.key_id.clone())) {
                r.cost = c;
            }
        }
        for ((start, key_id), cost) in costs {
            rows.push(UsageRow {
                start,
                key_id,
                requests: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                api_requests: 0,
                rate_limited: 0,
                cost,
            });
        }
        rows.sort_by(|a, b| (a.start, &a.key_id).cmp(&(b.start, &b.key_id)));
        Ok(rows)
    }

    /// An organization's messages since `since` (unix ms), oldest first, as a stream.
    pub fn export(
        &self,
        org: &OrgId,
        since: i64,
    ) -> impl futures_util::Stream<Item = Result<ExportRow, StoreError>> + Send + 'static {
        self.store.export_rows(org.as_str().to_string(), since)
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

    /// Counts one request made with an API key: admitted, or refused by a rate limit. The
    /// request path only takes a lock and bumps a counter (no allocation once the key has
    /// been seen this hour).
    pub fn count_key_request(&self, org_id: &str, key_id: &str, limited: bool) {
        let hour = self.clock.now_ms().div_euclid(HOUR_MS) * HOUR_MS;
        if let Ok(mut t) = self.traffic.lock() {
            let per_key = t.entry(hour).or_default();
            let slot = match per_key.get_mut(key_id) {
                Some(slot) => slot,
                None => per_key
                    .entry(key_id.to_string())
                    .or_insert_with(|| (org_id.to_string(), 0, 0)),
            };
            if limited {
                slot.2 += 1;
            } else {
                slot.1 += 1;
            }
        }
    }

    /// Writes what is pending; on failure keeps it for the next try.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let traffic: Vec<_> = match self.traffic.lock() {
            Ok(mut t) => t.drain().collect(),
            Err(_) => Vec::new(),
        };
        let batch: Vec<_> = match self.pending.lock() {
            Ok(mut p) => {
                for (hour, keys) in traffic {
                    for (key, (org, admitted, limited)) in keys {
                        let d = p.entry((org, key, hour)).or_default();
                        d.api_requests += admitted;
                        d.rate_limited += limited;
                    }
                }
                p.drain().collect()
            }
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
                    slot.api_requests += d.api_requests;
                    slot.rate_limited += d.rate_limited;
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
