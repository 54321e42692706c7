//! Sign-in with external providers (supabase-js `signInWithOAuth`, `linkIdentity`): the flow
//! from `/authorize` to the provider and back to `/callback`, and the rules that decide
//! whose account a provider's identity opens.
//!
//! Account rules (GoTrue's, made stricter where an address is unproven):
//! - an identity already linked signs its user in;
//! - otherwise the provider must say the address is verified: an unverified address creates
//!   nothing and links to nothing (`provider_email_needs_verification`);
//! - a verified address of an existing account links the identity to it; if that account had
//!   not confirmed its address, it is confirmed now and its password is removed, since nobody
//!   proved the address when it was set (a sign-up squatting somebody's address never signs
//!   in with its password);
//! - a verified address without an account creates one, confirmed, without a password.
//!   `linkIdentity` links to the signed-in user whatever the address says, and refuses an
//!   identity that is linked already (`identity_already_exists`).

mod provider;

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::accounts::{AccountError, Accounts, Device, IssuedSession};
use crate::auth::sealed::SealingKey;
use crate::auth::{pkce, tokens};
use crate::clock::Clock;
use crate::config::{Config, ExternalProvider, ProviderKind};
use crate::domain::Email;
use crate::store::{
    AdminAudit, ExternalFlow, ExternalSignIn, Identity, PkceCode, Store, StoreError, Unlinked, User,
};

pub use provider::Providers;

/// The session method (`amr`) of a sign-in through a provider, as GoTrue names it.
pub const AMR_OAUTH: &str = "oauth";
/// How long a started sign-in waits for its callback.
pub const FLOW_SECONDS: i64 = 600;
/// The HKDF purpose of the key (derived from the state) sealing a flow's nonce and verifier.
const FLOW_PURPOSE: &str = "gatehouse/external-flow/v1";

/// Why a sign-in through a provider failed. The HTTP layer words each as GoTrue does.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// No enabled provider of that name.
    #[error("unsupported provider")]
    UnsupportedProvider(String),
    /// The callback carries no `state`.
    #[error("state missing")]
    StateMissing,
    /// The `state` is unknown or was used already.
    #[error("state not found or used")]
    StateNotFound,
    /// The flow waited too long.
    #[error("state expired")]
    StateExpired,
    /// The provider answered with an error (`error`, `error_description`).
    #[error("the provider refused: {0}")]
    ProviderRefused(String, String),
    /// The callback carries no `code`.
    #[error("code missing")]
    CodeMissing,
    /// The token endpoint refused the code.
    #[error("the provider refused the code")]
    ExchangeRefused,
    /// The provider could not be reached or answered nonsense.
    #[error("the provider is unavailable")]
    ProviderUnavailable,
    /// The ID token failed a check (which one).
    #[error("the ID token failed its {0} check")]
    IdToken(&'static str),
    /// The provider's description of the person lacks an id.
    #[error("the provider's profile is unusable")]
    Profile,
    /// The provider gave no usable address.
    #[error("no address from the provider")]
    NoEmail,
    /// The provider did not verify the address (the provider's name).
    #[error("the provider's address is unverified")]
    EmailUnverified(String),
    /// linkIdentity: the identity is linked already (to this user: `true`).
    #[error("the identity is linked already")]
    IdentityExists(bool),
    /// linkIdentity: the user to link to is gone.
    #[error("the user to link to is gone")]
    LinkTargetGone,
    /// unlink: no such identity of the user.
    #[error("no such identity")]
    IdentityNotFound,
    /// unlink: the user's only identity.
    #[error("the user's only identity")]
    LastIdentity,
    /// A PKCE challenge is malformed.
    #[error("bad PKCE challenge")]
    Challenge(pkce::ChallengeError),
    /// The account refused (banned, storage busy, …).
    #[error(transparent)]
    Account(#[from] AccountError),
    /// Storage is busy; retry.
    #[error("storage busy")]
    Busy,
    /// Unexpected failure (logged).
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for ExternalError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => ExternalError::Busy,
            other => {
                tracing::error!(error = %other, "storage error");
                ExternalError::Internal
            }
        }
    }
}

/// What `/authorize` asks for.
pub struct Start<'a> {
    /// The provider's name.
    pub provider: &'a str,
    /// Extra scopes (space or comma separated).
    pub scopes: Option<&'a str>,
    /// Where to land (already resolved against the allow-list).
    pub redirect_to: String,
    /// The client's PKCE challenge and method (flowType 'pkce').
    pub code_challenge: Option<&'a str>,
    /// See `code_challenge`.
    pub code_challenge_method: Option<&'a str>,
    /// Other query parameters, passed on to the provider (`queryParams`).
    pub extra: Vec<(String, String)>,
    /// linkIdentity: the signed-in user.
    pub link_user_id: Option<&'a str>,
}

/// What `/callback` received.
pub struct Callback<'a> {
    /// The provider's code.
    pub code: Option<&'a str>,
    /// The state `/authorize` sent.
    pub state: Option<&'a str>,
    /// The provider's error, if it refused.
    pub error: Option<&'a str>,
    /// Its description.
    pub error_description: Option<&'a str>,
}

/// How the browser lands.
pub enum Landing {
    /// Implicit flow: a session, and the provider's tokens (GoTrue hands them on).
    Session {
        /// The new session.
        session: Box<IssuedSession>,
        /// The provider's access token.
        provider_token: String,
        /// The provider's refresh token, if it gave one.
        provider_refresh_token: Option<String>,
    },
    /// PKCE flow: an auth code for `POST /token?grant_type=pkce`.
    Code(String),
}

/// A callback's outcome: where to land (`None` before the flow is known: the site URL), and
/// whether its errors go in the query too (a PKCE flow).
pub struct Finished {
    /// Where the browser goes.
    pub redirect_to: Option<String>,
    /// A PKCE flow (errors in the query as well as the fragment).
    pub pkce: bool,
    /// The landing, or why there is none.
    pub outcome: Result<Landing, ExternalError>,
}

/// The service.
#[derive(Clone)]
pub struct External {
    store: Store,
    accounts: Accounts,
    config: Arc<Config>,
    clock: Clock,
    providers: Arc<Providers>,
}

/// The secrets a flow keeps for its callback.
#[derive(serde::Serialize, serde::Deserialize)]
struct FlowSecrets {
    nonce: String,
    verifier: String,
}

fn flow_key(state: &str) -> Result<SealingKey, ExternalError> {
    SealingKey::derive(state.as_bytes(), FLOW_PURPOSE).map_err(|_| ExternalError::Internal)
}

/// The endpoints of one provider.
struct Endpoints {
    authorize: String,
    token: String,
    discovery: Option<Arc<provider::Discovery>>,
}

impl External {
    /// The service over storage, the accounts and the settings.
    pub fn new(
        store: Store,
        accounts: Accounts,
        config: Arc<Config>,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            accounts,
            config,
            clock,
            providers: Arc::new(Providers::new()?),
        })
    }

    /// The configured providers and whether each is on (for `/settings`).
    pub fn enabled(&self) -> impl Iterator<Item = (&str, bool)> {
        self.config
            .external_providers
            .iter()
            .map(|(name, p)| (name.as_str(), p.enabled))
    }

    fn provider(&self, name: &str) -> Result<&ExternalProvider, ExternalError> {
        self.config
            .external_providers
            .get(&name.to_ascii_lowercase())
            .filter(|p| p.enabled)
            .ok_or_else(|| ExternalError::UnsupportedProvider(name.to_string()))
    }

    /// The URL the provider sends the browser back to.
    pub fn callback_url(&self) -> String {
        format!("{}/auth/v1/callback", self.config.public_base())
    }

    async fn endpoints(&self, p: &ExternalProvider) -> Result<Endpoints, ExternalError> {
        match p.kind {
            ProviderKind::Oidc => {
                let d = self.providers.discovery(p).await?;
                Ok(Endpoints {
                    authorize: d.authorization_endpoint.clone(),
                    token: d.token_endpoint.clone(),
                    discovery: Some(d),
                })
            }
            ProviderKind::Oauth2 => Ok(Endpoints {
                authorize: p.authorize_url.clone().unwrap_or_default(),
                token: p.token_url.clone().unwrap_or_default(),
                discovery: None,
            }),
        }
    }

    /// Starts a sign-in: stores the flow and answers the provider's authorization URL.
    pub async fn start(&self, s: Start<'_>) -> Result<String, ExternalError> {
        let p = self.provider(s.provider)?;
        let name = s.provider.to_ascii_lowercase();
        let challenge = pkce::stored_challenge(s.code_challenge, s.code_challenge_method)
            .map_err(ExternalError::Challenge)?;
        let endpoints = self.endpoints(p).await?;
        let state = tokens::random_token(32);
        let secrets = FlowSecrets {
            nonce: tokens::random_token(24),
            verifier: tokens::random_token(48),
        };
        let plain = serde_json::to_vec(&secrets).map_err(|_| ExternalError::Internal)?;
        let sealed = flow_key(&state)?
            .seal(&plain, name.as_bytes())
            .map_err(|_| ExternalError::Internal)?;
        let now = self.clock.now_ms();
        let flow = ExternalFlow {
            provider: name.clone(),
            redirect_to: s.redirect_to,
            secrets_sealed: sealed,
            code_challenge: challenge,
            link_user_id: s.link_user_id.map(str::to_string),
            expires_at: now + FLOW_SECONDS * 1000,
        };
        self.store
            .add_external_flow(&tokens::sha256_hex(&state), &flow, now)
            .await?;
        let mut scopes = p.default_scopes();
        for extra in s
            .scopes
            .unwrap_or("")
            .split([' ', ','])
            .filter(|x| !x.is_empty())
        {
            if !scopes.iter().any(|x| x == extra) {
                scopes.push(extra.to_string());
            }
        }
        let mut url = url::Url::parse(&endpoints.authorize)
            .map_err(|_| ExternalError::ProviderUnavailable)?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &s.extra {
                q.append_pair(k, v);
            }
            q.append_pair("response_type", "code")
                .append_pair("client_id", &p.client_id)
                .append_pair("redirect_uri", &self.callback_url())
                .append_pair("state", &state)
                .append_pair("code_challenge", &pkce::s256_challenge(&secrets.verifier))
                .append_pair("code_challenge_method", "S256");
            if !scopes.is_empty() {
                q.append_pair("scope", &scopes.join(" "));
            }
            if p.kind == ProviderKind::Oidc {
                q.append_pair("nonce", &secrets.nonce);
            }
        }
        Ok(url.to_string())
    }

    /// Ends a sign-in at the callback: the state is used up whatever happens next.
    pub async fn finish(&self, c: Callback<'_>, device: &Device) -> Finished {
        let Some(state) = c.state.filter(|s| !s.is_empty() && s.len() <= 256) else {
            return Finished {
                redirect_to: None,
                pkce: false,
                outcome: Err(if c.state.is_some_and(|s| !s.is_empty()) {
                    ExternalError::StateNotFound
                } else {
                    ExternalError::StateMissing
                }),
            };
        };
        let flow = match self
            .store
            .take_external_flow(&tokens::sha256_hex(state))
            .await
        {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Finished {
                    redirect_to: None,
                    pkce: false,
                    outcome: Err(ExternalError::StateNotFound),
                }
            }
            Err(e) => {
                return Finished {
                    redirect_to: None,
                    pkce: false,
                    outcome: Err(e.into()),
                }
            }
        };
        let outcome = self.complete(&flow, state, &c, device).await;
        Finished {
            redirect_to: Some(flow.redirect_to),
            pkce: flow.code_challenge.is_some(),
            outcome,
        }
    }

    async fn complete(
        &self,
        flow: &ExternalFlow,
        state: &str,
        c: &Callback<'_>,
        device: &Device,
    ) -> Result<Landing, ExternalError> {
        if flow.expires_at <= self.clock.now_ms() {
            return Err(ExternalError::StateExpired);
        }
        if let Some(error) = c.error.filter(|e| !e.is_empty()) {
            return Err(ExternalError::ProviderRefused(
                error.chars().take(100).collect(),
                c.error_description
                    .unwrap_or("")
                    .chars()
                    .take(500)
                    .collect(),
            ));
        }
        let code = c
            .code
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or(ExternalError::CodeMissing)?;
        let plain = flow_key(state)?
            .open(&flow.secrets_sealed, flow.provider.as_bytes())
            .ok_or(ExternalError::StateNotFound)?;
        let secrets: FlowSecrets =
            serde_json::from_slice(&plain).map_err(|_| ExternalError::StateNotFound)?;
        let p = self.provider(&flow.provider)?;
        let endpoints = self.endpoints(p).await?;
        let answer = self
            .providers
            .exchange(
                p,
                &endpoints.token,
                code,
                &secrets.verifier,
                &self.callback_url(),
            )
            .await?;
        let person = match &endpoints.discovery {
            Some(d) => {
                let id_token = answer
                    .id_token
                    .as_deref()
                    .ok_or(ExternalError::IdToken("missing"))?;
                let claims = self
                    .providers
                    .verify_id_token(p, d, id_token, &secrets.nonce, self.clock.now_secs())
                    .await?;
                self.providers
                    .oidc_person(d, claims, &answer.access_token)
                    .await?
            }
            None => {
                self.providers
                    .oauth2_person(p, &answer.access_token)
                    .await?
            }
        };
        let email = person.email.as_deref().and_then(|e| Email::parse(e).ok());
        let mut data: Map<String, Value> = person.claims.clone();
        data.insert("provider_id".into(), json!(person.sub));
        data.insert("email_verified".into(), json!(person.email_verified));
        data.insert("phone_verified".into(), json!(false));
        if let Some(e) = &email {
            data.insert("email".into(), json!(e.as_str()));
        }
        let data = Value::Object(data);
        let now = self.clock.now_ms();
        let sign_in = ExternalSignIn {
            provider: &flow.provider,
            provider_id: &person.sub,
            identity_data: &data,
            email: email.as_ref().map(Email::as_str),
            ip: device.ip.clone(),
            now,
        };
        let user = match &flow.link_user_id {
            Some(target) => self.link_to(target, &sign_in).await?,
            None => {
                self.sign_in_or_up(&sign_in, email.as_ref(), person.email_verified)
                    .await?
            }
        };
        match &flow.code_challenge {
            Some(challenge) => {
                let code = tokens::random_token(32);
                let row = PkceCode {
                    user_id: user.id.clone(),
                    code_challenge: challenge.clone(),
                    method: AMR_OAUTH.to_string(),
                    expires_at: now + self.config.pkce_code_expiry_seconds * 1000,
                };
                if user.banned_at(now) {
                    return Err(AccountError::Banned(crate::accounts::BanSeen::Link).into());
                }
                self.store
                    .add_pkce_code(&tokens::sha256_hex(&code), &row, now)
                    .await?;
                Ok(Landing::Code(code))
            }
            None => {
                let session = self.accounts.email_session(user, AMR_OAUTH, device).await?;
                Ok(Landing::Session {
                    session: Box::new(session),
                    provider_token: answer.access_token,
                    provider_refresh_token: answer.refresh_token,
                })
            }
        }
    }

    async fn link_to(&self, target: &str, s: &ExternalSignIn<'_>) -> Result<User, ExternalError> {
        if let Some(existing) = self.store.identity(s.provider, s.provider_id).await? {
            return Err(ExternalError::IdentityExists(existing.user_id == target));
        }
        if self.store.user_by_id(target).await?.is_none() {
            return Err(ExternalError::LinkTargetGone);
        }
        match self.store.link_identity(target, false, s).await {
            Ok(u) => Ok(u),
            Err(StoreError::Conflict(_)) => Err(ExternalError::IdentityExists(false)),
            Err(e) => Err(e.into()),
        }
    }

    async fn sign_in_or_up(
        &self,
        s: &ExternalSignIn<'_>,
        email: Option<&Email>,
        verified: bool,
    ) -> Result<User, ExternalError> {
        if let Some(identity) = self.store.identity(s.provider, s.provider_id).await? {
            return self.returning(&identity, s).await;
        }
        let email = email.ok_or(ExternalError::NoEmail)?;
        if !verified {
            return Err(ExternalError::EmailUnverified(s.provider.to_string()));
        }
        let user = match self.store.user_by_email(email.as_str()).await? {
            Some(existing) => self.store.link_identity(&existing.id, true, s).await,
            None => {
                let meta = user_metadata(s.identity_data);
                self.store
                    .create_external_user(email.as_str(), &meta, s)
                    .await
            }
        };
        match user {
            Ok(u) => Ok(u),
            // A racing sign-in of the same person linked or created first: sign in as it did.
            Err(StoreError::Conflict(_)) => {
                match self.store.identity(s.provider, s.provider_id).await? {
                    Some(identity) => self.returning(&identity, s).await,
                    None => Err(ExternalError::Busy),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn returning(
        &self,
        identity: &Identity,
        s: &ExternalSignIn<'_>,
    ) -> Result<User, ExternalError> {
        self.store
            .external_sign_in(&identity.id, &identity.user_id, s)
            .await?;
        self.store
            .user_by_id(&identity.user_id)
            .await?
            .ok_or(ExternalError::StateNotFound)
    }

    /// A user's external identities.
    pub async fn identities(&self, user_id: &str) -> Result<Vec<Identity>, ExternalError> {
        Ok(self.store.identities_of(user_id).await?)
    }

    /// Unlinks one of the signed-in user's identities (never the last one).
    pub async fn unlink(
        &self,
        user_id: &str,
        identity_id: &str,
        ip: Option<String>,
    ) -> Result<(), ExternalError> {
        let audit = AdminAudit {
            actor: format!("user:{user_id}"),
            ip,
            now: self.clock.now_ms(),
        };
        match self
            .store
            .unlink_identity(user_id, identity_id, &audit)
            .await?
        {
            Unlinked::Done => Ok(()),
            Unlinked::NotFound => Err(ExternalError::IdentityNotFound),
            Unlinked::LastIdentity => Err(ExternalError::LastIdentity),
        }
    }
}

/// A new user's metadata from the provider's claims: GoTrue copies the profile there
/// (`name`, `full_name`, `avatar_url`, `picture`, …).
fn user_metadata(identity_data: &Value) -> Value {
    let mut meta = Map::new();
    if let Value::Object(d) = identity_data {
        for (k, v) in d {
            if !matches!(k.as_str(), "iss" | "provider_id") {
                meta.insert(k.clone(), v.clone());
            }
        }
        if let Some(name) = d.get("name") {
            meta.entry("full_name").or_insert(name.clone());
        }
        if let Some(pic) = d.get("picture") {
            meta.entry("avatar_url").or_insert(pic.clone());
        }
    }
    Value::Object(meta)
}
