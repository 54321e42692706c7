//! Concurrency leases: at most `max` holders of a subject at once (a key's or an
//! organization's answers under way). A lease is taken before the work and released when its
//! [`Lease`] is dropped, whatever ended the work. It also expires `ttl` after its last
//! renewal, so the leases of an instance that died free themselves: the holder renews every
//! third of `ttl` while it lives.
//!
//! With Redis, each subject is a sorted set of lease ids scored by their expiry (unix ms),
//! every set of one acquisition under one hash tag, and an acquisition is one script call:
//! drop the expired ids, refuse when a set is full, else add the id to every set. Without
//! Redis, the same in process memory. With Redis configured and not answering, nothing is
//! taken and the caller refuses ([`LeaseError::Unavailable`]): a per-instance count would let
//! every instance admit `max` at once, so the bound would no longer hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::RedisLink;
use crate::clock::Clock;

/// One subject of an acquisition.
#[derive(Clone, Debug)]
pub struct LeaseSpec {
    /// `key` or `org`, for the refusal.
    pub scope: &'static str,
    /// Whose leases: a key id, an organization id.
    pub subject: String,
    /// How many leases the subject may hold at once.
    pub max: u32,
}

/// Why no lease was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseError {
    /// The subject at this index of the specs holds its `max` already.
    Full(usize),
    /// Redis is configured and did not answer: nothing is taken (fail closed).
    Unavailable,
}

/// The warning of an unreachable Redis, said once per 10 s however many acquisitions fail.
static UNREACHABLE: super::Quiet = super::Quiet::new(10_000);

/// Concurrency leases for the whole application; cheap to clone.
#[derive(Clone)]
pub struct Leases {
    inner: Arc<Inner>,
}

struct Inner {
    memory: Mutex<HashMap<String, HashMap<String, i64>>>,
    redis: Option<(RedisLink, redis::Script)>,
    clock: Clock,
    ttl_ms: i64,
}

/// A held lease; dropping it releases it (here at once, in Redis in the background).
pub struct Lease {
    inner: Arc<Inner>,
    id: String,
    keys: Vec<String>,
    shared: bool,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

const ACQUIRE: &str = r"
-- KEYS: one sorted set per subject. ARGV[1]: now (unix ms) or '' for Redis TIME;
-- ARGV[2]: the lease id; ARGV[3]: ttl ms; ARGV[3+i]: the most leases of set i.
-- Returns 0 when taken, else the index of the first full set.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ttl = tonumber(ARGV[3])
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[3 + i]) then
    return i
  end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], ttl + 1000)
end
return 0
";

const RENEW: &str = r"
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ttl = tonumber(ARGV[3])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], ttl + 1000)
end
return 0
";

impl Leases {
    /// Leases that expire `ttl` after their last renewal, shared through `redis` when given.
    pub fn new(redis: Option<RedisLink>, clock: Clock, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                memory: Mutex::new(HashMap::new()),
                redis: redis.map(|l| (l, redis::Script::new(ACQUIRE))),
                clock,
                ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1),
            }),
        }
    }

    /// Takes one lease on every subject of `specs` (all under `tag`), or none:
    /// `Err(Full(i))` names the first subject that holds its `max` already.
    pub async fn acquire(&self, tag: &str, specs: &[LeaseSpec]) -> Result<Lease, LeaseError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let keys: Vec<String> = specs
            .iter()
            .map(|s| format!("lease:{{{tag}}}{}:{}", s.scope, s.subject))
            .collect();
        let mut shared = false;
        if let Some((link, script)) = &self.inner.redis {
            match self.acquire_shared(link, script, &id, &keys, specs).await {
                Ok(0) => shared = true,
                Ok(i) => return Err(LeaseError::Full(usize::try_from(i - 1).unwrap_or(0))),
                Err(e) => {
                    if let Some(quiet) = UNREACHABLE.due(super::quiet::now_ms()) {
                        tracing::warn!(error = %e, refused_quietly = quiet, "Redis is unreachable; answers under a max_parallel bound are refused until it answers");
                    }
                    return Err(LeaseError::Unavailable);
                }
            }
        }
        if !shared {
            self.acquire_memory(&id, &keys, specs)
                .map_err(LeaseError::Full)?;
        }
        let mut lease = Lease {
            inner: self.inner.clone(),
            id,
            keys,
            shared,
            renewer: None,
        };
        lease.renewer = Some(tokio::spawn(renew_loop(
            self.inner.clone(),
            lease.id.clone(),
            lease.keys.clone(),
            shared,
        )));
        Ok(lease)
    }

    async fn acquire_shared(
        &self,
        link: &RedisLink,
        script: &redis::Script,
        id: &str,
        keys: &[String],
        specs: &[LeaseSpec],
    ) -> Result<i64, super::RedisFailure> {
        let mut conn = link.connection().ok_or(super::RedisFailure::NotConnected)?;
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(link.key(k));
        }
        inv.arg(self.inner.now_arg()).arg(id).arg(self.inner.ttl_ms);
        for s in specs {
            inv.arg(s.max);
        }
        let taken: i64 = tokio::time::timeout(link.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| super::RedisFailure::Timeout)??;
        Ok(taken)
    }

    fn acquire_memory(&self, id: &str, keys: &[String], specs: &[LeaseSpec]) -> Result<(), usize> {
        let now = self.inner.clock.now_ms();
        let mut sets = self.inner.memory.lock().unwrap_or_else(|p| p.into_inner());
        for (i, (k, s)) in keys.iter().zip(specs).enumerate() {
            let held = match sets.get_mut(k) {
                Some(set) => {
                    set.retain(|_, until| *until > now);
                    set.len()
                }
                None => 0,
            };
            if held >= usize::try_from(s.max).unwrap_or(usize::MAX) {
                return Err(i);
            }
        }
        for k in keys {
            sets.entry(k.clone())
                .or_default()
                .insert(id.to_string(), now + self.inner.ttl_ms);
        }
        Ok(())
    }
}

impl Inner {
    /// A controlled clock (tests) is passed to the scripts; the system clock defers to
    /// Redis TIME, so instances with skewed clocks agree.
    fn now_arg(&self) -> String {
        match self.clock {
            Clock::Manual(_) => self.clock.now_ms().to_string(),
            _ => String::new(),
        }
    }

    fn release_memory(&self, id: &str, keys: &[String]) {
        let mut sets = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(set) = sets.get_mut(k) {
                set.remove(id);
                if set.is_empty() {
                    sets.remove(k);
                }
            }
        }
    }
}

async fn renew_loop(inner: Arc<Inner>, id: String, keys: Vec<String>, shared: bool) {
    let every = Duration::from_millis(u64::try_from(inner.ttl_ms / 3).unwrap_or(1).max(1));
    let renew = redis::Script::new(RENEW);
    loop {
        tokio::time::sleep(every).await;
        let now = inner.clock.now_ms();
        if !shared {
            let mut sets = inner.memory.lock().unwrap_or_else(|p| p.into_inner());
            for k in &keys {
                if let Some(until) = sets.get_mut(k).and_then(|s| s.get_mut(&id)) {
                    *until = now + inner.ttl_ms;
                }
            }
            continue;
        }
        let Some((link, _)) = &inner.redis else {
            return;
        };
        let Some(mut conn) = link.connection() else {
            continue;
        };
        let mut inv = renew.prepare_invoke();
        for k in &keys {
            inv.key(link.key(k));
        }
        inv.arg(inner.now_arg()).arg(&id).arg(inner.ttl_ms);
        let renewed: Result<Result<i64, _>, _> =
            tokio::time::timeout(link.timeout, inv.invoke_async(&mut conn)).await;
        if !matches!(renewed, Ok(Ok(_))) {
            tracing::warn!("a concurrency lease could not be renewed in Redis");
        }
    }
}

impl Lease {
    /// Stops renewing without releasing, as an instance that died would: the lease then
    /// holds its place until it expires (tests).
    pub fn abandon(mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        self.keys.clear();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if self.keys.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.keys);
        if !self.shared {
            self.inner.release_memory(&self.id, &keys);
            return;
        }
        let Some(link) = self.inner.redis.as_ref().map(|(l, _)| l.clone()) else {
            return;
        };
        let id = std::mem::take(&mut self.id);
        // Dropped outside a runtime only at shutdown: the lease then expires by itself.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let Some(mut conn) = link.connection() else {
                    return;
                };
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.zrem(link.key(k), &id).ignore();
                }
                let done: Result<Result<(), _>, _> =
                    tokio::time::timeout(link.timeout, pipe.query_async(&mut conn)).await;
                if !matches!(done, Ok(Ok(()))) {
                    tracing::warn!(
                        "a concurrency lease could not be released in Redis; it expires by itself"
                    );
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(max: u32) -> Vec<LeaseSpec> {
        vec![LeaseSpec {
            scope: "key",
            subject: "k".into(),
            max,
        }]
    }

    #[tokio::test]
    async fn memory_leases_bound_release_on_drop_and_expire() {
        let clock = Clock::manual(1_000_000);
        let leases = Leases::new(None, clock.clone(), Duration::from_secs(30));
        let a = leases.acquire("t", &one(2)).await;
        let b = leases.acquire("t", &one(2)).await;
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(
            leases.acquire("t", &one(2)).await.err(),
            Some(LeaseError::Full(0))
        );
        drop(a);
        let c = leases.acquire("t", &one(2)).await;
        assert!(c.is_ok());
        // Two holders die: their leases hold until they expire.
        if let (Ok(b), Ok(c)) = (b, c) {
            b.abandon();
            c.abandon();
        }
        assert_eq!(
            leases.acquire("t", &one(2)).await.err(),
            Some(LeaseError::Full(0))
        );
        clock.advance_ms(30_000);
        assert!(leases.acquire("t", &one(2)).await.is_ok());
        // Every subject must have room, or none is taken.
        let both = vec![
            LeaseSpec {
                scope: "key",
                subject: "x".into(),
                max: 5,
            },
            LeaseSpec {
                scope: "org",
                subject: "full".into(),
                max: 1,
            },
        ];
        let held = leases.acquire("t", &both[1..]).await;
        assert!(held.is_ok());
        assert_eq!(
            leases.acquire("t", &both).await.err(),
            Some(LeaseError::Full(1))
        );
        assert_eq!(
            leases
                .inner
                .memory
                .lock()
                .map(|m| m.contains_key("lease:{t}key:x"))
                .ok(),
            Some(false)
        );
    }
}
