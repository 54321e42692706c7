//! Money budgets: prices, reserve before a chat goes upstream, settle when it ends, the
//! ledger, and `budget.threshold` alerts. See docs/spend.md.

pub mod counters;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::clock::Clock;
use crate::config::ModelPrice;
use crate::domain::budget::{check_budgets, Budget, Period};
use crate::fanout::Bus;
use crate::ratelimit::RedisLink;
use crate::store::{Audit, LedgerRow, OrgBudgets, SpendScope, Store, StoreError};
use counters::{Memory, RedisCounters, Reserved, Target};

/// Percentages of a budget at which `budget.threshold` is sent (once per period each).
pub const THRESHOLDS: [i64; 3] = [50, 80, 100];

/// How long an organization's budgets and prices are cached (changes made here or
/// announced over the bus apply at once).
const ORG_TTL: Duration = Duration::from_secs(30);

/// Why a chat may not go upstream, or a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpendError {
    /// A budget that applies has no room for the reservation.
    #[error("a spend budget is exhausted")]
    Exhausted(Box<Exhausted>),
    /// A budget applies and the model has no price.
    #[error("the model {0:?} has no price")]
    Unpriced(String),
    /// A setting is invalid.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Redis holds the counters and does not answer: refused, never counted per instance.
    #[error("the budget counters are unavailable")]
    Unavailable,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The warning of an unreachable Redis, said once per 10 s however many chats it refuses.
static UNREACHABLE: crate::ratelimit::Quiet = crate::ratelimit::Quiet::new(10_000);

fn redis_failed(what: &str, e: &counters::CounterFailure) {
    if let Some(quiet) = UNREACHABLE.due(crate::ratelimit::quiet::now_ms()) {
        tracing::warn!(error = %e, refused_quietly = quiet, "budget counters: Redis failed ({what}); chats under a budget are refused until it answers");
    }
}

/// Which budget refused, and its state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Exhausted {
    /// `key`, `org`, `end_user` or `client`.
    pub scope: &'static str,
    /// The key id, the organization id, the end user (`v:vis_…`, `u:{user_id}`), or the
    /// OAuth client's id.
    pub id: String,
    /// The budget's period.
    pub period: Period,
    /// The budget's amount (micro-units).
    pub amount: i64,
    /// Settled spend in the current period (micro-units).
    pub spent: i64,
    /// Unix ms at which the period ends; `null` for `total`.
    pub resets_at: Option<i64>,
}

/// What a chat is about to ask, for the reservation.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    /// The organization.
    pub org_id: &'a str,
    /// The key used, if any (named by the ledger row).
    pub key_id: Option<&'a str>,
    /// Whose key budgets these are: the key's roll line (`ApiKeyRecord::line`), so a roll
    /// does not restart their spend.
    pub key_line: Option<&'a str>,
    /// The key's budgets.
    pub key_budgets: Option<&'a [Budget]>,
    /// The end user (`v:vis_…` or `u:{user_id}`), if any.
    pub end_user: Option<&'a str>,
    /// The OAuth client whose token the chat came with, if any.
    pub client_id: Option<&'a str>,
    /// The model.
    pub model: &'a str,
    /// Bytes of every message sent upstream.
    pub prompt_bytes: u64,
    /// Messages sent upstream.
    pub messages: u64,
    /// The caller's `max_tokens`.
    pub max_tokens: Option<u32>,
}

/// A budget that applies to a reservation.
#[derive(Clone, Debug)]
struct Applied {
    scope: SpendScope,
    budget: Budget,
    /// The counter when reserved.
    target: Target,
}

/// A chat's reservation, until it is settled.
#[derive(Debug)]
pub struct Reservation {
    /// `spn_…`: the lease and the ledger row's id.
    pub id: String,
    org_id: String,
    key_id: Option<String>,
    end_user: Option<String>,
    client_id: Option<String>,
    model: String,
    price: Option<ModelPrice>,
    applied: Vec<Applied>,
    on_redis: bool,
    /// The `max_tokens` to send upstream.
    pub max_tokens: Option<u32>,
    /// The prompt's estimated tokens (used when the upstream reports none).
    pub prompt_estimate: u64,
    /// Micro-units reserved.
    pub reserved: i64,
}

/// The budget service.
#[derive(Clone)]
pub struct Spend {
    store: Store,
    clock: Clock,
    memory: Memory,
    redis: Option<RedisCounters>,
    prices: Arc<BTreeMap<String, ModelPrice>>,
    /// The currency of every amount.
    pub currency: Arc<str>,
    reserve_cap: u32,
    lease_ms: i64,
    orgs: moka::sync::Cache<String, Arc<OrgSpend>>,
    alerted: moka::sync::Cache<String, ()>,
    bus: Option<Bus>,
}

/// An organization's budgets and prices, as cached.
#[derive(Debug, Default)]
struct OrgSpend {
    budgets: OrgBudgets,
    prices: HashMap<String, ModelPrice>,
}

/// Settings of the service.
pub struct SpendSettings {
    /// The configured price table.
    pub prices: BTreeMap<String, ModelPrice>,
    /// `currency`.
    pub currency: String,
    /// `chat_reserve_tokens`.
    pub reserve_cap: u32,
    /// `spend_lease_seconds`.
    pub lease_seconds: u64,
}

/// Tokens reported (or estimated) for a chat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Used {
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
}

/// The cost of `used` at `price`: each side rounded up to a whole micro-unit, in i128 so
/// no product overflows; saturates at `i64::MAX`.
pub fn cost(price: &ModelPrice, used: Used) -> i64 {
    let side = |tokens: u64, per_mtok: i64| -> i128 {
        let p = i128::from(tokens) * i128::from(per_mtok.max(0));
        (p + 999_999) / 1_000_000
    };
    let total =
        side(used.prompt, price.input_per_mtok) + side(used.completion, price.output_per_mtok);
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// An upper bound of a prompt's tokens: byte-level tokenizers never use more than one
/// token per byte, plus a few per message for the roles and separators.
pub fn prompt_upper_bound(bytes: u64, messages: u64) -> u64 {
    bytes + 4 * messages + 8
}

/// A rough count of tokens in text, as the echo upstream and estimates use it: a quarter of
/// its bytes, rounded up.
pub fn estimate_tokens(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

impl Spend {
    /// The service; budgets are counted in Redis when `redis` is given.
    pub fn new(
        store: Store,
        clock: Clock,
        redis: Option<RedisLink>,
        settings: SpendSettings,
    ) -> Self {
        Self {
            store,
            clock,
            memory: Memory::default(),
            redis: redis.map(RedisCounters::new),
            prices: Arc::new(settings.prices),
            currency: settings.currency.into(),
            reserve_cap: settings.reserve_cap,
            lease_ms: i64::try_from(settings.lease_seconds)
                .unwrap_or(300)
                .saturating_mul(1000),
            orgs: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ORG_TTL)
                .build(),
            alerted: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            bus: None,
        }
    }

    /// The same service, announcing changes over `bus`.
    pub fn with_bus(mut self, bus: Bus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Forgets an organization's cached budgets and prices (on this instance).
    pub fn forget_org(&self, org_id: &str) {
        self.orgs.invalidate(org_id);
    }

    /// Forgets every cached organization.
    pub fn forget_everything(&self) {
        self.orgs.invalidate_all();
    }

    async fn changed(&self, org_id: &str) {
        self.forget_org(org_id);
        if let Some(bus) = &self.bus {
            bus.invalidate(crate::fanout::Invalidation::Org(org_id.to_string()))
                .await;
        }
    }

    async fn org(&self, org_id: &str) -> Result<Arc<OrgSpend>, StoreError> {
        if let Some(o) = self.orgs.get(org_id) {
            return Ok(o);
        }
        let budgets = self.store.org_budgets(org_id).await?;
        let prices = self.store.org_prices(org_id).await?.into_iter().collect();
        let o = Arc::new(OrgSpend { budgets, prices });
        self.orgs.insert(org_id.to_string(), o.clone());
        Ok(o)
    }

    /// The price of `model` for an organization: its own, else the configured one.
    pub async fn price(&self, org_id: &str, model: &str) -> Result<Option<ModelPrice>, StoreError> {
        let o = self.org(org_id).await?;
        Ok(o.prices
            .get(model)
            .or_else(|| self.prices.get(model))
            .copied())
    }

    /// The configured price table.
    pub fn configured_prices(&self) -> &BTreeMap<String, ModelPrice> {
        &self.prices
    }

    /// An organization's own prices.
    pub async fn org_prices(&self, org_id: &str) -> Result<Vec<(String, ModelPrice)>, StoreError> {
        self.store.org_prices(org_id).await
    }

    /// Sets an organization's price of a model.
    pub async fn set_price(
        &self,
        org_id: &str,
        model: &str,
        price: ModelPrice,
        audit: &Audit,
    ) -> Result<(), SpendError> {
        check_model(model)?;
        for (field, v) in [
            ("input_per_mtok", price.input_per_mtok),
            ("output_per_mtok", price.output_per_mtok),
        ] {
            if !(0..=1_000_000_000_000).contains(&v) {
                return Err(SpendError::Invalid {
                    field,
                    problem: "must be between 0 and 1000000000000 micro-units".into(),
                });
            }
        }
        self.store
            .set_org_price(org_id, model, price, audit)
            .await?;
        self.changed(org_id).await;
        Ok(())
    }

    /// Removes an organization's price of a model (the configured one applies again).
    pub async fn delete_price(
        &self,
        org_id: &str,
        model: &str,
        audit: &Audit,
    ) -> Result<(), SpendError> {
        check_model(model)?;
        self.store.delete_org_price(org_id, model, audit).await?;
        self.changed(org_id).await;
        Ok(())
    }

    /// An organization's budgets.
    pub async fn budgets(&self, org_id: &str) -> Result<OrgBudgets, StoreError> {
        Ok(self.org(org_id).await?.budgets.clone())
    }

    /// Replaces an organization's budgets.
    pub async fn set_budgets(
        &self,
        org_id: &str,
        b: OrgBudgets,
        audit: &Audit,
    ) -> Result<OrgBudgets, SpendError> {
        for (field, list) in [
            ("budgets", &b.budgets),
            ("end_user_budgets", &b.end_user_budgets),
            ("client_budgets", &b.client_budgets),
        ] {
            if let Some(list) = list {
                check_budgets(list).map_err(|problem| SpendError::Invalid { field, problem })?;
            }
        }
        self.store.set_org_budgets(org_id, &b, audit).await?;
        self.changed(org_id).await;
        Ok(b)
    }

    /// The current settled spend of a budget (from the ledger, the truth).
    pub async fn spent(&self, scope: &SpendScope, period: Period) -> Result<i64, StoreError> {
        let now = self.clock.now_ms();
        self.store.spent_since(scope, period.start(now)).await
    }

    fn target(&self, scope: &SpendScope, b: &Budget, now: i64) -> Target {
        let start = b.period.start(now);
        let ttl_ms = b
            .period
            .resets_at(now)
            .map_or(30 * 86_400_000, |end| end - now + 3_600_000);
        Target {
            counter: format!("{}:{}:{}", scope_key(scope), b.period.as_str(), start),
            limit: (!b.soft).then_some(b.amount),
            ttl_ms,
        }
    }

    /// Reserves the worst case of a chat against every budget that applies, or says which
    /// refuses. A chat under no budget reserves nothing but is still settled in the ledger.
    pub async fn reserve(&self, ask: &Ask<'_>) -> Result<Reservation, SpendError> {
        let now = self.clock.now_ms();
        let org = self.org(ask.org_id).await?;
        let mut budgets: Vec<(SpendScope, &Budget)> = Vec::new();
        for b in ask.key_budgets.unwrap_or_default() {
            if let Some(k) = ask.key_line.or(ask.key_id) {
                budgets.push((SpendScope::Key(k.to_string()), b));
            }
        }
        for b in org.budgets.budgets.as_deref().unwrap_or_default() {
            budgets.push((SpendScope::Org(ask.org_id.to_string()), b));
        }
        if let Some(u) = ask.end_user {
            for b in org.budgets.end_user_budgets.as_deref().unwrap_or_default() {
                budgets.push((
                    SpendScope::EndUser(ask.org_id.to_string(), u.to_string()),
                    b,
                ));
            }
        }
        if let Some(c) = ask.client_id {
            for b in org.budgets.client_budgets.as_deref().unwrap_or_default() {
                budgets.push((SpendScope::Client(ask.org_id.to_string(), c.to_string()), b));
            }
        }
        let price = org
            .prices
            .get(ask.model)
            .or_else(|| self.prices.get(ask.model))
            .copied();
        let mut r = Reservation {
            id: format!("spn_{}", uuid::Uuid::now_v7().simple()),
            org_id: ask.org_id.to_string(),
            key_id: ask.key_id.map(str::to_string),
            end_user: ask.end_user.map(str::to_string),
            client_id: ask.client_id.map(str::to_string),
            model: ask.model.to_string(),
            price,
            applied: Vec::new(),
            on_redis: false,
            max_tokens: ask.max_tokens,
            prompt_estimate: estimate_tokens(ask.prompt_bytes) + ask.messages,
            reserved: 0,
        };
        if budgets.is_empty() {
            return Ok(r);
        }
        let Some(price) = price else {
            return Err(SpendError::Unpriced(ask.model.to_string()));
        };
        // The worst case: every prompt byte a token, and the whole completion allowance,
        // which is sent upstream as `max_tokens` so the model cannot go past it.
        let completion = ask.max_tokens.unwrap_or(self.reserve_cap);
        r.max_tokens = Some(completion);
        r.reserved = cost(
            &price,
            Used {
                prompt: prompt_upper_bound(ask.prompt_bytes, ask.messages),
                completion: u64::from(completion),
            },
        );
        r.applied = budgets
            .iter()
            .map(|(scope, b)| Applied {
                target: self.target(scope, b, now),
                scope: scope.clone(),
                budget: (*b).clone(),
            })
            .collect();
        let targets: Vec<Target> = r.applied.iter().map(|a| a.target.clone()).collect();
        let expires = now + self.lease_ms;
        // A counter missing is seeded, then the decision is made again; a seed that races
        // a settle from elsewhere only makes the next attempt see that settle.
        for _ in 0..4 {
            let found = self.try_reserve(&r, &targets, now, expires).await?;
            r.on_redis = self.redis.is_some();
            match found {
                Reserved::Done => return Ok(r),
                Reserved::Exhausted(i, spent) => {
                    let a = &r.applied[i.min(r.applied.len() - 1)];
                    // A key's budgets count under its roll line; the refusal names the key.
                    let id = match (&a.scope, &r.key_id) {
                        (SpendScope::Key(_), Some(k)) => k.clone(),
                        _ => scope_id(&a.scope),
                    };
                    return Err(SpendError::Exhausted(Box::new(Exhausted {
                        scope: scope_name(&a.scope),
                        id,
                        period: a.budget.period,
                        amount: a.budget.amount,
                        spent,
                        resets_at: a.budget.period.resets_at(now),
                    })));
                }
                Reserved::NeedSeed(need) => {
                    let mut seeds = Vec::with_capacity(need.len());
                    for i in need {
                        let Some(a) = r.applied.get(i) else { continue };
                        let v = self
                            .store
                            .spent_since(&a.scope, a.budget.period.start(now))
                            .await?;
                        seeds.push((&targets[i], v));
                    }
                    self.seed(&r, &seeds, now).await?;
                }
            }
        }
        Err(SpendError::Store(StoreError::Busy))
    }

    /// Reserves in Redis when it is configured (refused when it does not answer: counting
    /// per instance would let every instance spend the whole budget), else in memory.
    async fn try_reserve(
        &self,
        r: &Reservation,
        targets: &[Target],
        now: i64,
        expires: i64,
    ) -> Result<Reserved, SpendError> {
        match &self.redis {
            Some(redis) => redis
                .reserve(&r.org_id, targets, &r.id, r.reserved, now, expires)
                .await
                .map_err(|e| {
                    redis_failed("reserve", &e);
                    SpendError::Unavailable
                }),
            None => Ok(self
                .memory
                .reserve(targets, &r.id, r.reserved, now, expires)),
        }
    }

    async fn seed(
        &self,
        r: &Reservation,
        seeds: &[(&Target, i64)],
        now: i64,
    ) -> Result<(), SpendError> {
        match &self.redis {
            Some(redis) => redis.seed(&r.org_id, seeds, now).await.map_err(|e| {
                redis_failed("seed", &e);
                SpendError::Unavailable
            }),
            None => {
                self.memory.seed(seeds, now);
                Ok(())
            }
        }
    }

    /// The ledger row of a reservation's chat that used `used`.
    pub fn ledger_row(&self, r: &Reservation, used: Used) -> LedgerRow {
        LedgerRow {
            id: r.id.clone(),
            org_id: r.org_id.clone(),
            key_id: r.key_id.clone(),
            end_user: r.end_user.clone(),
            client_id: r.client_id.clone(),
            model: r.model.clone(),
            prompt_tokens: i64::try_from(used.prompt).unwrap_or(i64::MAX),
            completion_tokens: i64::try_from(used.completion).unwrap_or(i64::MAX),
            cost: r.price.map_or(0, |p| cost(&p, used)),
            created_at: self.clock.now_ms(),
        }
    }

    /// Keeps a long chat's reservation alive.
    pub async fn renew(&self, r: &Reservation) {
        if r.applied.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let counters: Vec<&str> = r
            .applied
            .iter()
            .map(|a| a.target.counter.as_str())
            .collect();
        let expires = now + self.lease_ms;
        if r.on_redis {
            if let Some(redis) = &self.redis {
                if let Err(e) = redis.renew(&r.org_id, &counters, &r.id, now, expires).await {
                    redis_failed("renew", &e);
                }
                return;
            }
        }
        self.memory.renew(&counters, &r.id, expires);
    }

    /// The lease's lifetime (ms).
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    /// Replaces the reservation by the settled cost, once `row` is durable in the ledger,
    /// and sends the threshold alerts it crossed.
    pub async fn settled(&self, r: Reservation, row: &LedgerRow) {
        if r.applied.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let at: Vec<Target> = r
            .applied
            .iter()
            .map(|a| self.target(&a.scope, &a.budget, now))
            .collect();
        let pairs: Vec<(&str, &str)> = r
            .applied
            .iter()
            .zip(&at)
            .map(|(a, t)| (a.target.counter.as_str(), t.counter.as_str()))
            .collect();
        let spent = match (&self.redis, r.on_redis) {
            (Some(redis), true) => {
                match redis.settle(&r.org_id, &pairs, &r.id, row.cost, now).await {
                    Ok(s) => s,
                    Err(e) => {
                        // The lease expires and the counter is then recounted from the ledger.
                        redis_failed("settle", &e);
                        vec![None; pairs.len()]
                    }
                }
            }
            _ => self.memory.settle(&pairs, &r.id, row.cost),
        };
        for (a, s) in r.applied.iter().zip(spent) {
            let Some(s) = s else { continue };
            self.alert(&r.org_id, a, s, now).await;
        }
    }

    /// Sends `budget.threshold` for every threshold `spent` reached that this period has
    /// not seen yet (stored once per budget, period and threshold, whichever instance saw
    /// it first).
    async fn alert(&self, org_id: &str, a: &Applied, spent: i64, now: i64) {
        let start = a.budget.period.start(now);
        let id = format!("{}:{}", scope_key(&a.scope), a.budget.period.as_str());
        for t in THRESHOLDS {
            if i128::from(spent) * 100 < i128::from(t) * i128::from(a.budget.amount) {
                continue;
            }
            let seen = format!("{id}:{start}:{t}");
            if self.alerted.contains_key(&seen) {
                continue;
            }
            let data = json!({
                "budget": {
                    "scope": scope_name(&a.scope), "id": scope_id(&a.scope),
                    "period": a.budget.period, "amount": a.budget.amount, "soft": a.budget.soft,
                },
                "threshold": t, "spent": spent, "amount": a.budget.amount,
                "period_start": start, "currency": &*self.currency,
            });
            match self
                .store
                .budget_alert(org_id, &id, start, t, data, now)
                .await
            {
                Ok(_) => self.alerted.insert(seen, ()),
                Err(e) => tracing::warn!(error = %e, "recording a budget alert failed"),
            }
        }
    }

    /// Writes a chat's cost to the ledger on its own (no exchange was stored: the model
    /// failed or the client went away), then settles it. Retried a few times; if storage
    /// stays down the lease expires and nothing is counted.
    pub async fn settle_alone(&self, r: Reservation, used: Used) {
        let row = self.ledger_row(&r, used);
        // Nothing used (a chat refused after its reservation): the ledger would gain a row of
        // zeros, each its own transaction outside the group commit, so a flood of refusals
        // would become a flood of writes. Only the reservation is given back.
        if used == Used::default() {
            self.settled(r, &row).await;
            return;
        }
        for attempt in 0..3u64 {
            match self.store.record_spend(std::slice::from_ref(&row)).await {
                Ok(()) => {
                    self.settled(r, &row).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "writing a settled cost failed");
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
    }

    /// Settled spend per bucket, key, OAuth client and model, from the ledger.
    pub async fn report(
        &self,
        org_id: &str,
        from: i64,
        to: i64,
        bucket_ms: i64,
        key_id: Option<&str>,
    ) -> Result<Vec<crate::store::SpendRow>, StoreError> {
        self.store
            .spend_report(org_id, from, to, bucket_ms, key_id)
            .await
    }

    /// Settled spend and in-flight reservations of a memory counter (tests).
    pub fn peek_memory(&self, counter: &str) -> Option<(Option<i64>, i64)> {
        self.memory.peek(counter)
    }
}

/// A chat's reservation that settles however the chat ends: call [`Guard::finish`] with
/// the durable ledger row, or drop it and the cost is written and settled in the background
/// (from the usage reported so far, or an estimate).
pub struct Guard {
    spend: Spend,
    reservation: Option<Reservation>,
    usage: Option<Used>,
    text_bytes: u64,
    last_renewed: i64,
}

impl Guard {
    /// A guard over a reservation.
    pub fn new(spend: Spend, r: Reservation) -> Self {
        let now = spend.clock.now_ms();
        Guard {
            spend,
            reservation: Some(r),
            usage: None,
            text_bytes: 0,
            last_renewed: now,
        }
    }

    /// The `max_tokens` to send upstream.
    pub fn max_tokens(&self) -> Option<u32> {
        self.reservation.as_ref().and_then(|r| r.max_tokens)
    }

    /// Notes answer text as it arrives, and keeps the lease alive on a long answer.
    pub async fn text(&mut self, t: &str) {
        self.text_bytes += t.len() as u64;
        let now = self.spend.clock.now_ms();
        if now - self.last_renewed > self.spend.lease_ms / 3 {
            self.last_renewed = now;
            if let Some(r) = &self.reservation {
                self.spend.renew(r).await;
            }
        }
    }

    /// Notes the usage the upstream reported.
    pub fn usage(&mut self, prompt: u64, completion: u64) {
        self.usage = Some(Used { prompt, completion });
    }

    /// The tokens to settle: as reported, else estimated (nothing when no text came).
    pub fn used(&self) -> Used {
        if let Some(u) = self.usage {
            return u;
        }
        if self.text_bytes == 0 {
            return Used::default();
        }
        Used {
            prompt: self.reservation.as_ref().map_or(0, |r| r.prompt_estimate),
            completion: estimate_tokens(self.text_bytes),
        }
    }

    /// The ledger row to store with the chat's exchange.
    pub fn row(&self) -> Option<LedgerRow> {
        let r = self.reservation.as_ref()?;
        Some(self.spend.ledger_row(r, self.used()))
    }

    /// Settles, now that `row` is durable.
    pub async fn finish(mut self, row: &LedgerRow) {
        if let Some(r) = self.reservation.take() {
            self.spend.settled(r, row).await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let used = self.used();
        let Some(r) = self.reservation.take() else {
            return;
        };
        // Nothing reserved in any budget and nothing used (a chat refused after the
        // reservation, by a token window say): nothing to give back and a zero to record.
        // Skipped, so a flood of refused chats writes nothing (each write would be its own
        // transaction, outside the group commit, and together they starve storage).
        if r.applied.is_empty() && used == Used::default() {
            return;
        }
        let spend = self.spend.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { spend.settle_alone(r, used).await });
        }
    }
}

fn check_model(model: &str) -> Result<(), SpendError> {
    if model.is_empty() || model.chars().count() > 200 || model.chars().any(char::is_control) {
        return Err(SpendError::Invalid {
            field: "model",
            problem: "must be 1 to 200 characters".into(),
        });
    }
    Ok(())
}

fn scope_key(s: &SpendScope) -> String {
    match s {
        SpendScope::Key(k) => format!("key:{k}"),
        SpendScope::Org(o) => format!("org:{o}"),
        SpendScope::EndUser(o, u) => format!("eu:{o}/{u}"),
        SpendScope::Client(o, c) => format!("oc:{o}/{c}"),
    }
}

fn scope_name(s: &SpendScope) -> &'static str {
    match s {
        SpendScope::Key(_) => "key",
        SpendScope::Org(_) => "org",
        SpendScope::EndUser(..) => "end_user",
        SpendScope::Client(..) => "client",
    }
}

fn scope_id(s: &SpendScope) -> String {
    match s {
        SpendScope::Key(k) => k.clone(),
        SpendScope::Org(o) => o.clone(),
        SpendScope::EndUser(_, u) | SpendScope::Client(_, u) => u.clone(),
    }
}

#[cfg(test)]
mod tests;
