//! Credential checks: API keys, access tokens and dashboard cookies, each turned into a
//! [`Principal`]. The service owns the caches that keep a warm check free of storage: access
//! tokens already verified, sessions known to exist, and dashboard sessions.
//!
//! A service above `auth/` (the cryptography) and beside `accounts` and `keys`, whose
//! checks it combines.

use std::sync::Arc;
use std::time::Duration;

use crate::accounts::Accounts;
use crate::auth::jwt::{Claims, JwtError};
use crate::auth::tokens;
use crate::clock::Clock;
use crate::error::Reason;
use crate::keys::{KeyFailure, Keys};
use crate::store::{SessionInfo, Store, StoreError};

mod oauth;
mod principal;
pub use oauth::{looks_like_at_jwt, Resource};
pub use principal::{Principal, Via};

/// How long a session's existence is trusted without asking storage (other instances'
/// sign-outs take at most this long to apply here).
pub const SESSION_CACHE_TTL: Duration = Duration::from_secs(10);

/// Why a credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The credential is missing, malformed, unknown, expired or revoked (answered 401 with
    /// `details.reason`).
    #[error("{message}")]
    Refused {
        /// Why, as `details.reason` says it.
        reason: Reason,
        /// What the caller is told.
        message: &'static str,
    },
    /// Storage could not be reached to check it (answered 503, never 401).
    #[error("storage is unavailable")]
    Unavailable,
}

impl CredentialError {
    fn refused(reason: Reason, message: &'static str) -> Self {
        CredentialError::Refused { reason, message }
    }
}

/// Checks credentials; cheap to clone (the caches are shared).
#[derive(Clone)]
pub struct Credentials {
    store: Store,
    clock: Clock,
    accounts: Accounts,
    keys: Keys,
    /// Sessions known to exist, so a JWT check needs no storage on a warm cache.
    live_sessions: moka::future::Cache<String, Option<SessionInfo>>,
    /// Access tokens already verified, by SHA-256 of the token.
    verified_tokens: moka::sync::Cache<String, Arc<Claims>>,
    /// Dashboard sessions by cookie hash: (user id, email, expiry ms, aal2).
    web_sessions: moka::future::Cache<String, Option<(String, String, i64, bool)>>,
    /// The authorization server, whose grants decide whether an OAuth token is still live.
    oauth: crate::oauth::OAuth,
    /// OAuth access tokens already verified, by resource and SHA-256 of the token.
    verified_oauth: moka::sync::Cache<(Resource, String), Arc<crate::auth::jwt::AccessClaims>>,
}

/// A storage failure while checking a credential is logged and answered as unavailable.
fn unavailable(cause: &dyn std::fmt::Display) -> CredentialError {
    tracing::error!(error = %cause, "credential check could not reach storage");
    CredentialError::Unavailable
}

impl Credentials {
    /// A service with empty caches.
    pub fn new(
        store: Store,
        clock: Clock,
        accounts: Accounts,
        keys: Keys,
        oauth: crate::oauth::OAuth,
    ) -> Self {
        Self {
            store,
            clock,
            accounts,
            keys,
            oauth,
            verified_oauth: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            live_sessions: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(SESSION_CACHE_TTL)
                .build(),
            verified_tokens: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            web_sessions: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(SESSION_CACHE_TTL)
                .build(),
        }
    }

    /// An API-key principal; no storage on a warm cache.
    pub async fn principal_from_key(&self, key: &str) -> Result<Principal, CredentialError> {
        match self.keys.verify(key).await {
            Ok(key) => Ok(Principal::ApiKey { key }),
            Err(why) => Err(CredentialError::refused(
                why.reason(),
                match why {
                    KeyFailure::Malformed => {
                        "The API key is malformed (check for a copy-paste error)."
                    }
                    KeyFailure::NotFound => "The API key does not exist.",
                    KeyFailure::Expired => "The API key has expired.",
                    KeyFailure::Revoked => "The API key has been revoked.",
                    KeyFailure::Unavailable => return Err(unavailable(&"key lookup")),
                },
            )),
        }
    }

    /// A user principal from an access token; the session's existence is cached briefly.
    pub async fn principal_from_jwt(&self, token: &str) -> Result<Principal, CredentialError> {
        let expired = || CredentialError::refused(Reason::Expired, "The access token has expired.");
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
                        CredentialError::refused(Reason::Malformed, "The access token is invalid.")
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
                .map_err(|e| unavailable(&e))?;
            let live = info
                .as_ref()
                .is_some_and(|s| s.user_id == claims.sub && self.accounts.within_bounds(s, now));
            if live {
                break;
            }
            self.live_sessions.invalidate(&claims.session_id).await;
            if info.as_ref().is_none_or(|s| s.user_id != claims.sub) {
                return Err(CredentialError::refused(
                    Reason::Revoked,
                    "The session has ended.",
                ));
            }
            if fresh {
                return Err(CredentialError::refused(
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
            aal2: claims.aal == "aal2",
            via: Via::Jwt,
        })
    }

    /// A user principal from the dashboard cookie.
    pub async fn principal_from_cookie(&self, cookie: &str) -> Result<Principal, CredentialError> {
        if cookie.is_empty() || cookie.len() > 128 {
            return Err(CredentialError::refused(
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
                let Some((uid, exp, aal2)) = store.web_session(&h, now).await? else {
                    return Ok(None);
                };
                let user = store.user_by_id(&uid).await?;
                Ok::<_, StoreError>(user.map(|u| (u.id, u.email, exp, aal2)))
            })
            .await
            .map_err(|e| unavailable(&e))?;
        match entry {
            Some((user_id, email, exp, aal2)) if exp > now => Ok(Principal::User {
                user_id,
                email,
                session_id: None,
                aal2,
                via: Via::Cookie,
            }),
            _ => {
                self.web_sessions.invalidate(&hash).await;
                Err(CredentialError::refused(
                    Reason::Expired,
                    "The dashboard session has ended; sign in again.",
                ))
            }
        }
    }

    /// Forgets a refresh session (signed out here or elsewhere).
    pub async fn forget_session(&self, session_id: &str) {
        self.live_sessions.invalidate(session_id).await;
    }

    /// Forgets a dashboard session, by the SHA-256 of its cookie.
    pub async fn forget_web_session(&self, hash: &str) {
        self.web_sessions.invalidate(hash).await;
    }

    /// Empties the caches this service owns (after missing invalidations).
    pub fn forget_all(&self) {
        self.live_sessions.invalidate_all();
        self.web_sessions.invalidate_all();
        self.verified_tokens.invalidate_all();
        self.verified_oauth.invalidate_all();
    }
}
