//! Users and sessions: sign-up, password sign-in, refresh-token rotation, sign-out.
//! Shared by the Supabase-compatible routes, the dashboard session and the CLI.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::auth::jwt::{Amr, Claims, JwtKeys};
use crate::auth::password::{needs_rehash, Hasher};
use crate::auth::password_policy::{PasswordPolicy, PolicyError, WeakPassword};
use crate::auth::tokens;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Email, Password};
use crate::store::{
    Assurance, Ended, Factor, NewUser, Rotation, SessionInfo, Store, StoreError, User,
};

mod mfa;
pub use mfa::{Enrolled, MfaError, MAX_WRONG_CODES_PER_CHALLENGE, TOTP_METHOD};

pub mod admin;

/// Why an account operation failed. The HTTP layer words each for its clients (GoTrue's
/// codes and messages on `/auth/v1`); the wording here is for logs.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Unknown email or wrong password (indistinguishable on purpose).
    #[error("unknown email or wrong password")]
    InvalidCredentials,
    /// Sign-in before the email was confirmed.
    #[error("the email address is not confirmed")]
    EmailNotConfirmed,
    /// Sign-up with a taken email.
    #[error("a user with this email already exists")]
    UserExists,
    /// The password fails the policy (with GoTrue's reasons).
    #[error("{0}")]
    WeakPassword(WeakPassword),
    /// The new password equals the old one.
    #[error("the new password equals the old one")]
    SamePassword,
    /// The refresh token is unknown or its session ended.
    #[error("the refresh token is unknown or its session ended")]
    RefreshNotFound,
    /// A rotated refresh token came back after the reuse interval: the session is revoked.
    #[error("a rotated refresh token was presented again")]
    RefreshAlreadyUsed,
    /// The session passed `session_max_seconds` or `session_inactivity_seconds`; it was
    /// ended (its id, so caches can forget it).
    #[error("the session passed its time limit")]
    SessionExpired(String),
    /// The session named by the token no longer exists.
    #[error("the session no longer exists")]
    SessionNotFound,
    /// The user is banned (`ban_duration`); where it was seen decides GoTrue's words.
    #[error("the user is banned")]
    Banned(BanSeen),
    /// The admin API named a user that does not exist.
    #[error("no such user")]
    UserNotFound,
    /// The admin API gave an address another user has.
    #[error("the address belongs to another user")]
    EmailExists,
    /// The admin API would delete the only owner of an organization.
    #[error("the user is the only owner of organization {org_id}")]
    SoleOwner {
        /// The organization's id.
        org_id: String,
        /// Its name.
        org_name: String,
    },
    /// A field is invalid.
    #[error("invalid input: {0:?}")]
    Validation(Invalid),
    /// Storage contention; retry.
    #[error("storage is busy")]
    Busy,
    /// Unexpected failure (details logged).
    #[error("internal error")]
    Internal,
}

/// What is invalid in an account request. The words a client reads are the HTTP layer's
/// (GoTrue's, on `/auth/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The address does not parse (the parser's reason).
    Email(&'static str),
    /// The password is longer than the policy's limit.
    PasswordTooLong,
    /// `data` (user metadata) is not a JSON object.
    DataNotObject,
    /// A sign-out scope other than `global`, `local` or `others`.
    Scope,
    /// An MFA factor's friendly name is over 100 characters.
    FriendlyName,
    /// A TOTP issuer is over 100 characters.
    Issuer,
    /// The admin API's `ban_duration` is not a duration (`24h`, `90m`, `none`).
    BanDuration,
    /// The admin API's user has no email (phone users are not offered).
    NoEmail,
    /// `app_metadata` or `user_metadata` is not a JSON object.
    MetadataNotObject,
    /// The admin API's `password_hash` is neither bcrypt nor argon2.
    PasswordHashFormat,
    /// The admin API got both `password` and `password_hash`.
    PasswordAndHash,
}

/// Where a ban refused a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanSeen {
    /// Password sign-in.
    SignIn,
    /// A refresh.
    Refresh,
    /// An emailed link or code.
    Link,
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => AccountError::Busy,
            StoreError::Conflict(_) => AccountError::UserExists,
            other => {
                tracing::error!(error = %other, "storage error");
                AccountError::Internal
            }
        }
    }
}

impl From<crate::auth::password::HashError> for AccountError {
    fn from(e: crate::auth::password::HashError) -> Self {
        tracing::error!(error = %e, "password hashing failed");
        AccountError::Internal
    }
}

/// A signed-in session as handed to a client.
pub struct IssuedSession {
    /// The JWT.
    pub access_token: String,
    /// The opaque refresh token.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Unix seconds at which it expires.
    pub expires_at: i64,
    /// The user.
    pub user: User,
    /// The session id.
    pub session_id: String,
    /// The user's MFA factors (the user object's `factors`).
    pub factors: Vec<Factor>,
}

/// The device a session is opened from, as the session list shows it: what the HTTP layer
/// saw of the request that signed in.
#[derive(Clone, Debug, Default)]
pub struct Device {
    /// The `User-Agent` header (cut to [`Device::MAX_USER_AGENT`] characters).
    pub user_agent: Option<String>,
    /// The client's address (trusted-proxy aware).
    pub ip: Option<String>,
}

impl Device {
    /// Most characters of a user agent kept.
    pub const MAX_USER_AGENT: usize = 512;

    /// A device from a raw user agent and an address.
    pub fn new(user_agent: Option<&str>, ip: Option<String>) -> Self {
        Device {
            user_agent: user_agent
                .map(|ua| ua.chars().take(Self::MAX_USER_AGENT).collect::<String>())
                .filter(|ua| !ua.trim().is_empty()),
            ip,
        }
    }
}

/// The outcome of sign-up.
pub enum SignUp {
    /// Confirmed at once: a session.
    Session(Box<IssuedSession>),
    /// Waiting for confirmation: the user, and the hash of the password this sign-up gave,
    /// which only this sign-up's confirmation link sets.
    Unconfirmed {
        /// The new user.
        user: User,
        /// argon2 hash of the password given with this sign-up.
        password_hash: String,
    },
    /// The address already has an account (confirmation on): nothing was created. An
    /// unconfirmed account gets this sign-up's own confirmation link; the answer must look
    /// like a fresh sign-up's.
    Existing {
        /// The account that has the address.
        user: User,
        /// argon2 hash of the password given with this sign-up.
        password_hash: String,
        /// The metadata this sign-up gave (echoed in the look-alike answer).
        metadata: Value,
    },
}

/// A session's `aal` and `amr` claims: `aal2` once a second factor was verified in it; `amr`
/// lists the methods, the most recent first, as GoTrue does.
fn assurance_claims(a: &Assurance) -> (String, Vec<Amr>) {
    let first = Amr {
        method: a.method.clone(),
        timestamp: a.started_at.div_euclid(1000),
    };
    match &a.second {
        Some((method, at)) => (
            "aal2".into(),
            vec![
                Amr {
                    method: method.clone(),
                    timestamp: at.div_euclid(1000),
                },
                first,
            ],
        ),
        None => ("aal1".into(), vec![first]),
    }
}

/// Account operations over the store, the hasher and the signing keys.
#[derive(Clone)]
pub struct Accounts {
    /// Storage.
    pub store: Store,
    /// argon2 on the blocking pool.
    pub hasher: Hasher,
    /// Access-token keys.
    pub jwt: Arc<JwtKeys>,
    /// Time.
    pub clock: Clock,
    /// Settings.
    pub config: Arc<Config>,
    /// Which new passwords are accepted.
    pub passwords: PasswordPolicy,
}

/// Bytes of randomness in a refresh token (256 bits).
const REFRESH_TOKEN_BYTES: usize = 32;

fn parse_email(raw: &str) -> Result<Email, AccountError> {
    Email::parse(raw).map_err(|m| AccountError::Validation(Invalid::Email(m)))
}

impl Accounts {
    async fn new_password(&self, raw: String, email: &str) -> Result<Password, AccountError> {
        let local = email.split('@').next().unwrap_or(email);
        self.passwords
            .check(raw, &[email, local])
            .await
            .map_err(|e| match e {
                PolicyError::TooLong => AccountError::Validation(Invalid::PasswordTooLong),
                PolicyError::Weak(w) => AccountError::WeakPassword(w),
                PolicyError::Unavailable => AccountError::Busy,
            })
    }

    /// Creates a user; with autoconfirm the answer carries a session.
    pub async fn sign_up(
        &self,
        email: &str,
        password: String,
        data: Option<Value>,
        device: &Device,
    ) -> Result<SignUp, AccountError> {
        let email = parse_email(email)?;
        let password = self.new_password(password, email.as_str()).await?;
        let metadata = match data {
            Some(Value::Object(m)) => Value::Object(m),
            None | Some(Value::Null) => json!({}),
            Some(_) => return Err(AccountError::Validation(Invalid::DataNotObject)),
        };
        let hash = self.hasher.hash(&password).await?;
        let created = self
            .store
            .create_user(NewUser {
                id: uuid::Uuid::new_v4().to_string(),
                email: email.as_str().to_string(),
                password_hash: hash.clone(),
                confirmed: self.config.autoconfirm,
                user_metadata: metadata.clone(),
                now: self.clock.now_ms(),
            })
            .await;
        let user = match created {
            Ok(user) => user,
            Err(StoreError::Conflict(_)) if !self.config.autoconfirm => {
                let user = self
                    .store
                    .user_by_email(email.as_str())
                    .await?
                    .ok_or(AccountError::UserExists)?;
                return Ok(SignUp::Existing {
                    user,
                    password_hash: hash,
                    metadata,
                });
            }
            Err(e) => return Err(e.into()),
        };
        if user.email_confirmed_at.is_some() {
            Ok(SignUp::Session(Box::new(
                self.start_session(user, "password", device).await?,
            )))
        } else {
            Ok(SignUp::Unconfirmed {
                user,
                password_hash: hash,
            })
        }
    }

    /// An anonymous sign-in (`signInAnonymously`): a user with no address and no password,
    /// signed in at once with the `anonymous` method (the caller checked that the setting is
    /// on, its limit and the captcha).
    pub async fn sign_up_anonymously(
        &self,
        data: Option<Value>,
        device: &Device,
    ) -> Result<IssuedSession, AccountError> {
        let metadata = match data {
            Some(Value::Object(m)) => Value::Object(m),
            None | Some(Value::Null) => json!({}),
            Some(_) => return Err(AccountError::Validation(Invalid::DataNotObject)),
        };
        let now = self.clock.now_ms();
        let user = self
            .store
            .create_anonymous_user(&uuid::Uuid::new_v4().to_string(), &metadata, now)
            .await?;
        self.store.touch_sign_in(&user.id, now).await?;
        let user = self
            .store
            .user_by_id(&user.id)
            .await?
            .ok_or(AccountError::SessionNotFound)?;
        self.start_session(user, "anonymous", device).await
    }

    /// Checks email and password; unknown users cost the same argon2 time as known ones.
    pub async fn authenticate(&self, email: &str, password: String) -> Result<User, AccountError> {
        let password = Password::presented(password);
        let user = match Email::parse(email) {
            Ok(e) => self.store.user_by_email(e.as_str()).await?,
            Err(_) => None,
        };
        let stored = user.as_ref().and_then(|u| u.password_hash.as_deref());
        let ok = self.hasher.verify(&password, stored).await?;
        let Some(user) = user.filter(|_| ok) else {
            return Err(AccountError::InvalidCredentials);
        };
        if user.email_confirmed_at.is_none() {
            return Err(AccountError::EmailNotConfirmed);
        }
        if user.banned_at(self.clock.now_ms()) {
            return Err(AccountError::Banned(BanSeen::SignIn));
        }
        if let Some(old) = user.password_hash.as_deref().filter(|h| needs_rehash(h)) {
            self.upgrade_hash(&user.id, old, &password).await;
        }
        Ok(user)
    }

    /// Replaces a hash of another kind (bcrypt, imported from Supabase) by argon2id, now that
    /// the password is known. A failure is logged and the sign-in goes on: the old hash still
    /// verifies next time.
    async fn upgrade_hash(&self, user_id: &str, old: &str, password: &Password) {
        let upgraded = match self.hasher.hash(password).await {
            Ok(new) => self
                .store
                .replace_password_hash(user_id, old, &new, self.clock.now_ms())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match upgraded {
            Ok(()) => tracing::info!(user_id, "password hash upgraded to argon2id"),
            Err(e) => {
                tracing::warn!(user_id, error = %e, "password hash not upgraded; will retry at the next sign-in")
            }
        }
    }

    /// A dashboard session for a user who just authenticated: the cookie's secret (stored
    /// only as its SHA-256) and its lifetime in seconds, `web_session_seconds` bounded by
    /// `session_max_seconds`. `aal2`: the person proved a second factor (an aal2 access
    /// token opened it).
    pub async fn start_web_session(
        &self,
        user_id: &str,
        aal2: bool,
    ) -> Result<(String, i64), AccountError> {
        let secret = tokens::random_token(32);
        let now = self.clock.now_ms();
        let ttl = self
            .config
            .session_max_seconds
            .map_or(self.config.web_session_seconds, |max| {
                max.min(self.config.web_session_seconds)
            });
        self.store
            .create_web_session(
                &tokens::sha256_hex(&secret),
                user_id,
                now,
                now + ttl * 1000,
                if aal2 { "aal2" } else { "aal1" },
            )
            .await?;
        Ok((secret, ttl))
    }

    /// Ends the dashboard session of a cookie (one already ended is no error). Returns the
    /// session's hash, the name caches know it by, so the caller can have them forget it.
    pub async fn end_web_session(&self, cookie: &str) -> Result<String, AccountError> {
        let hash = tokens::sha256_hex(cookie);
        match self.store.delete_web_session(&hash).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(hash),
            Err(e) => Err(e.into()),
        }
    }

    /// Password grant: a new session.
    pub async fn sign_in(
        &self,
        email: &str,
        password: String,
        device: &Device,
    ) -> Result<IssuedSession, AccountError> {
        let user = self.authenticate(email, password).await?;
        self.store
            .touch_sign_in(&user.id, self.clock.now_ms())
            .await?;
        self.start_session(user, "password", device).await
    }

    /// A session for a user who followed an emailed link or entered its code.
    pub async fn email_session(
        &self,
        user: User,
        method: &str,
        device: &Device,
    ) -> Result<IssuedSession, AccountError> {
        if user.banned_at(self.clock.now_ms()) {
            return Err(AccountError::Banned(BanSeen::Link));
        }
        self.store
            .touch_sign_in(&user.id, self.clock.now_ms())
            .await?;
        self.start_session(user, method, device).await
    }

    /// A session for the user of an exchanged PKCE auth code (`method`: what its link proved).
    pub async fn code_session(
        &self,
        user_id: &str,
        method: &str,
        device: &Device,
    ) -> Result<IssuedSession, AccountError> {
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(AccountError::SessionNotFound)?;
        self.email_session(user, method, device).await
    }

    async fn start_session(
        &self,
        user: User,
        method: &str,
        device: &Device,
    ) -> Result<IssuedSession, AccountError> {
        let refresh = tokens::random_token(REFRESH_TOKEN_BYTES);
        let now = self.clock.now_ms();
        let session_id = self
            .store
            .create_session(
                &user.id,
                method,
                &tokens::sha256_hex(&refresh),
                now,
                device.user_agent.as_deref(),
                device.ip.as_deref(),
            )
            .await?;
        let factors = self.store.mfa_factors(&user.id).await?;
        let assurance = Assurance {
            method: method.to_string(),
            started_at: now,
            second: None,
        };
        self.issue(user, session_id, refresh, &assurance, factors, now)
    }

    /// A new access token for a session that exists, at its current assurance level.
    async fn reissue(
        &self,
        user: User,
        session_id: String,
        refresh: String,
        now: i64,
    ) -> Result<IssuedSession, AccountError> {
        let assurance = self
            .store
            .session_assurance(&session_id)
            .await?
            .ok_or(AccountError::RefreshNotFound)?;
        let factors = self.store.mfa_factors(&user.id).await?;
        self.issue(user, session_id, refresh, &assurance, factors, now)
    }

    fn issue(
        &self,
        user: User,
        session_id: String,
        refresh: String,
        assurance: &Assurance,
        factors: Vec<Factor>,
        now_ms: i64,
    ) -> Result<IssuedSession, AccountError> {
        let iat = now_ms.div_euclid(1000);
        let (aal, amr) = assurance_claims(assurance);
        let ttl = self.config.jwt_expiry_seconds;
        let claims = Claims {
            iss: self.jwt.issuer().to_string(),
            sub: user.id.clone(),
            aud: "authenticated".into(),
            exp: iat + ttl,
            iat,
            email: user.email.clone(),
            phone: String::new(),
            role: "authenticated".into(),
            aal,
            amr,
            session_id: session_id.clone(),
            is_anonymous: user.is_anonymous,
            app_metadata: user.app_metadata.clone(),
            user_metadata: user.user_metadata.clone(),
        };
        let access_token = self.jwt.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            AccountError::Internal
        })?;
        Ok(IssuedSession {
            access_token,
            refresh_token: refresh,
            expires_in: ttl,
            expires_at: iat + ttl,
            user,
            session_id,
            factors,
        })
    }

    /// Refresh grant: rotates the token. A racing request within the reuse interval gets
    /// the same successor; a reuse after it revokes the whole session.
    pub async fn refresh(&self, presented: &str) -> Result<IssuedSession, AccountError> {
        if presented.is_empty() || presented.len() > 512 {
            return Err(AccountError::RefreshNotFound);
        }
        let row = self
            .store
            .refresh_token(&tokens::sha256_hex(presented))
            .await?
            .ok_or(AccountError::RefreshNotFound)?;
        let now = self.clock.now_ms();
        match self.store.session_info(&row.session_id).await? {
            Some(s) if self.within_bounds(&s, now) => {}
            Some(_) => {
                self.store.delete_session(&row.session_id).await?;
                return Err(AccountError::SessionExpired(row.session_id));
            }
            None => return Err(AccountError::RefreshNotFound),
        }
        // A ban refuses the refresh before anything rotates (GoTrue's answer too).
        let user = self
            .store
            .user_by_id(&row.user_id)
            .await?
            .ok_or(AccountError::RefreshNotFound)?;
        if user.banned_at(now) {
            return Err(AccountError::Banned(BanSeen::Refresh));
        }
        let successor = match row.revoked_at {
            None => {
                let child = tokens::random_token(REFRESH_TOKEN_BYTES);
                let sealed = tokens::seal_successor(presented, &child).map_err(|e| {
                    tracing::error!(error = %e, "sealing the successor failed");
                    AccountError::Internal
                })?;
                match self
                    .store
                    .rotate_refresh(&row, &tokens::sha256_hex(&child), &sealed, now)
                    .await?
                {
                    Rotation::Rotated => child,
                    Rotation::AlreadyRotated => self.reuse(presented, now).await?,
                }
            }
            Some(_) => self.reuse(presented, now).await?,
        };
        self.reissue(user, row.session_id, successor, now).await
    }

    /// A token that was already rotated: within the interval, the same successor;
    /// after it, the session is revoked.
    async fn reuse(&self, presented: &str, now: i64) -> Result<String, AccountError> {
        // Re-read: a racing request may have rotated the token since our first read.
        let row = self
            .store
            .refresh_token(&tokens::sha256_hex(presented))
            .await?
            .ok_or(AccountError::RefreshNotFound)?;
        let revoked_at = row.revoked_at.unwrap_or(now);
        let within = now - revoked_at <= self.config.refresh_reuse_interval_seconds * 1000;
        // A successor that does not open (one sealed in an older format, see
        // `tokens::open_successor`) is answered like a reuse after the interval.
        let successor = row
            .successor_sealed
            .as_deref()
            .and_then(|s| tokens::open_successor(presented, s));
        match successor {
            Some(child)
                if within
                    && self
                        .store
                        .refresh_token_exists(&tokens::sha256_hex(&child))
                        .await? =>
            {
                Ok(child)
            }
            _ => {
                self.store.delete_session(&row.session_id).await?;
                tracing::warn!(session_id = %row.session_id, "refresh token reused after rotation; session revoked");
                Err(AccountError::RefreshAlreadyUsed)
            }
        }
    }

    /// Whether a token session is still within `session_max_seconds` of its start and
    /// `session_inactivity_seconds` of its last refresh, at `now` (unix ms).
    pub fn within_bounds(&self, s: &SessionInfo, now: i64) -> bool {
        let over = |bound: Option<i64>, since: i64| bound.is_some_and(|b| now - since >= b * 1000);
        !over(self.config.session_max_seconds, s.created_at)
            && !over(self.config.session_inactivity_seconds, s.refreshed_at)
    }

    /// The user behind a verified access token, if its session still exists (and is within
    /// the session bounds).
    pub async fn session_user(&self, claims: &Claims) -> Result<User, AccountError> {
        match self.store.session_info(&claims.session_id).await? {
            Some(s) if s.user_id == claims.sub && self.within_bounds(&s, self.clock.now_ms()) => {}
            _ => return Err(AccountError::SessionNotFound),
        }
        self.store
            .user_by_id(&claims.sub)
            .await?
            .ok_or(AccountError::SessionNotFound)
    }

    /// When a token session signed in (unix ms), if it still exists.
    pub async fn session_started(&self, session_id: &str) -> Result<Option<i64>, AccountError> {
        Ok(self
            .store
            .session_info(session_id)
            .await?
            .map(|s| s.created_at))
    }

    /// The user's token sessions, the most recently refreshed first (at most 100).
    pub async fn device_sessions(
        &self,
        user_id: &str,
    ) -> Result<Vec<crate::store::DeviceSession>, AccountError> {
        Ok(self.store.user_sessions(user_id, 100).await?)
    }

    /// Ends one of the user's token sessions; false when the user has none with this id.
    pub async fn end_device_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<bool, AccountError> {
        Ok(self.store.delete_user_session(user_id, session_id).await?)
    }

    /// Ends every token session of the user but `keep`; returns the ended ids.
    pub async fn end_other_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>, AccountError> {
        Ok(self.store.delete_user_sessions(user_id, keep).await?)
    }

    /// Ends sessions: `local` (this one), `global` (all), `others` (all but this one).
    /// Returns the ids of the ended sessions.
    pub async fn sign_out(
        &self,
        claims: &Claims,
        scope: &str,
    ) -> Result<Vec<String>, AccountError> {
        match scope {
            "local" => {
                self.store.delete_session(&claims.session_id).await?;
                Ok(vec![claims.session_id.clone()])
            }
            "global" => Ok(self.store.delete_user_sessions(&claims.sub, None).await?),
            "others" => Ok(self
                .store
                .delete_user_sessions(&claims.sub, Some(&claims.session_id))
                .await?),
            _ => Err(AccountError::Validation(Invalid::Scope)),
        }
    }

    /// Changes password and/or metadata. A new password ends every other session of the
    /// user: token sessions but `keep` (the one that made the change) and every dashboard
    /// session; what ended comes back so the caller can tell every instance's caches.
    pub async fn update_user(
        &self,
        user: User,
        password: Option<String>,
        data: Option<Value>,
        keep: Option<&str>,
    ) -> Result<(User, Ended), AccountError> {
        let now = self.clock.now_ms();
        let mut ended = Ended::default();
        if let Some(raw) = password {
            let new = self.new_password(raw, &user.email).await?;
            if self
                .hasher
                .verify(&new, user.password_hash.as_deref())
                .await?
            {
                return Err(AccountError::SamePassword);
            }
            let hash = self.hasher.hash(&new).await?;
            ended = self
                .store
                .set_password_ending_sessions(&user.id, &hash, keep, now)
                .await?;
        }
        match data {
            None | Some(Value::Null) => {}
            Some(Value::Object(patch)) => {
                // GoTrue merges the given keys into the existing metadata; a null value removes a key.
                let mut merged = user.user_metadata.as_object().cloned().unwrap_or_default();
                for (k, v) in patch {
                    if v.is_null() {
                        merged.remove(&k);
                    } else {
                        merged.insert(k, v);
                    }
                }
                self.store
                    .set_user_metadata(&user.id, &Value::Object(merged), now)
                    .await?;
            }
            Some(_) => return Err(AccountError::Validation(Invalid::DataNotObject)),
        }
        let user = self
            .store
            .user_by_id(&user.id)
            .await?
            .ok_or(AccountError::SessionNotFound)?;
        Ok((user, ended))
    }

    /// Every user, a page at a time, in the order they signed up (the operator's
    /// listing): up to `limit` after the user `after`; `None` when `after` names no user.
    pub async fn list_users(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Option<Vec<User>>, AccountError> {
        if let Some(after) = after {
            if self.store.user_by_id(after).await?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(self.store.users_page(after, limit).await?))
    }

    /// Creates a confirmed user (operator CLI).
    pub async fn create_confirmed_user(
        &self,
        email: &str,
        password: String,
    ) -> Result<User, AccountError> {
        let email = parse_email(email)?;
        let password = self.new_password(password, email.as_str()).await?;
        let hash = self.hasher.hash(&password).await?;
        Ok(self
            .store
            .create_user(NewUser {
                id: uuid::Uuid::new_v4().to_string(),
                email: email.as_str().to_string(),
                password_hash: hash,
                confirmed: true,
                user_metadata: json!({}),
                now: self.clock.now_ms(),
            })
            .await?)
    }
}

impl Accounts {
    /// Picks up signing keys added by `gatehouse jwt rotate` (possibly on another host)
    /// and drops those whose tokens have all expired.
    pub async fn reload_signing_keys(&self) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let keys = self
            .store
            .jwt_keys(now, self.config.jwt_expiry_seconds * 1000)
            .await
            .map_err(|e| anyhow::anyhow!("reading signing keys failed: {e}"))?;
        self.jwt
            .reload(&keys)
            .map_err(|e| anyhow::anyhow!("reloading signing keys failed: {e}"))
    }
}
