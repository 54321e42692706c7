//! Application state: the services and settings every handler may use.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::accounts::Accounts;
use crate::auth::jwt::JwtKeys;
use crate::auth::password::Hasher;
use crate::auth::tokens;
use crate::clock::Clock;
use crate::config::Policy;
use crate::config::{Config, SecretString};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::ratelimit::{Limiter, RedisLimiter, RedisLink};
use crate::store::Store;

/// Everything a handler may use; cheap to clone.
/// A cheap handle on the application: handlers and extractors clone it on every request, so
/// it is one `Arc` rather than a struct of caches.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// What the handle points at: the configuration, the values only the HTTP edge reads, the
/// services, and the runtime the serve loop and the CLI drive. Storage is reachable only
/// through the services and [`Runtime`], which `http/` never names (`tests/api/layers.rs`).
pub struct AppInner {
    /// Settings.
    pub config: Arc<Config>,
    /// What only the HTTP layer reads: the `apikey` gate, proxies, time and metrics.
    pub edge: Edge,
    /// Users and sessions.
    pub accounts: Accounts,
    /// Credential checks (keys, access tokens, dashboard cookies) and their caches.
    pub credentials: crate::credentials::Credentials,
    /// Organizations, members and roles, with the organization rate-limit cache and the
    /// membership lists `/v1/me` shows.
    pub orgs: crate::orgs::Orgs,
    /// Invitations into organizations.
    pub invitations: crate::invitations::Invitations,
    /// API-key minting and cached verification.
    pub keys: crate::keys::Keys,
    /// Widgets: cached records, sessions, signatures and the replay cache.
    pub widgets: crate::widgets::Widgets,
    /// Webhook settings, delivery client and `rate_limit.exceeded` de-duplication.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The chat gateway.
    pub chat: crate::chat::Chat,
    /// Money budgets: prices, reservations, settles and the ledger.
    pub spend: crate::spend::Spend,
    /// The OAuth 2.1 authorization server: clients, consent, codes and tokens.
    pub oauth: crate::oauth::OAuth,
    /// Email flows: one-time links and codes, and the mail queue.
    pub email: crate::mail::flows::EmailFlows,
    /// Sign-in with external providers (OpenID Connect, OAuth 2) and linked identities.
    pub external: crate::external::External,
    /// Rate-limit decisions (memory, or Redis with a memory fallback), with the configured
    /// and the organizations' rates.
    pub limits: Limits,
    /// Storage, Redis and the invalidation bus, for the serve loop and the CLI.
    pub runtime: Runtime,
}

/// The values the HTTP edge reads and no service needs.
pub struct Edge {
    /// The key `/auth/v1` callers send in `apikey`.
    pub publishable_key: Arc<SecretString>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Forwards `/api/…` to `proxy_target` (no redirects followed).
    pub proxy_client: reqwest::Client,
    /// Addresses whose credentials failed lately (`rate_limit_auth_failures`).
    pub auth_failures: crate::ratelimit::FailureBudget,
    /// Time, for `meta.ts`, the rate-limit headers and the state a view shows.
    pub clock: Clock,
    /// Prometheus metrics: recorded per request, rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// What the serve loop and the CLI drive below the services: never read by a handler.
pub struct Runtime {
    /// Storage (workers, shutdown, the CLI's maintenance commands).
    pub store: Store,
    /// Redis, when configured: shared limits and cache invalidation between instances.
    pub redis: Option<RedisLink>,
    /// Cache invalidation here and on the other instances.
    pub bus: crate::fanout::Bus,
}

use crate::credentials::SESSION_CACHE_TTL;

const PUBLISHABLE_KEY_SETTING: &str = "publishable_key";
/// The deployment's key for widget session tokens, shared by every instance through storage.
const WIDGET_SESSION_KEY_SETTING: &str = "widget_session_key";

impl AppState {
    /// Opens storage, runs migrations and loads keys.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let store = Store::open(&config).await?;
        let metrics = Arc::new(Metrics::new());
        let redis = RedisLink::open(&config.redis_settings()).await?;
        // Cache invalidation here and on the other instances; services get a clone.
        let bus = crate::fanout::Bus::new(redis.clone(), metrics.clone());
        let now = clock.now_ms();
        store
            .ensure_jwt_key(&crate::auth::jwt::generate_key(now)?)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let keys = store
            .jwt_keys(now, config.jwt_expiry_seconds * 1000)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let jwt = Arc::new(JwtKeys::new(
            &keys,
            config.jwt_secret.as_ref().map(|s| s.expose_secret()),
            config.issuer(),
        )?);
        let publishable_key = match &config.publishable_key {
            Some(k) => k.clone(),
            None => {
                let generated = format!(
                    "{}_publishable_{}",
                    config.key_prefix,
                    tokens::random_token(24)
                );
                SecretString::from(
                    store
                        .setting_or_insert(PUBLISHABLE_KEY_SETTING, &generated)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                )
            }
        };
        let hasher = Hasher::new(config.password_hash_concurrency)?;
        let accounts = Accounts {
            store: store.clone(),
            hasher,
            jwt,
            clock: clock.clone(),
            config: config.clone(),
            passwords: crate::auth::password_policy::PasswordPolicy::from_config(&config)?,
        };
        let keys = crate::keys::Keys::with_capacity(
            store.clone(),
            clock.clone(),
            &config.key_prefix,
            config.key_cache_capacity,
        );
        // Credits: Redis when configured (shared by every instance); else storage's conditional
        // update on PostgreSQL (instances share nothing else); else memory (one SQLite file).
        let meter = match (&redis, store.engine()) {
            (Some(link), _) => crate::keys::Meter::redis(store.clone(), link.clone()),
            (None, crate::store::Engine::Postgres) => crate::keys::Meter::storage(store.clone()),
            (None, crate::store::Engine::Sqlite) => crate::keys::Meter::memory(store.clone()),
        };
        let capacity = config.rate_limit_memory_capacity;
        let limiter = match &redis {
            Some(link) => Limiter::redis(
                RedisLimiter::new(link.clone()),
                capacity,
                clock.clone(),
                metrics.clone(),
            ),
            None => Limiter::memory(capacity, clock.clone(), metrics.clone()),
        };
        let trusted_proxies = config.proxy_nets()?;
        let upstream = crate::chat::upstream::Upstream::new(
            config.upstream_url.as_deref(),
            config.upstream_api_key.clone(),
            Duration::from_millis(config.upstream_timeout_ms),
        )?;
        let chat = crate::chat::Chat::new(
            store.clone(),
            clock.clone(),
            upstream,
            config.chat_history_messages,
        );
        let widget_key = store
            .setting_or_insert(WIDGET_SESSION_KEY_SETTING, &tokens::random_token(32))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let widgets = crate::widgets::Widgets::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            bus.clone(),
            widget_key.into_bytes(),
            config.widget_session_seconds,
            redis.clone(),
        );
        let proxy_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_millis(config.upstream_timeout_ms))
            .build()?;
        let webhooks = Arc::new(crate::webhooks::Webhooks::new(
            &config,
            store.clone(),
            clock.clone(),
        )?);
        let email = crate::mail::flows::EmailFlows::new(
            store.clone(),
            clock.clone(),
            config.clone(),
            crate::mail::Mailer::new(&config)?,
        );
        let auth_failures =
            crate::ratelimit::FailureBudget::new(config.rates(Policy::AuthFailures));
        // Membership lists follow other instances' changes within SESSION_CACHE_TTL when
        // invalidations do not arrive.
        let orgs = crate::orgs::Orgs::new(
            store.clone(),
            clock.clone(),
            bus.clone(),
            crate::keys::POSITIVE_TTL,
            SESSION_CACHE_TTL,
        );
        let invitations = crate::invitations::Invitations::new(
            store.clone(),
            clock.clone(),
            config.clone(),
            email.clone(),
            accounts.clone(),
            orgs.clone(),
            bus.clone(),
        );
        let leases = crate::ratelimit::Leases::new(
            redis.clone(),
            clock.clone(),
            Duration::from_secs(config.chat_lease_seconds),
        );
        let limits = Limits::new(
            limiter,
            leases,
            config.clone(),
            webhooks.clone(),
            orgs.clone(),
            store.clone(),
            clock.clone(),
        );
        let spend = crate::spend::Spend::new(
            store.clone(),
            clock.clone(),
            redis.clone(),
            crate::spend::SpendSettings {
                prices: config.models.clone(),
                currency: config.currency.clone(),
                reserve_cap: config.chat_reserve_tokens,
                lease_seconds: config.spend_lease_seconds,
            },
        )
        .with_bus(bus.clone());
        let oauth = crate::oauth::OAuth::new(
            store.clone(),
            clock.clone(),
            config.clone(),
            accounts.jwt.clone(),
            bus.clone(),
            orgs.clone(),
        )?;
        // OAuth access tokens are live while their grant is: credentials ask the OAuth service.
        let credentials = crate::credentials::Credentials::new(
            store.clone(),
            clock.clone(),
            accounts.clone(),
            keys.clone(),
            oauth.clone(),
        );
        let external = crate::external::External::new(
            store.clone(),
            accounts.clone(),
            config.clone(),
            clock.clone(),
        )?;
        let state = AppState(Arc::new(AppInner {
            spend,
            oauth,
            external,
            edge: Edge {
                publishable_key: Arc::new(publishable_key),
                trusted_proxies,
                proxy_client,
                auth_failures,
                clock,
                metrics,
            },
            email,
            widgets,
            webhooks,
            chat,
            limits,
            orgs,
            invitations,
            keys: keys.with_bus(bus.clone()).with_meter(meter),
            config,
            accounts,
            credentials,
            runtime: Runtime {
                store,
                redis,
                bus: bus.clone(),
            },
        }));
        let caches: Arc<dyn crate::fanout::Forget> = state.0.clone();
        bus.attach(Arc::downgrade(&caches));
        Ok(state)
    }

    /// Forgets cached state here and on every other instance.
    pub async fn invalidate(&self, inv: crate::fanout::Invalidation) {
        self.runtime.bus.invalidate(inv).await;
    }

    /// Forgets sessions that a change ended (a password change, a confirmed address), here
    /// and on every other instance.
    pub async fn end_sessions(&self, ended: crate::store::Ended) {
        use crate::fanout::Invalidation;
        for id in ended.sessions {
            self.runtime.bus.invalidate(Invalidation::Session(id)).await;
        }
        for hash in ended.web_sessions {
            self.runtime
                .bus
                .invalidate(Invalidation::WebSession(hash))
                .await;
        }
    }

    /// Whether storage answers (`/readyz`).
    pub async fn ready(&self) -> Result<(), crate::store::StoreError> {
        self.runtime.store.ping().await
    }

    /// Forgets cached state on this instance.
    pub async fn apply(&self, inv: &crate::fanout::Invalidation) {
        self.0.apply(inv).await
    }

    /// Empties every credential cache (after missing invalidations).
    pub fn forget_everything(&self) {
        self.0.forget_everything()
    }
}

impl AppInner {
    /// Forgets cached state on this instance.
    async fn apply(&self, inv: &crate::fanout::Invalidation) {
        use crate::fanout::Invalidation;
        match inv {
            Invalidation::Key(hash) => self.keys.invalidate(hash).await,
            Invalidation::Session(id) => self.credentials.forget_session(id).await,
            Invalidation::Org(id) => {
                self.spend.forget_org(id);
                self.orgs.forget(inv).await
            }
            Invalidation::Memberships(_) => self.orgs.forget(inv).await,
            Invalidation::WebSession(hash) => self.credentials.forget_web_session(hash).await,
            Invalidation::Widget(id) => self.widgets.forget(id).await,
            Invalidation::OAuthGrant(id) => self.oauth.forget_grant(id).await,
        }
    }

    /// Empties every credential cache (after missing invalidations).
    fn forget_everything(&self) {
        self.keys.invalidate_all();
        self.credentials.forget_all();
        self.orgs.forget_everything();
        self.widgets.forget_all();
        self.spend.forget_everything();
        self.oauth.forget_all();
    }
}

impl crate::fanout::Forget for AppInner {
    fn forget<'a>(
        &'a self,
        inv: &'a crate::fanout::Invalidation,
    ) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(self.apply(inv))
    }

    fn forget_everything(&self) {
        AppInner::forget_everything(self)
    }
}
