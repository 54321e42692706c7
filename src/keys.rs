//! API keys: the use cases (create, list, change, revoke, roll, verify for customers, the
//! audit log), minting, and verification that touches no storage on a warm cache.
//!
//! Every change that affects verification (revoke, roll, change) is forgotten through the
//! [`Bus`], so it applies at once here and on every other instance, whether it came over
//! HTTP or from the command line.

mod meter;
mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub use meter::{CreditError, KeyUse, Meter};
pub use settings::{CreditsInput, KeyInput, KeyUpdate, RefillInput};

use crate::auth::api_key::{self, Environment};
use crate::auth::tokens::{hex_lower, sha256_hex};
use crate::clock::Clock;
use crate::domain::credits::{CreditsSetting, KeyCredits, Spent};
use crate::domain::{AuditAction, AuditActor};
use crate::fanout::{Bus, Invalidation};
use crate::ids::{KeyId, OrgId};
use crate::ratelimit::{Decision, Limiter, Rates};
use crate::store::{ApiKeyRecord, Audit, AuditEntry, AuditFilter, Store, StoreError};

/// A key's SHA-256, as the caches hold it.
type Digest = [u8; 32];

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
/// Verified keys held in memory by default (the configuration's default).
pub const DEFAULT_CAPACITY: u64 = crate::config::DEFAULT_KEY_CACHE_CAPACITY;

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
    known: moka::sync::Cache<Digest, Arc<ApiKeyRecord>>,
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
    unknown: moka::sync::Cache<Digest, ()>,
    used: Arc<Mutex<HashMap<String, i64>>>,
    /// Tells this instance's caches and the other instances about changes; without one
    /// (benchmarks, tools) only this value's caches forget.
    bus: Option<Bus>,
    /// Where credits are spent.
    meter: Meter,
}

/// Why a key use case failed; `http::api_keys` turns each into its answer.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A setting is not acceptable (422 naming the field).
    #[error("{field}: {problem}")]
    Invalid {
        /// The field, as the request names it.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The creator asked for a scope they do not hold themselves (403).
    #[error("You cannot grant {0}, which you do not hold.")]
    NotHeld(String),
    /// No such key in the organization.
    #[error("API key not found.")]
    NotFound,
    /// No such organization (operator commands, where no membership proved it exists).
    #[error("no organization {0}")]
    NoOrg(OrgId),
    /// Only active keys can be rolled; the key is `expired` or `revoked`.
    #[error("The key is {0}; only active keys can be rolled.")]
    NotActive(&'static str),
    /// Storage could not look the key up (answered 503).
    #[error("Storage is unavailable; retry shortly.")]
    Unavailable,
    /// The rate limiter cannot decide and the key policy fails closed.
    #[error("the rate limiter is unavailable")]
    LimiterUnavailable,
    /// Storage refused or failed (conflicts included).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new key: the full key, shown once and never stored, and its record.
pub struct Minted {
    /// The full key.
    pub key: String,
    /// What is stored for it.
    pub record: ApiKeyRecord,
}

/// Who creates a key.
pub enum Creator<'a> {
    /// A member or a key of the organization, whose access was checked: it grants only
    /// permissions it holds.
    Member(&'a [String]),
    /// The operator (command line): holds every permission; the organization must exist.
    Operator,
}

/// The verdict on a key a customer checks (`POST /v1/keys/verify`).
pub enum Verification {
    /// Not usable: malformed, unknown (or another organization's), expired or revoked.
    Refused(KeyFailure),
    /// A key of the organization; `decision` is its own rate limit after counting this use
    /// (the use is recorded only when admitted).
    Known {
        /// The key.
        key: Arc<ApiKeyRecord>,
        /// Its own windows after this verification.
        decision: Decision,
        /// Its credits after this verification (`None`: unlimited).
        remaining: Option<i64>,
        /// Refused because its credits are spent (or below the cost).
        exhausted: bool,
    },
}

/// How a verified key's own windows are limited when none are set on it.
pub struct KeyLimits<'a> {
    /// The limiter.
    pub limiter: &'a Limiter,
    /// The deployment's default windows for keys.
    pub default: &'a Rates,
    /// Whether the key policy refuses when the limiter cannot decide.
    pub fail_closed: bool,
    /// The policy's name in counters and headers.
    pub policy: &'static str,
}

/// How long an old key keeps working after a roll, by default.
pub const DEFAULT_GRACE_SECONDS: i64 = 86_400;
/// The longest grace period of a roll.
pub const MAX_GRACE_SECONDS: i64 = 30 * 86_400;
/// Audit-log entries per page by default.
pub const DEFAULT_AUDIT_PAGE: i64 = 50;
/// The most audit-log entries per page.
pub const MAX_AUDIT_PAGE: i64 = 200;

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
    /// The key's spend budgets.
    pub budgets: Option<Vec<crate::domain::budget::Budget>>,
    /// Its credits (`None`: unlimited).
    pub credits: Option<KeyCredits>,
    /// Models, token windows and concurrency for chat.
    pub chat_limits: crate::domain::ChatLimits,
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
        let meter = Meter::memory(store.clone());
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
            bus: None,
            meter,
        }
    }

    /// The same caches, spending credits with `meter`.
    pub fn with_meter(mut self, meter: Meter) -> Self {
        self.meter = meter;
        self
    }

    /// The credit meter's backend (`memory`, `redis`, `storage`).
    pub fn meter_name(&self) -> &'static str {
        self.meter.backend_name()
    }

    /// Spends `cost` of a verified key's credits now. `Ok(None)`: the key has no credits.
    /// An admitted spend is in storage when this returns; a refused one takes nothing.
    pub async fn spend(&self, key: &ApiKeyRecord, cost: i64) -> Result<Option<Spent>, CreditError> {
        self.meter.spend(key, cost, self.clock.now_ms()).await
    }

    /// Decides a use of a verified key in one Redis call, its windows (`req`, by `limiter`)
    /// and its credits together, when the meter is Redis ([`Meter::spend_with_windows`]).
    pub async fn spend_with_windows(
        &self,
        limiter: &crate::ratelimit::Limiter,
        req: &crate::ratelimit::Request,
        key: &ApiKeyRecord,
        cost: i64,
    ) -> KeyUse {
        self.meter
            .spend_with_windows(limiter, req, key, cost, self.clock.now_ms())
            .await
    }

    /// Forgets the balances this process holds (tests: as after a restart).
    pub fn forget_balances(&self) {
        self.meter.forget_all();
    }

    /// The same caches, telling `bus` about every change (so other instances forget too).
    pub fn with_bus(mut self, bus: Bus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Creates a key in `org` (audited as `audit.actor`, who becomes its creator).
    pub async fn create(
        &self,
        org: &OrgId,
        input: KeyInput,
        creator: Creator<'_>,
        audit: &Audit,
    ) -> Result<Minted, KeyError> {
        let holds = match creator {
            Creator::Member(holds) => Some(holds),
            Creator::Operator => None,
        };
        let s = settings::check_settings(input, holds)?;
        if holds.is_none() && self.store.org(org.as_str()).await?.is_none() {
            return Err(KeyError::NoOrg(org.clone()));
        }
        let now = self.clock.now_ms();
        let (key, record) = self.mint(NewKey {
            org_id: org.as_str().to_string(),
            name: s.name,
            scopes: s.scopes,
            environment: s.environment,
            lifetime_ms: s.lifetime_ms,
            metadata: s.metadata,
            created_by: audit.actor.clone(),
            rate_limits: s.rate_limits,
            budgets: s.budgets,
            credits: s.credits.map(|c| fresh_credits(c, now)),
            chat_limits: s.chat_limits,
        });
        self.store.create_api_key(&record, audit).await?;
        Ok(Minted { key, record })
    }

    /// The organization's keys.
    pub async fn list(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>, KeyError> {
        Ok(self.store.api_keys(org.as_str()).await?)
    }

    /// The organization's keys a page at a time, in the order they were created (the
    /// operator's listing): up to `limit` after the key `after`.
    pub async fn page(
        &self,
        org: &OrgId,
        after: Option<&KeyId>,
        limit: i64,
    ) -> Result<Vec<ApiKeyRecord>, KeyError> {
        if let Some(after) = after {
            self.get(org, after).await?;
        }
        Ok(self
            .store
            .api_keys_page(org.as_str(), after.map(|a| a.as_str()), limit)
            .await?)
    }

    /// One key of the organization.
    pub async fn get(&self, org: &OrgId, id: &KeyId) -> Result<ApiKeyRecord, KeyError> {
        self.store
            .api_key(org.as_str(), id.as_str())
            .await?
            .ok_or(KeyError::NotFound)
    }

    /// Renames a key or changes its metadata or rate limits; applies at once everywhere.
    pub async fn update(
        &self,
        org: &OrgId,
        id: &KeyId,
        update: KeyUpdate,
        audit: &Audit,
    ) -> Result<ApiKeyRecord, KeyError> {
        let change = settings::check_update(update)?;
        let k = self
            .store
            .update_api_key(org.as_str(), id.as_str(), &change, audit)
            .await
            .map_err(not_found_is_the_key)?;
        if change.credits.is_some() {
            // The balance is the roll line's: every key of the line reads the new one.
            for hash in self.store.line_key_hashes(&k.org_id, k.line()).await? {
                if hash != k.key_hash {
                    self.forget(&hash).await;
                }
            }
        }
        self.forget(&k.key_hash).await;
        Ok(k)
    }

    /// Revokes a key, effective at once everywhere.
    pub async fn revoke(
        &self,
        org: &OrgId,
        id: &KeyId,
        audit: &Audit,
    ) -> Result<ApiKeyRecord, KeyError> {
        let k = self
            .store
            .revoke_api_key(org.as_str(), id.as_str(), audit)
            .await
            .map_err(not_found_is_the_key)?;
        self.forget(&k.key_hash).await;
        Ok(k)
    }

    /// Issues a new key with the same settings; the old one keeps working for
    /// `grace_seconds` (default [`DEFAULT_GRACE_SECONDS`]), never past its own expiry.
    pub async fn roll(
        &self,
        org: &OrgId,
        id: &KeyId,
        grace_seconds: Option<i64>,
        audit: &Audit,
    ) -> Result<Minted, KeyError> {
        let grace = grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
            return Err(KeyError::Invalid {
                field: "grace_seconds",
                problem: format!("must be between 0 and {MAX_GRACE_SECONDS}"),
            });
        }
        let old = self.get(org, id).await?;
        let now = self.clock.now_ms();
        match old.status(now) {
            "active" => {}
            other => return Err(KeyError::NotActive(other)),
        }
        let (key, record) = self.mint(NewKey {
            org_id: old.org_id.clone(),
            name: old.name.clone(),
            scopes: old.scopes.clone(),
            environment: Environment::parse(&old.environment).unwrap_or(Environment::Live),
            lifetime_ms: old.expires_at.map(|e| e - old.created_at),
            metadata: old.metadata.clone(),
            created_by: audit.actor.clone(),
            rate_limits: old.rate_limits.clone(),
            budgets: old.budgets.clone(),
            // The balance stays on the line's first key: both keys draw from it (see
            // `root_key`); this copy is only the new row's own, never read.
            credits: old.credits,
            chat_limits: old.chat_limits.clone(),
        });
        let mut record = record;
        record.root_key = Some(old.line().to_string());
        let grace_end = now + grace * 1000;
        let old_expires = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
        self.store
            .roll_api_key(id.as_str(), &record, old_expires, audit)
            .await?;
        self.forget(&old.key_hash).await;
        Ok(Minted { key, record })
    }

    /// Checks a key for a customer of `org`: another organization's key reads as unknown
    /// (no cross-tenant oracle). A known key's own windows count the check as one use.
    pub async fn verify_for(
        &self,
        org: &OrgId,
        presented: &str,
        cost: i64,
        limits: KeyLimits<'_>,
    ) -> Result<Verification, KeyError> {
        let key = match self.check(presented).await {
            Ok(k) if k.org_id != org.as_str() => {
                return Ok(Verification::Refused(KeyFailure::NotFound))
            }
            Ok(k) => k,
            Err(KeyFailure::Unavailable) => return Err(KeyError::Unavailable),
            Err(why) => return Ok(Verification::Refused(why)),
        };
        // The verified key's own windows only; the organization's were counted for the
        // caller's request already.
        let mut req = crate::ratelimit::Request {
            tag: format!("org:{}", key.org_id),
            windows: Vec::with_capacity(2),
            fail_closed: limits.fail_closed,
        };
        req.add(
            limits.policy,
            &key.id,
            key.rate_limits.as_ref().unwrap_or(limits.default),
        );
        // One Redis call for the windows and the credits when it can be; else the windows,
        // then the credits (below).
        let (decision, joint) = match self
            .spend_with_windows(limits.limiter, &req, &key, cost)
            .await
        {
            KeyUse::Decided(d, spent) => (d, Some(spent)),
            KeyUse::Unavailable => return Err(KeyError::Unavailable),
            KeyUse::Apart => (
                limits
                    .limiter
                    .check(&req)
                    .await
                    .map_err(|_| KeyError::LimiterUnavailable)?,
                None,
            ),
        };
        if !decision.allowed {
            // Refused by its windows: nothing spent; the balance as storage last held it.
            let now = self.clock.now_ms();
            let remaining = key
                .credits
                .map(|c| c.balance.at(c.refill.as_ref(), now).remaining);
            return Ok(Verification::Known {
                key,
                decision,
                remaining,
                exhausted: false,
            });
        }
        let spent = match joint {
            Some(spent) => spent,
            None => self.spend(&key, cost).await,
        };
        let (remaining, exhausted) = match spent {
            Ok(spent) => (spent.map(|s| s.balance.remaining), false),
            Err(CreditError::Exhausted { remaining }) => (Some(remaining), true),
            Err(CreditError::Unavailable) => return Err(KeyError::Unavailable),
        };
        if !exhausted {
            self.record_use(&key.id);
        }
        Ok(Verification::Known {
            key,
            decision,
            remaining,
            exhausted,
        })
    }

    /// The organization's audit log, newest first: `limit` entries (1-200, default 50)
    /// older than position `before`, only `action`'s and only `actor`'s when given.
    pub async fn audit_log(
        &self,
        org: &OrgId,
        limit: Option<i64>,
        before: Option<i64>,
        action: Option<&AuditAction>,
        actor: Option<&AuditActor>,
    ) -> Result<Vec<AuditEntry>, KeyError> {
        let limit = limit.unwrap_or(DEFAULT_AUDIT_PAGE);
        if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
            return Err(KeyError::Invalid {
                field: "limit",
                problem: format!("must be between 1 and {MAX_AUDIT_PAGE}"),
            });
        }
        let filter = AuditFilter {
            limit,
            before,
            action: action.map(AuditAction::as_str),
            actor: actor.map(AuditActor::as_str),
        };
        Ok(self.store.audit_log(org.as_str(), &filter).await?)
    }

    /// Forgets a key here and, through the bus, on every other instance.
    async fn forget(&self, key_hash: &str) {
        match &self.bus {
            Some(bus) => {
                bus.invalidate(Invalidation::Key(key_hash.to_string()))
                    .await
            }
            None => self.invalidate(key_hash).await,
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
            id: KeyId::new().into_string(),
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
            root_key: None,
            rate_limits: k.rate_limits,
            budgets: k.budgets,
            credits: k.credits,
            chat_limits: k.chat_limits,
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
        // The caches are keyed by the SHA-256 itself; storage by its hex, made only on a miss.
        let digest: Digest = Sha256::digest(presented.as_bytes()).into();
        // Fast path: a cached key costs one lookup, no future, no clone of the store.
        let looked_up = match self.known.get(&digest) {
            Some(rec) => Ok(rec),
            None if self.unknown.contains_key(&digest) => return Err(KeyFailure::NotFound),
            None => self.load(digest).await,
        };
        let record = match looked_up {
            Ok(rec) => rec,
            Err(e) => {
                return match e.as_ref() {
                    None => {
                        self.unknown.insert(digest, ());
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
    async fn load(&self, digest: Digest) -> Result<Arc<ApiKeyRecord>, Arc<Option<String>>> {
        use std::sync::atomic::Ordering;
        let epoch = self.epoch.load(Ordering::Acquire);
        let rec = match self.store.api_key_by_hash(&hex_lower(&digest)).await {
            Ok(Some(rec)) => Arc::new(rec),
            Ok(None) => return Err(Arc::new(None)),
            Err(e) => return Err(Arc::new(Some(e.to_string()))),
        };
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.known.insert(digest, rec.clone());
        }
        Ok(rec)
    }

    /// Drops a key from the caches (after revoke or roll), so the change applies at once here.
    pub async fn invalidate(&self, key_hash: &str) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut digest: Digest = [0; 32];
        if hex::decode_to_slice(key_hash, &mut digest).is_ok() {
            self.known.invalidate(&digest);
        } else {
            // Not a hash this process wrote: forget every key rather than risk keeping one.
            tracing::warn!(
                "an invalidation named a malformed key hash; forgetting every cached key"
            );
            self.known.invalidate_all();
        }
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

/// Credits set now: a balance of the setting's amount, first generation.
fn fresh_credits(c: CreditsSetting, now: i64) -> KeyCredits {
    KeyCredits {
        gen: 1,
        balance: crate::domain::credits::Balance {
            remaining: c.remaining,
            base: c.remaining,
            period: now,
        },
        refill: c.refill,
    }
}

/// A store `NotFound` on a key of an organization is that key missing.
fn not_found_is_the_key(e: StoreError) -> KeyError {
    match e {
        StoreError::NotFound => KeyError::NotFound,
        other => KeyError::Store(other),
    }
}
