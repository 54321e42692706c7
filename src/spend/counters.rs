//! The counters that enforce budgets: per budget and period, the settled spend and the
//! in-flight reservations (leases that expire). In memory on one instance, in Redis across
//! instances; both follow the same rules, those of `spend.lua`:
//!
//! - a reservation is admitted when, for every hard budget, settled + in flight + the new
//!   reservation stays within the amount, and then it is added to every budget at once;
//! - a counter that is missing (new period, restart, Redis lost, or a lease that expired and
//!   may hide a settle) is seeded from the ledger before anything is decided;
//! - a settle removes the lease and adds the cost, once: a lease that is gone adds nothing
//!   (the ledger holds the cost, and the counter is recounted from it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ratelimit::RedisLink;

/// One budget's counter for one period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `{scope}:{id}:{period}:{period start}`.
    pub counter: String,
    /// The amount, or `None` for a soft budget (never refuses).
    pub limit: Option<i64>,
    /// How long the counter is worth keeping (ms): until its period ends, and then some.
    pub ttl_ms: i64,
}

/// What a reservation attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// Reserved against every budget.
    Done,
    /// The budget at this index would be exceeded; its settled spend.
    Exhausted(usize, i64),
    /// These counters must first be seeded from the ledger.
    NeedSeed(Vec<usize>),
}

/// Why Redis did not decide.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CounterFailure(String);

#[derive(Default)]
struct Cell {
    spent: Option<i64>,
    leases: HashMap<String, (i64, i64)>,
    expires_at: i64,
}

/// The counters of one instance.
#[derive(Clone, Default)]
pub struct Memory {
    cells: Arc<Mutex<HashMap<String, Cell>>>,
}

/// Counters kept past this many are pruned of the expired.
const PRUNE_ABOVE: usize = 10_000;

impl Memory {
    /// Reserves `amount` under `lease` (until `expires`) against every target, or nothing.
    pub fn reserve(
        &self,
        targets: &[Target],
        lease: &str,
        amount: i64,
        now: i64,
        expires: i64,
    ) -> Reserved {
        let Ok(mut cells) = self.cells.lock() else {
            return Reserved::NeedSeed((0..targets.len()).collect());
        };
        if cells.len() > PRUNE_ABOVE {
            cells.retain(|_, c| c.expires_at > now || !c.leases.is_empty());
        }
        let mut need = Vec::new();
        let mut state = Vec::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            let cell = cells.entry(t.counter.clone()).or_default();
            let before = cell.leases.len();
            cell.leases.retain(|_, (_, e)| *e > now);
            if cell.leases.len() != before {
                cell.spent = None;
            }
            let inflight: i64 = cell.leases.values().map(|(a, _)| *a).sum();
            match cell.spent {
                Some(s) => state.push((s, inflight)),
                None => {
                    need.push(i);
                    state.push((0, inflight));
                }
            }
        }
        if !need.is_empty() {
            return Reserved::NeedSeed(need);
        }
        for (i, (t, (spent, inflight))) in targets.iter().zip(&state).enumerate() {
            if let Some(limit) = t.limit {
                if spent.saturating_add(*inflight).saturating_add(amount) > limit {
                    return Reserved::Exhausted(i, *spent);
                }
            }
        }
        for t in targets {
            let cell = cells.entry(t.counter.clone()).or_default();
            cell.leases.insert(lease.to_string(), (amount, expires));
            cell.expires_at = cell.expires_at.max(now + t.ttl_ms).max(expires);
        }
        Reserved::Done
    }

    /// Sets missing counters to the ledger's sums.
    pub fn seed(&self, seeds: &[(&Target, i64)], now: i64) {
        if let Ok(mut cells) = self.cells.lock() {
            for (t, v) in seeds {
                let cell = cells.entry(t.counter.clone()).or_default();
                if cell.spent.is_none() {
                    cell.spent = Some(*v);
                }
                cell.expires_at = cell.expires_at.max(now + t.ttl_ms);
            }
        }
    }

    /// Ends `lease`: for each pair (reservation's counter, settle-time counter) the lease is
    /// removed from the first and, if it was there, `cost` added to the second (when known).
    /// Answers the new settled spend per pair, when known.
    pub fn settle(&self, pairs: &[(&str, &str)], lease: &str, cost: i64) -> Vec<Option<i64>> {
        let Ok(mut cells) = self.cells.lock() else {
            return vec![None; pairs.len()];
        };
        pairs
            .iter()
            .map(|(reserved, now)| {
                let held = cells
                    .get_mut(*reserved)
                    .and_then(|c| c.leases.remove(lease))
                    .is_some();
                if !held {
                    return None;
                }
                let cell = cells.get_mut(*now)?;
                let s = cell.spent.as_mut()?;
                *s = s.saturating_add(cost);
                Some(*s)
            })
            .collect()
    }

    /// Moves a held lease's expiry.
    pub fn renew(&self, counters: &[&str], lease: &str, expires: i64) {
        if let Ok(mut cells) = self.cells.lock() {
            for c in counters {
                if let Some(l) = cells.get_mut(*c).and_then(|c| c.leases.get_mut(lease)) {
                    l.1 = expires;
                }
            }
        }
    }

    /// Settled spend and in-flight total of a counter, if known (tests, reports).
    pub fn peek(&self, counter: &str) -> Option<(Option<i64>, i64)> {
        let cells = self.cells.lock().ok()?;
        let c = cells.get(counter)?;
        Some((c.spent, c.leases.values().map(|(a, _)| *a).sum()))
    }
}

/// The counters in Redis, shared by every instance.
#[derive(Clone)]
pub struct RedisCounters {
    link: RedisLink,
    script: Arc<redis::Script>,
}

impl RedisCounters {
    /// Counters over `link`.
    pub fn new(link: RedisLink) -> Self {
        Self {
            link,
            script: Arc::new(redis::Script::new(include_str!("spend.lua"))),
        }
    }

    fn keys(&self, tag: &str, counter: &str) -> (String, String) {
        let base = self.link.key(&format!("spend:{{{tag}}}:{counter}"));
        (base.clone(), format!("{base}:res"))
    }

    async fn run(&self, inv: redis::ScriptInvocation<'_>) -> Result<Vec<i64>, CounterFailure> {
        let mut conn = self
            .link
            .connection()
            .ok_or_else(|| CounterFailure("Redis is not connected".into()))?;
        let wait = self.link.timeout.max(Duration::from_millis(250));
        tokio::time::timeout(wait, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| CounterFailure("Redis timed out".into()))?
            .map_err(|e| CounterFailure(e.to_string()))
    }

    /// [`Memory::reserve`] in Redis; `tag` is the organization (every key shares it).
    pub async fn reserve(
        &self,
        tag: &str,
        targets: &[Target],
        lease: &str,
        amount: i64,
        now: i64,
        expires: i64,
    ) -> Result<Reserved, CounterFailure> {
        let mut inv = self.script.prepare_invoke();
        for t in targets {
            let (s, r) = self.keys(tag, &t.counter);
            inv.key(s).key(r);
        }
        inv.arg("reserve")
            .arg(now)
            .arg(lease)
            .arg(amount)
            .arg(expires);
        for t in targets {
            inv.arg(t.limit.unwrap_or(-1));
        }
        let reply = self.run(inv).await?;
        match reply.first() {
            Some(1) => Ok(Reserved::Done),
            Some(0) if reply.len() == 3 => Ok(Reserved::Exhausted(
                usize::try_from(reply[1] - 1).unwrap_or(0),
                reply[2],
            )),
            Some(2) => Ok(Reserved::NeedSeed(
                reply[1..]
                    .iter()
                    .map(|i| usize::try_from(i - 1).unwrap_or(0))
                    .collect(),
            )),
            _ => Err(CounterFailure("unexpected reply".into())),
        }
    }

    /// [`Memory::seed`] in Redis.
    pub async fn seed(
        &self,
        tag: &str,
        seeds: &[(&Target, i64)],
        now: i64,
    ) -> Result<(), CounterFailure> {
        let mut inv = self.script.prepare_invoke();
        for (t, _) in seeds {
            let (s, r) = self.keys(tag, &t.counter);
            inv.key(s).key(r);
        }
        inv.arg("seed").arg(now);
        for (t, v) in seeds {
            inv.arg(*v).arg(t.ttl_ms.max(1000));
        }
        self.run(inv).await.map(|_| ())
    }

    /// [`Memory::settle`] in Redis.
    pub async fn settle(
        &self,
        tag: &str,
        pairs: &[(&str, &str)],
        lease: &str,
        cost: i64,
        now: i64,
    ) -> Result<Vec<Option<i64>>, CounterFailure> {
        let mut inv = self.script.prepare_invoke();
        for (reserved, at) in pairs {
            inv.key(self.keys(tag, at).0)
                .key(self.keys(tag, reserved).1);
        }
        inv.arg("settle").arg(now).arg(lease).arg(cost);
        let reply = self.run(inv).await?;
        Ok(reply
            .iter()
            .skip(1)
            .map(|v| (*v >= 0).then_some(*v))
            .collect())
    }

    /// [`Memory::renew`] in Redis.
    pub async fn renew(
        &self,
        tag: &str,
        counters: &[&str],
        lease: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), CounterFailure> {
        let mut inv = self.script.prepare_invoke();
        for c in counters {
            let (s, r) = self.keys(tag, c);
            inv.key(s).key(r);
        }
        inv.arg("renew").arg(now).arg(lease).arg(expires);
        self.run(inv).await.map(|_| ())
    }
}
