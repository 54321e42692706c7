//! The rate-limit use cases: deciding a request against its windows, with the configured
//! rates, the organizations' own rates, and the `rate_limit.exceeded` webhook on a refusal;
//! and chat admission ([`admission`]).

pub mod admission;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, Policy};
use crate::orgs::Orgs;
use crate::ratelimit::{Decision, Leases, Limiter, LimiterError, Request};
use crate::store::{ApiKeyRecord, Store, StoreError};
use crate::webhooks::Webhooks;

/// Rate-limit decisions for the whole application; cheap to clone.
#[derive(Clone)]
pub struct Limits {
    limiter: Limiter,
    leases: Leases,
    config: Arc<Config>,
    webhooks: Arc<Webhooks>,
    orgs: Orgs,
    store: Store,
    clock: Clock,
}

impl Limits {
    /// Decisions by `limiter` (concurrency by `leases`), at the rates of `config` and of the organizations in `orgs`;
    /// refusals are announced through `webhooks`.
    pub fn new(
        limiter: Limiter,
        leases: Leases,
        config: Arc<Config>,
        webhooks: Arc<Webhooks>,
        orgs: Orgs,
        store: Store,
        clock: Clock,
    ) -> Self {
        Self {
            limiter,
            leases,
            config,
            webhooks,
            orgs,
            store,
            clock,
        }
    }

    /// The limiter itself, for callers that peek or decide outside these use cases.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Decides a request, notes the decision for the response headers, and announces a
    /// refusal (`rate_limit.exceeded`).
    pub async fn check(&self, req: &Request) -> Result<Decision, LimiterError> {
        let d = self.limiter.check(req).await?;
        self.announce(req, &d);
        Ok(d)
    }

    /// Notes a decision made elsewhere (with a key's credits, in one call) for the response
    /// headers, and announces a refusal, as [`Limits::check`] does for its own.
    pub fn announce(&self, req: &Request, d: &Decision) {
        crate::ratelimit::noted::note(d);
        if !d.allowed {
            self.webhooks.rate_limited(&self.store, &self.clock, req, d);
        }
    }

    /// A per-client-IP policy (sign-in, sign-up, …) for `ip` (already cut to a /64 for IPv6).
    pub async fn ip(&self, policy: Policy, ip: &str) -> Result<Decision, LimiterError> {
        let mut req = Request {
            tag: format!("ip:{ip}"),
            windows: Vec::new(),
            fail_closed: self.config.fails_closed(policy),
        };
        req.add(policy.name(), ip, self.config.rates(policy));
        self.check(&req).await
    }

    /// The key's own windows and (with `with_org`) its organization's, as one request.
    /// Every counter of an organization shares one tag, so the organization window is
    /// exact across all its keys.
    pub async fn key_request(
        &self,
        key: &ApiKeyRecord,
        with_org: bool,
    ) -> Result<Request, StoreError> {
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
            let org = self.orgs.rates(&key.org_id).await?;
            req.add(
                Policy::Org.name(),
                &key.org_id,
                org.as_ref().unwrap_or(self.config.rates(Policy::Org)),
            );
        }
        Ok(req)
    }

    /// The windows of an OAuth client acting for a person in `org_id`, as one request: the
    /// client's (all its users in the organization together), the person's (all their
    /// clients there together), both at the `api_key` rates, and the organization's.
    pub async fn oauth_request(
        &self,
        org_id: &str,
        client_id: &str,
        user_id: &str,
    ) -> Result<Request, StoreError> {
        let mut req = Request {
            tag: format!("org:{org_id}"),
            windows: Vec::with_capacity(8),
            fail_closed: self.config.fails_closed(Policy::ApiKey)
                || self.config.fails_closed(Policy::Org),
        };
        let rates = self.config.rates(Policy::ApiKey);
        req.add(OAUTH_CLIENT_POLICY, &format!("{org_id}/{client_id}"), rates);
        req.add(OAUTH_USER_POLICY, &format!("{org_id}/{user_id}"), rates);
        let org = self.orgs.rates(org_id).await?;
        req.add(
            Policy::Org.name(),
            org_id,
            org.as_ref().unwrap_or(self.config.rates(Policy::Org)),
        );
        Ok(req)
    }
}

/// The window of an OAuth client in one organization (at the `api_key` rates).
pub const OAUTH_CLIENT_POLICY: &str = "oauth_client";
/// The window of one person's OAuth clients in one organization (at the `api_key` rates).
pub const OAUTH_USER_POLICY: &str = "oauth_user";
