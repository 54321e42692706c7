//! API keys: minting, and verification that touches no storage on a warm cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::auth::api_key::{self, Environment};
use crate::auth::tokens::sha256_hex;
use crate::clock::Clock;
use crate::store::{ApiKeyRecord, Store, StoreError};

/// Why a presented key was refused (`details.reason` of the 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFailure {
    /// Wrong shape or checksum: refused without a lookup.
    Malformed,
    /// No such key.
    NotFound,
    /// Past its expiry (or its roll grace period).
    Expired,
    /// Revoked.
    Revoked,
    /// Not cached and storage is unreachable (answered 503, not 401).
    Unavailable,
}

impl KeyFailure {
    /// The wire reason.
    pub fn reason(self) -> crate::error::Reason {
        use crate::error::Reason;
        match self {
            KeyFailure::Malformed => Reason::Malformed,
            KeyFailure::NotFound => Reason::NotFound,
            KeyFailure::Expired => Reason::Expired,
            KeyFailure::Revoked => Reason::Revoked,
            KeyFailure::Unavailable => Reason::Unavailable,
        }
    }
}

/// How long a verified key is trusted from memory; revocation on this instance invalidates
/// at once, other instances see it within this time (until Redis fan-out is configured).
pub const POSITIVE_TTL: Duration = Duration::from_secs(60);
/// Verified keys held in memory by default.
pub const DEFAULT_CAPACITY: u64 = 250_000;

/// How long an unknown key is remembered, so random keys cannot hammer storage.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Unknown keys remembered at most.
const NEGATIVE_CAPACITY: u64 = 100_000;

/// Verification caches and the last-used write-behind buffer.
#[derive(Clone)]
pub struct Keys {
    store: Store,
    clock: Clock,
    prefix: Arc<str>,
    known: moka::sync::Cache<String, Arc<ApiKeyRecord>>,
    /// Bumped by every invalidation, so a lookup that raced a revoke does not cache the
    /// record it read before the revoke.
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Hashes of well-formed keys storage does not know, for [`NEGATIVE_TTL`]: a client
    /// retrying a deleted key costs one read, not one per request.
    ///
    /// Junk cannot spoil either cache. It is a cache of its own, with its own capacity
    /// ([`NEGATIVE_CAPACITY`]), so no number of unknown keys evicts a verified key from
    /// `known`. Within it, moka admits a new entry over an old one only when the new one is
    /// the more frequently seen, so unique junk (each key seen once) cannot push out an
    /// unknown key that keeps coming back. And the junk arrives slowly: each client address
    /// reaches this point at most `rate_limit_auth_failures` times per window, since an
    /// address over that budget is refused before the key is looked at, so its keys are
    /// never inserted (see `http::failures`).
    unknown: moka::sync::Cache<String, ()>,
    used: Arc<Mutex<HashMap<String, i64>>>,
}

/// Everything needed to mint a key.
pub struct NewKey {
    /// The owning organization.
    pub org_id: String,
    /// 1-50 characters.
    pub name: String,
    /// Checked permissions.
    pub scopes: Vec<String>,
    /// live/test.
    pub environment: Environment,
    /// Lifetime in ms from creation, or never expires.
    pub lifetime_ms: Option<i64>,
    /// A small JSON object.
    pub metadata: Value,
    /// The actor.
    pub created_by: String,
    /// The key's own rate limits (`None`: the configured default).
    pub rate_limits: Option<crate::ratelimit::Rates>,
}

impl Keys {
    /// Caches over `store` for keys with `prefix`, holding up to [`DEFAULT_CAPACITY`]
    /// verified keys.
    pub fn new(store: Store, clock: Clock, prefix: &str) -> Self {
        Self::with_capacity(store, clock, prefix, DEFAULT_CAPACITY)
    }

    /// Caches holding up to `capacity` verified keys: size it above the number of keys in
    /// use within a minute, or verifications start reading storage.
    pub fn with_capacity(store: Store, clock: Clock, prefix: &str, capacity: u64) -> Self {
        Self {
            store,
            clock,
            prefix: prefix.into(),
            epoch: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            known: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(POSITIVE_TTL)
                .build(),
            unknown: moka::sync::Cache::builder()
                .max_capacity(NEGATIVE_CAPACITY)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            used: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether a bearer credential is one of our keys (rather than a JWT).
    pub fn looks_like_key(&self, credential: &str) -> bool {
        api_key::looks_like_key(&self.prefix, credential)
    }

    /// Mints a key: returns the full key (shown once) and the record stored for it.
    pub fn mint(&self, k: NewKey) -> (String, ApiKeyRecord) {
        let key = api_key::generate(&self.prefix, k.environment);
        let now = self.clock.now_ms();
        let record = ApiKeyRecord {
            id: format!("key_{}", uuid::Uuid::new_v4().simple()),
            org_id: k.org_id,
            key_hash: sha256_hex(&key),
            start: api_key::start(&key),
            name: k.name,
            scopes: k.scopes,
            environment: k.environment.as_str().to_string(),
            metadata: k.metadata,
            created_by: k.created_by,
            created_at: now,
            expires_at: k.lifetime_ms.map(|l| now + l),
            last_used_at: None,
            revoked_at: None,
            rolled_to: None,
            rate_limits: k.rate_limits,
        };
        (key, record)
    }

    /// Verifies a key presented as a credential, and records its use.
    pub async fn verify(&self, presented: &str) -> Result<Arc<ApiKeyRecord>, KeyFailure> {
        let record = self.check(presented).await?;
        self.record_use(&record.id);
        Ok(record)
    }

    /// Notes a use of a key, written behind in the next batch.
    pub fn record_use(&self, key_id: &str) {
        let now = self.clock.now_ms();
        if let Ok(mut used) = self.used.lock() {
            // Update in place: no allocation on the hot path once a key is in the batch.
            match used.get_mut(key_id) {
                Some(at) => *at = now,
                None => {
                    used.insert(key_id.to_string(), now);
                }
            }
        }
    }

    /// Checks a key without recording a use. On a warm cache this is a checksum, a SHA-256
    /// and a memory lookup; storage is read once per key per cache lifetime.
    pub async fn check(&self, presented: &str) -> Result<Arc<ApiKeyRecord>, KeyFailure> {
        if api_key::parse(&self.prefix, presented).is_none() {
            return Err(KeyFailure::Malformed);
        }
        let hash = sha256_hex(presented);
        // Fast path: a cached key costs one lookup, no future, no clone of the store.
        let looked_up = match self.known.get(&hash) {
            Some(rec) => Ok(rec),
            None if self.unknown.contains_key(&hash) => return Err(KeyFailure::NotFound),
            None => self.load(hash.clone()).await,
        };
        let record = match looked_up {
            Ok(rec) => rec,
            Err(e) => {
                return match e.as_ref() {
                    None => {
                        self.unknown.insert(hash, ());
                        Err(KeyFailure::NotFound)
                    }
                    Some(cause) => {
                        tracing::error!(error = %cause, "key lookup failed");
                        Err(KeyFailure::Unavailable)
                    }
                };
            }
        };
        let now = self.clock.now_ms();
        match record.status(now) {
            "revoked" => Err(KeyFailure::Revoked),
            "expired" => Err(KeyFailure::Expired),
            _ => Ok(record),
        }
    }

    /// Reads a key from storage into the cache.
    async fn load(&self, hash: String) -> Result<Arc<ApiKeyRecord>, Arc<Option<String>>> {
        use std::sync::atomic::Ordering;
        let epoch = self.epoch.load(Ordering::Acquire);
        let rec = match self.store.api_key_by_hash(&hash).await {
            Ok(Some(rec)) => Arc::new(rec),
            Ok(None) => return Err(Arc::new(None)),
            Err(e) => return Err(Arc::new(Some(e.to_string()))),
        };
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.known.insert(hash, rec.clone());
        }
        Ok(rec)
    }

    /// Drops a key from the caches (after revoke or roll), so the change applies at once here.
    pub async fn invalidate(&self, key_hash: &str) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.known.invalidate(key_hash);
    }

    /// Drops every cached key (after invalidations may have been missed).
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.known.invalidate_all();
    }

    /// Writes the buffered last-used times in one batch.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let batch: Vec<(String, i64)> = match self.used.lock() {
            Ok(mut used) => used.drain().collect(),
            Err(_) => Vec::new(),
        };
        let n = batch.len();
        if let Err(e) = self.store.touch_api_keys(&batch).await {
            // Put the batch back (keeping any newer use) so nothing is lost to an outage.
            if let Ok(mut used) = self.used.lock() {
                for (id, at) in batch {
                    let slot = used.entry(id).or_insert(at);
                    *slot = (*slot).max(at);
                }
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Flushes last-used times every `every` until the process ends.
    pub async fn write_behind(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush_last_used().await {
                tracing::warn!(error = %e, "writing last-used times failed; will retry");
            }
        }
    }
}
