//! The credit meter: where a key's balance is decided, atomically.
//!
//! - **Memory** (one instance, SQLite): a map of balances behind a mutex; storage is read
//!   once per key (and after its settings change).
//! - **Redis** (when configured): one hash per roll line (`{prefix}:cr:{org:<org id>}<line>`,
//!   under the organization's hash tag, as its rate-limit counters are), so every instance
//!   decides against the same balance. A key's use is decided with its windows and its credits
//!   together ([`Meter::spend_with_windows`]), in the limiter's script calls, which batch the
//!   decisions that arrive together (`ratelimit/redis.rs`). A missing
//!   hash (a first use, a flush, a restarted Redis) is filled from storage.
//! - **Storage** (PostgreSQL without Redis): one conditional `UPDATE … RETURNING` per use,
//!   exact across instances.
//!
//! A key's balance is its roll line's ([`ApiKeyRecord::line`]): a rolled key and the key it
//! replaced are metered under the line's first key, on that key's row, in one map entry and
//! one Redis hash, so a roll neither doubles nor refills the credits and both keys draw from
//! one balance during the grace period.
//!
//! Settings: a record's credits carry the generation of the settings they were read under.
//! A meter never decides under settings older than the balance it holds: memory keeps the
//! refill rule of its balance's generation, and Redis and storage refuse an older generation,
//! after which the line's settings are read again. So a settings change reaches every key of
//! the line at once, even one whose record a cache still holds from before.
//!
//! Durability: memory and Redis admit a use, then write it in a group commit (one
//! transaction for every spend that arrived meanwhile, as chat exchanges are) and answer only
//! once that commit holds it. What was acknowledged is in storage, so a restart or a Redis
//! loss rebuilds the balances from storage exactly; a spend whose commit failed is given back
//! and the use is answered 503. The storage meter's update is its own commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::domain::credits::{current_period, Balance, KeyCredits, Refill, Spent};
use crate::ratelimit::{Decision, Joint, Limiter, RedisLimiter, RedisLink, Request, Then};
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

/// A line's balance in memory: the generation of its settings, the balance, and the refill
/// rule of that generation.
type Held = (i64, Balance, Option<Refill>);

enum Backend {
    Memory(Mutex<HashMap<String, Held>>),
    Redis {
        link: RedisLink,
        /// Spends without windows go through a limiter of their own: the same script and
        /// batches as a key's use.
        alone: RedisLimiter,
        refund: redis::Script,
    },
    Storage,
}

/// A key's use decided by [`Meter::spend_with_windows`].
pub enum KeyUse {
    /// Not decided together (the key has no credits, the meter or the limiter is not Redis,
    /// or Redis is being skipped after failures): decide the windows, then spend.
    Apart,
    /// The windows' decision and, when they admitted, the spend (`Ok(None)` after a refusal).
    Decided(Decision, Result<Option<Spent>, CreditError>),
    /// Redis did not answer: nothing decided; the use is refused (503).
    Unavailable,
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
                alone: RedisLimiter::new(link.clone()),
                link,
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
            Backend::Redis { link, alone, .. } => {
                self.spend_redis(link, alone, key, credits, cost, now_ms)
                    .await?
            }
            Backend::Storage => return self.spend_storage(key, credits, cost, now_ms).await,
        };
        self.commit(key, cost, now_ms, decided).await
    }

    /// Decides a key's use in one Redis call: the windows of `req` (by `limiter`) and, when
    /// they admit, the spend of `cost`; or answers [`KeyUse::Apart`] when that cannot be
    /// done in one call. Exactly what `limiter.check(req)` and then, if it admitted,
    /// [`Meter::spend`] decide: a refusal by a window spends nothing, and a refusal by the
    /// credits counts in the windows as any admitted request does.
    pub async fn spend_with_windows(
        &self,
        limiter: &Limiter,
        req: &Request,
        key: &ApiKeyRecord,
        cost: i64,
        now_ms: i64,
    ) -> KeyUse {
        let (Some(mut credits), Backend::Redis { link, .. }) = (key.credits, &self.0.backend)
        else {
            return KeyUse::Apart;
        };
        let hash = credit_hash(link, &key.org_id, key.line());
        let mut fill: Option<KeyCredits> = None;
        for _ in 0..3 {
            let then = Then {
                key: hash.clone(),
                args: credit_args(credits, cost, now_ms, fill),
            };
            let reply = match limiter.check_then(req, &then).await {
                None => return KeyUse::Apart,
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the credit meter (Redis) failed");
                    return KeyUse::Unavailable;
                }
            };
            match reply {
                Joint::Denied(d) => return KeyUse::Decided(d, Ok(None)),
                Joint::Admitted(d, tail) => {
                    let Some(decided) = spent_from(&tail) else {
                        return KeyUse::Unavailable;
                    };
                    let spent = self.commit(key, cost, now_ms, Some(decided)).await;
                    return KeyUse::Decided(d, spent);
                }
                Joint::Retry(_) if fill.is_some() => return KeyUse::Unavailable,
                Joint::Retry(_) => {
                    // No balance in Redis, an older one, or settings newer than the record's:
                    // the line's, from storage.
                    match self.0.store.key_credits(key.line()).await {
                        Ok(Some(c)) => {
                            credits = c;
                            fill = Some(c);
                        }
                        // No credits any more: the two steps decide without them.
                        Ok(None) => return KeyUse::Apart,
                        Err(e) => {
                            tracing::error!(error = %e, "the credit meter could not reach storage");
                            return KeyUse::Unavailable;
                        }
                    }
                }
            }
        }
        KeyUse::Unavailable
    }

    /// Stores an admitted spend in the group commit and answers once it holds it.
    async fn commit(
        &self,
        key: &ApiKeyRecord,
        cost: i64,
        now_ms: i64,
        decided: Option<(Spent, i64)>,
    ) -> Result<Option<Spent>, CreditError> {
        let Some((spent, gen)) = decided else {
            return Ok(None);
        };
        if !spent.admitted || cost == 0 {
            return refuse_exhausted(Some(spent));
        }
        let record = CreditSpend {
            key_id: key.id.clone(),
            line: key.line().to_string(),
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
            self.refund(key, gen, spent.balance.period, cost).await;
            return Err(CreditError::Unavailable);
        }
        Ok(Some(spent))
    }

    async fn spend_storage(
        &self,
        key: &ApiKeyRecord,
        credits: KeyCredits,
        cost: i64,
        now_ms: i64,
    ) -> Result<Option<Spent>, CreditError> {
        let (mut gen, mut refill) = (credits.gen, credits.refill);
        // Twice at most: the record's settings, then the line's if they changed since.
        for _ in 0..2 {
            let k = CreditKey {
                id: &key.id,
                line: key.line(),
                org_id: &key.org_id,
                name: &key.name,
                gen,
            };
            let period = current_period(refill.as_ref(), now_ms);
            match self.0.store.spend_credits(k, period, cost, now_ms).await {
                Ok(Ok(s)) => return refuse_exhausted(s),
                Ok(Err(newer)) => (gen, refill) = (newer.gen, newer.refill),
                Err(e) => {
                    tracing::error!(error = %e, "the credit meter could not reach storage");
                    return Err(CreditError::Unavailable);
                }
            }
        }
        Err(CreditError::Unavailable)
    }

    async fn spend_memory(
        &self,
        map: &Mutex<HashMap<String, Held>>,
        key: &ApiKeyRecord,
        credits: KeyCredits,
        cost: i64,
        now_ms: i64,
    ) -> Result<Option<(Spent, i64)>, CreditError> {
        for _ in 0..2 {
            {
                let mut m = map.lock().map_err(|_| CreditError::Unavailable)?;
                if let Some((gen, balance, refill)) = m.get_mut(key.line()) {
                    // Newer settings than the record's (a cached record from before a change)
                    // decide under the balance's own refill rule.
                    if *gen >= credits.gen {
                        let s = balance.spend(refill.as_ref(), now_ms, cost);
                        *balance = s.balance;
                        return Ok(Some((s, *gen)));
                    }
                }
            }
            // Not here yet, or changed since: fill from storage, unless another use did.
            let fresh = match self.0.store.key_credits(key.line()).await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::error!(error = %e, "the credit meter could not reach storage");
                    return Err(CreditError::Unavailable);
                }
            };
            let mut m = map.lock().map_err(|_| CreditError::Unavailable)?;
            let slot =
                m.entry(key.line().to_string())
                    .or_insert((fresh.gen, fresh.balance, fresh.refill));
            if slot.0 < fresh.gen {
                *slot = (fresh.gen, fresh.balance, fresh.refill);
            }
        }
        // Storage holds an older generation than the cached record: the record is ahead of a
        // change still being applied; refuse rather than guess.
        Err(CreditError::Unavailable)
    }

    async fn spend_redis(
        &self,
        link: &RedisLink,
        alone: &RedisLimiter,
        key: &ApiKeyRecord,
        credits: KeyCredits,
        cost: i64,
        now_ms: i64,
    ) -> Result<Option<(Spent, i64)>, CreditError> {
        let hash = credit_hash(link, &key.org_id, key.line());
        let tag = format!("org:{}", key.org_id);
        let mut credits = credits;
        let mut fill: Option<KeyCredits> = None;
        for _ in 0..2 {
            let then = Then {
                key: hash.clone(),
                args: credit_args(credits, cost, now_ms, fill),
            };
            let reply = match alone.spend(&tag, &then, None).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "the credit meter (Redis) failed");
                    return Err(CreditError::Unavailable);
                }
            };
            if let Some(decided) = spent_from(&reply) {
                return Ok(Some(decided));
            }
            if fill.is_some() || !matches!(reply[..], [-1] | [-2]) {
                return Err(CreditError::Unavailable);
            }
            // No balance in Redis (first use, flush, restart), an older one, or settings
            // newer than the record's: the line's, from storage.
            fill = match self.0.store.key_credits(key.line()).await {
                Ok(Some(c)) => {
                    credits = c;
                    Some(c)
                }
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
    async fn refund(&self, key: &ApiKeyRecord, gen: i64, period: i64, cost: i64) {
        match &self.0.backend {
            Backend::Memory(map) => {
                if let Ok(mut m) = map.lock() {
                    if let Some((g, b, _)) = m.get_mut(key.line()) {
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
                inv.key(credit_hash(link, &key.org_id, key.line()))
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

/// The Redis hash of a line's balance: under its organization's hash tag, with the counters
/// of its windows, so one script call may hold both (Redis Cluster: one slot).
fn credit_hash(link: &RedisLink, org_id: &str, line: &str) -> String {
    link.key(&format!("cr:{{org:{org_id}}}{line}"))
}

/// The arguments of `credits(…)` in the scripts: the settings' generation, the cost, the
/// current period's start, the refill amount (-1: none), and the balance to fill from
/// (-1, -1, -1: none).
fn credit_args(credits: KeyCredits, cost: i64, now_ms: i64, fill: Option<KeyCredits>) -> [i64; 7] {
    let (remaining, base, period) = fill.map_or((-1, -1, -1), |f| {
        (f.balance.remaining, f.balance.base, f.balance.period)
    });
    [
        credits.gen,
        cost,
        current_period(credits.refill.as_ref(), now_ms),
        credits.refill.map_or(-1, |r| r.amount),
        remaining,
        base,
        period,
    ]
}

/// A spend decided by `credits(…)`: `{admitted, remaining, base, period, low, exhausted, gen}`.
fn spent_from(reply: &[i64]) -> Option<(Spent, i64)> {
    let [admitted, remaining, base, period, low, exhausted, gen] = reply[..] else {
        return None;
    };
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
    Some((spent, gen))
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
    while crate::batch::next_batch(&mut rx, &mut pending, GROUP_COMMIT_MAX).await > 0 {
        let (batch, replies): (Vec<CreditSpend>, Vec<_>) = pending.drain(..).unzip();
        let result = store.record_credit_spends(batch).await;
        for reply in replies {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Other(e.to_string())),
            });
        }
    }
}
