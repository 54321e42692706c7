//! Application state, router assembly and the serve loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::accounts::Accounts;
use crate::auth::jwt::{JwtError, JwtKeys};
use crate::auth::password::Hasher;
use crate::auth::tokens;
use crate::clock::Clock;
use crate::config::Policy;
use crate::config::{Config, SecretString};
use crate::error::ApiError;
use crate::error::Reason;
use crate::http::extract::{Principal, Via};
use crate::metrics::Metrics;
use crate::ratelimit::{Decision, Limiter, LimiterError, RedisLimiter, RedisLink, Request};
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

/// What the handle points at.
pub struct AppInner {
    /// Settings.
    pub config: Arc<Config>,
    /// Storage.
    pub store: Store,
    /// Users and sessions.
    pub accounts: Accounts,
    /// The key `/auth/v1` callers send in `apikey`.
    pub publishable_key: Arc<SecretString>,
    /// Time.
    pub clock: Clock,
    /// Rate-limit decisions (memory, or Redis with a memory fallback).
    pub limiter: Limiter,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Redis, when configured: shared limits and cache invalidation between instances.
    pub redis: Option<RedisLink>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Forwards `/api/…` to `proxy_target` (no redirects followed).
    pub proxy_client: reqwest::Client,
    /// The chat gateway.
    pub chat: crate::chat::Chat,
    /// API-key minting and cached verification.
    pub keys: crate::keys::Keys,
    /// Widgets: cached records, sessions, signatures and the replay cache.
    pub widgets: crate::widgets::Widgets,
    /// Email flows: one-time links and codes, and the mail queue.
    pub email: crate::mail::flows::EmailFlows,
    /// Sessions known to exist, so a JWT check needs no storage on a warm cache.
    live_sessions: moka::future::Cache<String, Option<crate::store::SessionInfo>>,
    /// Access tokens already verified, by SHA-256 of the token.
    verified_tokens: moka::sync::Cache<String, Arc<crate::auth::jwt::Claims>>,
    /// Webhook settings, delivery client and `rate_limit.exceeded` de-duplication.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Dashboard sessions by cookie hash: (user id, email, expiry ms).
    web_sessions: moka::future::Cache<String, Option<(String, String, i64)>>,
    /// Organizations, members and roles, with the organization rate-limit cache and the
    /// membership lists `/v1/me` shows.
    pub orgs: crate::orgs::Orgs,
    /// Invitations into organizations.
    pub invitations: crate::invitations::Invitations,
    /// Addresses whose credentials failed lately (`rate_limit_auth_failures`).
    pub auth_failures: crate::http::failures::FailureBudget,
    /// Cache invalidation here and on the other instances.
    pub bus: crate::fanout::Bus,
}

/// How long a session's existence is trusted without asking storage (other instances'
/// sign-outs take at most this long to apply here).
const SESSION_CACHE_TTL: Duration = Duration::from_secs(10);

const PUBLISHABLE_KEY_SETTING: &str = "publishable_key";
/// The deployment's key for widget session tokens, shared by every instance through storage.
const WIDGET_SESSION_KEY_SETTING: &str = "widget_session_key";

impl AppState {
    /// Opens storage, runs migrations and loads keys.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let store = Store::connect(&config.database_url).await?;
        store.migrate().await?;
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
            config.jwt_secret.as_ref().map(|s| s.expose()),
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
                SecretString::new(
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
        let metrics = Arc::new(Metrics::new());
        let redis = match &config.redis_url {
            Some(url) => Some(
                RedisLink::open(
                    url.expose(),
                    &config.redis_prefix,
                    Duration::from_millis(config.redis_timeout_ms),
                )
                .await?,
            ),
            None => None,
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
            &config.upstream_model,
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
            widget_key.into_bytes(),
            config.widget_session_seconds,
            redis.clone(),
        );
        let proxy_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_millis(config.upstream_timeout_ms))
            .build()?;
        let webhooks = Arc::new(crate::webhooks::Webhooks::new(&config)?);
        let email = crate::mail::flows::EmailFlows::new(
            store.clone(),
            clock.clone(),
            config.clone(),
            crate::mail::Mailer::new(&config)?,
        );
        let auth_failures =
            crate::http::failures::FailureBudget::new(config.rates(Policy::AuthFailures));
        let bus = crate::fanout::Bus::new(redis.clone(), metrics.clone());
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
        let state = AppState(Arc::new(AppInner {
            email,
            widgets,
            webhooks,
            proxy_client,
            chat,
            limiter,
            metrics,
            redis,
            trusted_proxies,
            orgs,
            invitations,
            keys,
            verified_tokens: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            config,
            store,
            accounts,
            publishable_key: Arc::new(publishable_key),
            clock,
            live_sessions: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(SESSION_CACHE_TTL)
                .build(),
            web_sessions: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(SESSION_CACHE_TTL)
                .build(),
            auth_failures,
            bus: bus.clone(),
        }));
        let caches: Arc<dyn crate::fanout::Forget> = state.0.clone();
        bus.attach(Arc::downgrade(&caches));
        Ok(state)
    }

    /// Decides a request and notes the decision for the response headers.
    pub async fn limit(&self, req: &Request) -> Result<Decision, LimiterError> {
        let d = self.limiter.check(req).await?;
        crate::http::limits::note(&d);
        if !d.allowed {
            self.webhooks
                .rate_limited(&self.store, &self.clock, req, &d);
        }
        Ok(d)
    }

    /// A per-client-IP policy (sign-in, sign-up, …) for `ip` (already cut to a /64 for IPv6).
    pub async fn limit_ip(&self, policy: Policy, ip: &str) -> Result<Decision, LimiterError> {
        let mut req = Request {
            tag: format!("ip:{ip}"),
            windows: Vec::new(),
            fail_closed: self.config.fails_closed(policy),
        };
        req.add(policy.name(), ip, self.config.rates(policy));
        self.limit(&req).await
    }

    /// The key's own windows and (with `with_org`) its organization's, as one decision.
    /// Every counter of an organization shares one tag, so the organization window is
    /// exact across all its keys.
    pub async fn key_request(
        &self,
        key: &crate::store::ApiKeyRecord,
        with_org: bool,
    ) -> Result<Request, ApiError> {
        let mut req = Request {
            tag: format!("org:{}", key.org_id),
            windows: Vec::with_capacity(4),
            fail_closed: self.config.fails_closed(Policy::ApiKey)
                || (with_org && self.config.fails_closed(Policy::Org)),
        };
        let key_rates = key
            .rate_limits
            .as_ref()
            .unwrap_or(self.config.rates(Policy::ApiKey));
        req.add(Policy::ApiKey.name(), &key.id, key_rates);
        if with_org {
            let org = self
                .orgs
                .rates(&key.org_id)
                .await
                .map_err(|e| storage_unavailable(&e))?;
            req.add(
                Policy::Org.name(),
                &key.org_id,
                org.as_ref().unwrap_or(self.config.rates(Policy::Org)),
            );
        }
        Ok(req)
    }

    /// Forgets cached state here and on every other instance.
    pub async fn invalidate(&self, inv: crate::fanout::Invalidation) {
        self.bus.invalidate(inv).await;
    }

    /// Forgets sessions that a change ended (a password change, a confirmed address), here
    /// and on every other instance.
    pub async fn end_sessions(&self, ended: crate::store::Ended) {
        use crate::fanout::Invalidation;
        for id in ended.sessions {
            self.invalidate(Invalidation::Session(id)).await;
        }
        for hash in ended.web_sessions {
            self.invalidate(Invalidation::WebSession(hash)).await;
        }
    }

    /// Forgets cached state on this instance.
    pub async fn apply(&self, inv: &crate::fanout::Invalidation) {
        self.0.apply(inv).await
    }

    /// Empties every credential cache (after missing invalidations).
    pub fn forget_everything(&self) {
        self.0.forget_everything()
    }

    /// An API-key principal; no storage on a warm cache.
    pub async fn principal_from_key(&self, key: &str) -> Result<Principal, ApiError> {
        match self.keys.verify(key).await {
            Ok(key) => Ok(Principal::ApiKey { key }),
            Err(why) => Err(ApiError::unauthorized(
                why.reason(),
                match why {
                    crate::keys::KeyFailure::Malformed => {
                        "The API key is malformed (check for a copy-paste error)."
                    }
                    crate::keys::KeyFailure::NotFound => "The API key does not exist.",
                    crate::keys::KeyFailure::Expired => "The API key has expired.",
                    crate::keys::KeyFailure::Revoked => "The API key has been revoked.",
                    crate::keys::KeyFailure::Unavailable => {
                        return Err(storage_unavailable(&"key lookup"))
                    }
                },
            )),
        }
    }

    /// A user principal from an access token; the session's existence is cached briefly.
    pub async fn principal_from_jwt(&self, token: &str) -> Result<Principal, ApiError> {
        let expired = || ApiError::unauthorized(Reason::Expired, "The access token has expired.");
        // An ES256 check costs ~100 µs; a token verified once is remembered by its hash
        // (never by the token itself) and only its expiry is checked again.
        let token_hash = tokens::sha256_hex(token);
        let claims = match self.verified_tokens.get(&token_hash) {
            Some(c) => c,
            None => {
                let now = self.clock.now_secs();
                let c = Arc::new(self.accounts.jwt.verify(token, now).map_err(|e| match e {
                    JwtError::Expired => expired(),
                    JwtError::Invalid => {
                        ApiError::unauthorized(Reason::Malformed, "The access token is invalid.")
                    }
                })?);
                self.verified_tokens.insert(token_hash, c.clone());
                c
            }
        };
        if crate::auth::jwt::is_expired(claims.exp, self.clock.now_secs()) {
            return Err(expired());
        }
        // The session's owner and times are cached for SESSION_CACHE_TTL; its bounds are
        // checked against the clock on every request. A cached entry that looks idle is read
        // again before the session is refused (it may have been refreshed elsewhere).
        let now = self.clock.now_ms();
        let mut fresh = false;
        loop {
            let store = self.store.clone();
            let sid = claims.session_id.clone();
            let info = self
                .live_sessions
                .try_get_with(claims.session_id.clone(), async move {
                    store.session_info(&sid).await
                })
                .await
                .map_err(|e| storage_unavailable(&e))?;
            let live = info
                .as_ref()
                .is_some_and(|s| s.user_id == claims.sub && self.accounts.within_bounds(s, now));
            if live {
                break;
            }
            self.live_sessions.invalidate(&claims.session_id).await;
            if info.as_ref().is_none_or(|s| s.user_id != claims.sub) {
                return Err(ApiError::unauthorized(
                    Reason::Revoked,
                    "The session has ended.",
                ));
            }
            if fresh {
                return Err(ApiError::unauthorized(
                    Reason::Expired,
                    "The session passed its time limit; sign in again.",
                ));
            }
            fresh = true;
        }
        Ok(Principal::User {
            user_id: claims.sub.clone(),
            email: claims.email.clone(),
            session_id: Some(claims.session_id.clone()),
            via: Via::Jwt,
        })
    }

    /// A user principal from the dashboard cookie.
    pub async fn principal_from_cookie(&self, cookie: &str) -> Result<Principal, ApiError> {
        if cookie.is_empty() || cookie.len() > 128 {
            return Err(ApiError::unauthorized(
                Reason::Malformed,
                "The session cookie is malformed.",
            ));
        }
        let hash = tokens::sha256_hex(cookie);
        let store = self.store.clone();
        let now = self.clock.now_ms();
        let h = hash.clone();
        let entry = self
            .web_sessions
            .try_get_with(hash.clone(), async move {
                let Some((uid, exp)) = store.web_session(&h, now).await? else {
                    return Ok(None);
                };
                let user = store.user_by_id(&uid).await?;
                Ok::<_, crate::store::StoreError>(user.map(|u| (u.id, u.email, exp)))
            })
            .await
            .map_err(|e| storage_unavailable(&e))?;
        match entry {
            Some((user_id, email, exp)) if exp > now => Ok(Principal::User {
                user_id,
                email,
                session_id: None,
                via: Via::Cookie,
            }),
            _ => {
                self.web_sessions.invalidate(&hash).await;
                Err(ApiError::unauthorized(
                    Reason::Expired,
                    "The dashboard session has ended; sign in again.",
                ))
            }
        }
    }
}

impl AppInner {
    /// Forgets cached state on this instance.
    async fn apply(&self, inv: &crate::fanout::Invalidation) {
        use crate::fanout::Invalidation;
        match inv {
            Invalidation::Key(hash) => self.keys.invalidate(hash).await,
            Invalidation::Session(id) => self.live_sessions.invalidate(id).await,
            Invalidation::Org(_) | Invalidation::Memberships(_) => self.orgs.forget(inv).await,
            Invalidation::WebSession(hash) => self.web_sessions.invalidate(hash).await,
            Invalidation::Widget(id) => self.widgets.forget(id).await,
        }
    }

    /// Empties every credential cache (after missing invalidations).
    fn forget_everything(&self) {
        self.keys.invalidate_all();
        self.live_sessions.invalidate_all();
        self.web_sessions.invalidate_all();
        self.verified_tokens.invalidate_all();
        self.orgs.forget_everything();
        self.widgets.forget_all();
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

/// A storage failure while checking a credential: 503 with `Retry-After`, never a 500 or a 401.
fn storage_unavailable(cause: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %cause, "credential check could not reach storage");
    ApiError::unavailable(1, "Storage is unavailable; retry shortly.")
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish; binds
/// `metrics_listen` first when it is set.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = bind_metrics(&state.config).await?;
    serve(state, listener, metrics, shutdown).await
}

/// The listener of `metrics_listen`, when it is set.
pub async fn bind_metrics(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    match config.metrics_listen {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics_listen): {e}")),
        None => Ok(None),
    }
}

/// [`run`] with the `metrics_listen` listener already bound (`None`: `/metrics` is on the
/// main listener). Both stop when `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use futures_util::FutureExt;
    let shutdown = shutdown.shared();
    let metrics_server = metrics_listener.map(|l| {
        let app = crate::http::metrics::own_router(state.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stop).await })
    });
    let app = crate::http::router(state.clone());
    // Each batch holds a row per key used since the last one: with many active keys a short
    // interval costs a core (see `write_behind_seconds`).
    let every = Duration::from_secs(state.config.write_behind_seconds);
    let writer = tokio::spawn(state.keys.clone().write_behind(every));
    let subscriber = tokio::spawn(state.bus.clone().subscribe());
    let usage = tokio::spawn(state.chat.usage.clone().write_behind(every));
    let webhooks = crate::webhooks::worker::spawn(state.clone());
    let (stop_mail, stop_rx) = tokio::sync::watch::channel(false);
    let mail = tokio::spawn(crate::mail::worker(
        state.email.clone(),
        state.store.clone(),
        state.clock.clone(),
        stop_rx,
    ));
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    if let Some(server) = metrics_server {
        if served.is_err() {
            server.abort();
        }
        match server.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
            Err(e) if e.is_panic() => tracing::warn!("the metrics listener panicked"),
            _ => {}
        }
    }
    served?;
    writer.abort();
    subscriber.abort();
    usage.abort();
    webhooks.stop().await;
    // A mail being handed to SMTP is finished rather than cut off (it would be sent again
    // by whichever instance takes the lease over).
    let _ = stop_mail.send(true);
    if tokio::time::timeout(Duration::from_secs(35), mail)
        .await
        .is_err()
    {
        tracing::warn!("the mail worker did not stop in time");
    }
    if let Err(e) = state.chat.usage.flush().await {
        tracing::warn!(error = %e, "could not write the usage counters at shutdown");
    }
    // Last-used times still in memory are written before storage closes.
    if let Err(e) = state.keys.flush_last_used().await {
        tracing::warn!(error = %e, "could not write the last-used times at shutdown");
    }
    state.store.close().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
