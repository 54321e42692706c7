//! Gatehouse as an OAuth 2.1 authorization server (docs/oauth.md): clients (dynamic
//! registration, metadata documents, admin-registered), the authorization-code flow with
//! PKCE S256, consent (grants), access tokens in the RFC 9068 profile, refresh rotation with
//! reuse detection, revocation, introspection and userinfo.
//!
//! `http/oauth.rs` speaks the wire formats; this service owns the records, the rules and the
//! grant cache that `credentials` asks on every OAuth-authenticated request.

mod clients;
mod flow;
pub mod redirect;
pub mod scopes;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::jwt::JwtKeys;
use crate::clock::Clock;
use crate::config::Config;
use crate::fanout::{Bus, Invalidation};
use crate::orgs::Orgs;
use crate::store::{Audit, Store, StoreError};

pub use clients::{ClientAuth, ClientInfo, MetadataFetcher, NewAdminClient, Registered};
pub use flow::{
    AuthorizeParams, Authorized, ConsentView, Decision, Introspected, IntrospectionCaller,
    OrgChoice, SignedIn, TokenRequest, TokenResponse, UserInfo,
};

/// How long a live grant is believed without asking storage, when a revocation on another
/// instance may not arrive over the bus (no Redis).
pub const GRANT_CACHE_TTL: Duration = Duration::from_secs(10);

/// How long a pending authorization request waits for the person's decision.
pub const REQUEST_SECONDS: i64 = 600;

/// The resources Gatehouse serves (RFC 8707 / RFC 9728), by the path under `public_url`.
pub const RESOURCE_PATHS: [&str; 2] = ["/v1", "/api"];

/// A grant that is still live: what an OAuth access token may do, and for whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveGrant {
    /// `oag_…`.
    pub grant_id: String,
    /// The person who consented.
    pub user_id: String,
    /// The client acting for them.
    pub client_id: String,
    /// The client's name.
    pub client_name: String,
    /// The organization the grant applies to.
    pub org_id: String,
    /// The scopes consented to.
    pub scopes: Vec<String>,
    /// Whether the latest consent was given from an aal2 session (a second factor verified).
    pub aal2: bool,
}

/// A grant as the person's "Connected apps" list shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct GrantView {
    /// `oag_…`.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The client's name.
    pub client_name: String,
    /// The organization the grant applies to.
    pub org_id: String,
    /// The scopes consented to.
    pub scopes: Vec<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the last token issued under it.
    pub last_used_at: Option<i64>,
    /// The assurance level of the session that consented: `aal1` or `aal2`.
    pub aal: String,
}

/// Why an OAuth operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// A protocol error in the RFC 6749 format (`{error, error_description}`).
    #[error("{}: {}", .0.as_str(), .1)]
    Protocol(Protocol, String),
    /// Not found (the `/v1` routes and the consent API).
    #[error("{0} not found.")]
    NotFound(&'static str),
    /// A `/v1` or consent-API input is not acceptable: the field and the problem.
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    /// The caller may not do this (`/v1` routes and the consent API).
    #[error("{0}")]
    Forbidden(String),
    /// Storage failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Signing failed (no usable key).
    #[error("signing: {0}")]
    Signing(String),
}

impl OAuthError {
    fn protocol(p: Protocol, description: impl Into<String>) -> Self {
        OAuthError::Protocol(p, description.into())
    }
}

/// The RFC 6749 / 7591 / 8707 error codes Gatehouse answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Malformed or missing parameter.
    InvalidRequest,
    /// Client authentication failed or the client is unknown.
    InvalidClient,
    /// Code or refresh token invalid, expired, revoked, reused, or PKCE failed.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// Not `authorization_code` or `refresh_token`.
    UnsupportedGrantType,
    /// Unknown scope, or more than the grant holds.
    InvalidScope,
    /// `resource` is not one of Gatehouse's resources (RFC 8707).
    InvalidTarget,
    /// The person denied consent.
    AccessDenied,
    /// Only `code` is supported.
    UnsupportedResponseType,
    /// A registration's metadata is invalid (RFC 7591).
    InvalidClientMetadata,
    /// A registration's redirect URI is invalid (RFC 7591).
    InvalidRedirectUri,
    /// The access token is invalid (userinfo, RFC 6750).
    InvalidToken,
    /// `prompt=none` and the person must sign in (OpenID Connect).
    LoginRequired,
    /// `prompt=none` and the person must consent (OpenID Connect).
    ConsentRequired,
    /// Too many requests (registration flood); answered 429.
    SlowDown,
    /// Storage or the limiter is unavailable; answered 503.
    TemporarilyUnavailable,
}

impl Protocol {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::InvalidRequest => "invalid_request",
            Protocol::InvalidClient => "invalid_client",
            Protocol::InvalidGrant => "invalid_grant",
            Protocol::UnauthorizedClient => "unauthorized_client",
            Protocol::UnsupportedGrantType => "unsupported_grant_type",
            Protocol::InvalidScope => "invalid_scope",
            Protocol::InvalidTarget => "invalid_target",
            Protocol::AccessDenied => "access_denied",
            Protocol::UnsupportedResponseType => "unsupported_response_type",
            Protocol::InvalidClientMetadata => "invalid_client_metadata",
            Protocol::InvalidRedirectUri => "invalid_redirect_uri",
            Protocol::InvalidToken => "invalid_token",
            Protocol::LoginRequired => "login_required",
            Protocol::ConsentRequired => "consent_required",
            Protocol::SlowDown => "slow_down",
            Protocol::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// Every code, for the documentation test.
    pub const ALL: [Protocol; 16] = [
        Protocol::InvalidRequest,
        Protocol::InvalidClient,
        Protocol::InvalidGrant,
        Protocol::UnauthorizedClient,
        Protocol::UnsupportedGrantType,
        Protocol::InvalidScope,
        Protocol::InvalidTarget,
        Protocol::AccessDenied,
        Protocol::UnsupportedResponseType,
        Protocol::InvalidClientMetadata,
        Protocol::InvalidRedirectUri,
        Protocol::InvalidToken,
        Protocol::LoginRequired,
        Protocol::ConsentRequired,
        Protocol::SlowDown,
        Protocol::TemporarilyUnavailable,
    ];
}

/// The OAuth authorization server.
#[derive(Clone)]
pub struct OAuth {
    store: Store,
    clock: Clock,
    config: Arc<Config>,
    jwt: Arc<JwtKeys>,
    bus: Bus,
    orgs: Orgs,
    fetcher: MetadataFetcher,
    /// Grants by id: `Some` while live, `None` once revoked or unknown.
    grants: moka::future::Cache<String, Option<Arc<ActiveGrant>>>,
}

impl OAuth {
    /// The service, with an empty grant cache.
    pub fn new(
        store: Store,
        clock: Clock,
        config: Arc<Config>,
        jwt: Arc<JwtKeys>,
        bus: Bus,
        orgs: Orgs,
    ) -> anyhow::Result<Self> {
        let fetcher = MetadataFetcher::new(&config)?;
        Ok(Self {
            store,
            clock,
            config,
            jwt,
            bus,
            orgs,
            fetcher,
            grants: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(GRANT_CACHE_TTL)
                .build(),
        })
    }

    /// The issuer: `public_url` without a trailing slash.
    pub fn issuer(&self) -> &str {
        self.config.public_base()
    }

    /// The resource identifiers: `{public_url}/v1` and `{public_url}/api`.
    pub fn resources(&self) -> [String; 2] {
        RESOURCE_PATHS.map(|p| format!("{}{p}", self.issuer()))
    }

    /// Whether a grant is still live (not revoked); cached and invalidated over the fanout bus
    /// on revoke, so a warm check touches no storage. `Ok(None)` = revoked or unknown.
    pub async fn active_grant(&self, grant_id: &str) -> Result<Option<ActiveGrant>, OAuthError> {
        Ok(self.live_grant(grant_id).await?.map(|g| (*g).clone()))
    }

    async fn live_grant(&self, grant_id: &str) -> Result<Option<Arc<ActiveGrant>>, OAuthError> {
        if let Some(hit) = self.grants.get(grant_id).await {
            return Ok(hit);
        }
        let found = self
            .store
            .oauth_grant(grant_id)
            .await?
            .filter(|g| g.revoked_at.is_none())
            .map(|g| {
                Arc::new(ActiveGrant {
                    grant_id: g.id,
                    user_id: g.user_id,
                    client_id: g.client_id,
                    client_name: g.client_name,
                    org_id: g.org_id,
                    scopes: g.scopes.split_whitespace().map(str::to_string).collect(),
                    aal2: g.aal == "aal2",
                })
            });
        self.grants
            .insert(grant_id.to_string(), found.clone())
            .await;
        Ok(found)
    }

    /// Forgets a grant on this instance (a revocation here or on another instance).
    pub async fn forget_grant(&self, grant_id: &str) {
        self.grants.invalidate(grant_id).await;
    }

    /// Empties the grant cache (after invalidations may have been missed).
    pub fn forget_all(&self) {
        self.grants.invalidate_all();
    }

    /// A person's live grants ("Connected apps"), newest first.
    pub async fn grants_of(&self, user_id: &str) -> Result<Vec<GrantView>, OAuthError> {
        Ok(self
            .store
            .oauth_grants_of_user(user_id)
            .await?
            .into_iter()
            .map(|g| GrantView {
                id: g.id,
                client_id: g.client_id,
                client_name: g.client_name,
                org_id: g.org_id,
                scopes: g.scopes.split_whitespace().map(str::to_string).collect(),
                created_at: g.created_at,
                last_used_at: g.last_used_at,
                aal: g.aal,
            })
            .collect())
    }

    /// Revokes one of the person's grants: its refresh tokens die at once, its access tokens
    /// at their next use. `NotFound` for a grant that is not theirs or no longer live.
    pub async fn revoke_grant_of(
        &self,
        user_id: &str,
        grant_id: &str,
        ip: Option<String>,
    ) -> Result<(), OAuthError> {
        let owned = self
            .store
            .oauth_grant(grant_id)
            .await?
            .is_some_and(|g| g.user_id == user_id && g.revoked_at.is_none());
        if !owned {
            return Err(OAuthError::NotFound("Grant"));
        }
        let audit = Audit {
            actor: format!("user:{user_id}"),
            ip,
            now: self.clock.now_ms(),
        };
        self.revoke(grant_id, "revoked by the user", &audit).await
    }

    /// Revokes a grant and forgets it here and on every other instance.
    async fn revoke(&self, grant_id: &str, why: &str, audit: &Audit) -> Result<(), OAuthError> {
        self.store.revoke_oauth_grant(grant_id, why, audit).await?;
        self.bus
            .invalidate(Invalidation::OAuthGrant(grant_id.to_string()))
            .await;
        Ok(())
    }

    /// The audit identity of the server itself (reuse detection).
    fn system(&self) -> Audit {
        Audit {
            actor: "system".into(),
            ip: None,
            now: self.clock.now_ms(),
        }
    }
}
