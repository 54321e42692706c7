//! The credit meter: where a key's balance is decided, atomically.
//!
//! - **Memory** (one instance, SQLite): a map of balances behind a mutex; storage is read
//!   once per key (and after its settings change).
//! - **Redis** (when configured): one script call per use on one hash per key
//!   (`{prefix}:cr:{key_id}`, hash-tagged), so every instance decides against the same
//!   balance. A missing hash (a first use, a flush, a restarted Redis) is filled from storage.
//! - **Storage** (PostgreSQL without Redis): one conditional `UPDATE … RETURNING` per use,
//!   exact across instances.
//!
//! Durability: memory and Redis admit a use, then write it in a group commit (one
//! transaction for every spend that arrived meanwhile, as chat exchanges are) and answer only
//! once that commit holds it. What was acknowledged is in storage, so a restart or a Redis
//! loss rebuilds the balances from storage exactly; a spend whose commit failed is given back
//! and the use is answered 503. The storage meter's update is its own commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::domain::credits::{current_period, Balance, KeyCredits, Spent};
use crate::ratelimit::RedisLink;
use crate::store::{ApiKeyRecord, CreditKey, CreditSpend, Store, StoreError};

/// Why a use was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditError {
    /// The balance is zero or below the cost: refused, nothing taken.
    Exhausted {
        /// The balance.
        remaining: i64,
    },
    /// The meter (Redis or storage) did not answer: refused, never served unmetered.
    Unavailable,
}

enum Backend {
    Memory(Mutex<HashMap<String, (i64, Balance)>>),
    Redis {
        link: RedisLink,
        spend: redis::Script,
        refund: redis::Script,
    },
    Storage,
}

/// Spends waiting for their commit, and who to tell.
type Pending = (CreditSpend, oneshot::Sender<Result<(), StoreError>>);

/// Spends one transaction stores at most.
const GROUP_COMMIT_MAX: usize = 512;

/// The meter; cheap to clone.
#[derive(Clone)]
pub struct Meter(Arc<Inner>);

struct Inner {
    backend: Backend,
    store: Store,
    commits: mpsc::Sender<Pending>,
}

const REFUND: &str = "local h = redis.call('HMGET', KEYS[1], 'g', 'p') \
    if tonumber(h[1]) == tonumber(ARGV[1]) and tonumber(h[2]) == tonumber(ARGV[2]) then \
    redis.call('HINCRBY', KEYS[1], 'r', ARGV[3]) end return 1";

impl Meter {
    /// Balances in this process (starts the group-commit task: call inside the runtime).
    pub fn memory(store: Store) -> Self {
        Self::with(store, Backend::Memory(Mutex::new(HashMap::new())))
    }

    /// Balances in Redis, shared by every instance.
    pub fn redis(store: Store, link: RedisLink) -> Self {
        Self::with(
            store,
            Backend::Redis {
                link,
                spend: redis::Script::new(include_str!("credits.lua")),
                refund: redis::Script::new(REFUND),
            },
        )
    }

    /// Balances decided by storage's conditional update.
    pub fn storage(store: Store) -> Self {
        Self::with(store, Backend::Storage)
    }

    fn with(store: Store, backend: Backend) -> Self {
        let (commits, rx) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        if !matches!(backend, Backend::Storage) {
            tokio::spawn(group_commit(store.clone(), rx));
        }
        Self(Arc::new(Inner {
            backend,
            store,
            commits,
        }))
    }

    /// The backend's name (`memory`, `redis`, `storage`).
    pub fn backend_name(&self) -> &'static str {
        match self.0.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis { .. } => "redis",
            Backend::Storage => "storage",
        }
    }

    /// Spends `cost` credits of `key` at `now_ms`. `Ok(None)`: the key has no credits
    /// (unlimited). An admitted spend is in storage when this returns.
    pub async fn spend(
        &self,
        key: &ApiKeyRecord,
        cost: i64,
        now_ms: i64,
    ) -> Result<Option<Spent>, CreditError> {
        let Some(credits) = key.credits else {
            return Ok(None);
        };
        let decided = match &self.0.backend {
            Backend::Memory(map) => self.spend_memory(map, key, credits, cost, now_ms).await?,
            Backend::Redis { link, spend, .. } => {
                self.spend_redis(link, spend, key, credits, cost, now_ms)
                    .await?
            }
            Backend::Storage => {
                let period = current_period(credits.refill.as_ref(), now_ms);
                let k = CreditKey {
                    id: &key.id,
                    org_id: &key.org_id,
                    name: &key.name,
                };
                return match self.0.store.spend_credits(k, period, cost, now_ms).await {
                    Ok(s) => refuse_exhausted(s),
                    Err(e) => {
                        tracing::error!(error = %e, "the credit meter could not reach storage");
                        Err(CreditError::Unavailable)
                    }
                };
            }
        };
        let Some((spent, gen)) = decided else {
            return Ok(None);
        };
        if !spent.admitted || cost == 0 {
            return refuse_exhausted(Some(spent));
        }
        let record = CreditSpend {
            key_id: key.id.clone(),
            org_id: key.org_id.clone(),
            key_name: key.name.clone(),
            gen,
            cost,
            balance: spent.balance,
            low: spent.low,
            exhausted: spent.exhausted,
            at: now_ms,
        };
        let (tx, rx) = oneshot::channel();
        let committed = match self.0.commits.send((record, tx)).await {
            Ok(()) => rx.await.unwrap_or(Err(StoreError::Busy)),
            Err(_) => Err(StoreError::Busy),
        };
        if let Err(e) = committed {
            tracing::error!(error = %e, "spent credits could not be stored; given back");
            self.refund(&key.id, gen, spent.balance.period, cost).await;
            return Err(CreditError::Unavailable);
        }
        Ok(Some(spent))
    }

    async fn spend_memory(
        &self,
        map: &Mutex<HashMap<String, (i64, Balance)>>,
        key: &ApiKeyRecord,
        credits: KeyCredits,
        cost: i64,
        now_ms: i64,
    ) -> Result<Option<(Spent, i64)>, CreditError> {
        let refill = credits.refill;
        for _ in 0..2 {
            {
                let mut m = map.lock().map_err(|_| CreditError::Unavailable)?;
                if let Some((gen, balance)) = m.get_mut(&key.id) {
                    if *gen >= credits.gen {
                        let s = balance.spend(refill.as_ref(), now_ms, cost);
                        *balance = s.balance;
                        return Ok(Some((s, *gen)));
                    }
                }
            }
            // Not here yet, or changed since: fill from storage, unless another use did.
            let fresh = match self.0.store.key_credits(&key.id).await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::error!(error = %e, "the credit meter could not reach storage");
                    return Err(CreditError::Unavailable);
                }
            };
            let mut m = map.lock().map_err(|_| CreditError::Unavailable)?;
            let slot = m
                .entry(key.id.clone())
                .or_insert((fresh.gen, fresh.balance));
            if slot.0 < fresh.gen {
                *slot = (fresh.gen, fresh.balance);
            }
        }
        // Storage holds an older generation than the cached record: the record is ahead of a
        // change still being applied; refuse rather than guess.
        Err(CreditError::Unavailable)
    }

    async fn spend_redis(
        &self,
        link: &RedisLink,
        script: &redis::Script,
        key: &ApiKeyRecord,
        credits: KeyCredits,
        cost: i64,
        now_ms: i64,
    ) -> Result<Option<(Spent, i64)>, CreditError> {
        let mut conn = link.connection().ok_or(CreditError::Unavailable)?;
        let hash = link.key(&format!("cr:{{{}}}", key.id));
        let period = current_period(credits.refill.as_ref(), now_ms);
        let amount = credits.refill.map_or(-1, |r| r.amount);
        let mut fill: Option<KeyCredits> = None;
        for _ in 0..2 {
            let mut inv = script.prepare_invoke();
            inv.key(&hash)
                .arg(fill.map_or(credits.gen, |f| f.gen))
                .arg(cost)
                .arg(period)
                .arg(amount);
            if let Some(f) = fill {
                inv.arg(f.balance.remaining)
                    .arg(f.balance.base)
                    .arg(f.balance.period);
            }
            let reply: Vec<i64> =
                match tokio::time::timeout(link.timeout, inv.invoke_async(&mut conn)).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the credit meter (Redis) failed");
                        return Err(CreditError::Unavailable);
                    }
                    Err(_) => {
                        tracing::warn!("the credit meter (Redis) timed out");
                        return Err(CreditError::Unavailable);
                    }
                };
            if let [admitted, remaining, base, period, low, exhausted, gen] = reply[..] {
                let spent = Spent {
                    admitted: admitted == 1,
                    balance: Balance {
                        remaining,
                        base,
                        period,
                    },
                    low: low == 1,
                    exhausted: exhausted == 1,
                };
                return Ok(Some((spent, gen)));
            }
            if fill.is_some() || reply.first() != Some(&-1) {
                return Err(CreditError::Unavailable);
            }
            // No balance in Redis (first use, flush, restart) or an older one: storage's.
            fill = match self.0.store.key_credits(&key.id).await {
                Ok(Some(c)) => Some(c),
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::error!(error = %e, "the credit meter could not reach storage");
                    return Err(CreditError::Unavailable);
                }
            };
        }
        Err(CreditError::Unavailable)
    }

    /// Gives back a spend whose commit failed, if the balance is still the one it came from.
    async fn refund(&self, key_id: &str, gen: i64, period: i64, cost: i64) {
        match &self.0.backend {
            Backend::Memory(map) => {
                if let Ok(mut m) = map.lock() {
                    if let Some((g, b)) = m.get_mut(key_id) {
                        if *g == gen && b.period == period {
                            b.remaining += cost;
                        }
                    }
                }
            }
            Backend::Redis { link, refund, .. } => {
                let Some(mut conn) = link.connection() else {
                    return;
                };
                let mut inv = refund.prepare_invoke();
                inv.key(link.key(&format!("cr:{{{key_id}}}")))
                    .arg(gen)
                    .arg(period)
                    .arg(cost);
                let r: Result<Result<i64, _>, _> =
                    tokio::time::timeout(link.timeout, inv.invoke_async(&mut conn)).await;
                if !matches!(r, Ok(Ok(_))) {
                    tracing::warn!("could not give back credits after a failed commit");
                }
            }
            Backend::Storage => {}
        }
    }

    /// Forgets every balance held in this process (tests: a restart without restarting).
    pub fn forget_all(&self) {
        if let Backend::Memory(map) = &self.0.backend {
            if let Ok(mut m) = map.lock() {
                m.clear();
            }
        }
    }
}

fn refuse_exhausted(s: Option<Spent>) -> Result<Option<Spent>, CreditError> {
    match s {
        Some(s) if !s.admitted => Err(CreditError::Exhausted {
            remaining: s.balance.remaining,
        }),
        other => Ok(other),
    }
}

/// Stores spends as they come, each batch in one transaction; every caller hears back only
/// after the commit that holds its spend.
async fn group_commit(store: Store, mut rx: mpsc::Receiver<Pending>) {
    let mut pending = Vec::with_capacity(GROUP_COMMIT_MAX);
    while rx.recv_many(&mut pending, GROUP_COMMIT_MAX).await > 0 {
        let (batch, replies): (Vec<CreditSpend>, Vec<_>) = pending.drain(..).unzip();
        let result = store.record_credit_spends(&batch).await;
        for reply in replies {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Other(e.to_string())),
            });
        }
    }
}
