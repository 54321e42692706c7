//! The email flows: one-time links and codes, sent through the queue and verified once.

use std::sync::Arc;

use rand::Rng;

use crate::auth::tokens;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::{
    EmailChangeStep, Ended, MailRequestRow, NewMail, OtpRow, Store, StoreError, User,
};

use super::templates::MailContext;
use super::Mailer;

/// Bytes of randomness in a link token (256 bits).
const LINK_TOKEN_BYTES: usize = 32;
/// Wrong codes that invalidate a code.
pub const MAX_CODE_ATTEMPTS: i64 = 5;

/// What a token proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtpKind {
    /// Confirm the address given at sign-up.
    Signup,
    /// Sign in (magic link or code).
    MagicLink,
    /// Password recovery.
    Recovery,
    /// Move the account to a new address: the link sent to the new address.
    EmailChange,
    /// The link of an email change sent to the current address.
    EmailChangeCurrent,
    /// The code of `/reauthenticate`: a nonce for a password change (never a link).
    Reauthentication,
    /// An invitation to the service (the admin API's `inviteUserByEmail`).
    Invite,
}

impl OtpKind {
    /// The name stored and used as `type`.
    pub fn name(self) -> &'static str {
        match self {
            OtpKind::Signup => "signup",
            OtpKind::MagicLink => "magiclink",
            OtpKind::Recovery => "recovery",
            OtpKind::EmailChange => "email_change",
            OtpKind::EmailChangeCurrent => "email_change_current",
            OtpKind::Reauthentication => "reauthentication",
            OtpKind::Invite => "invite",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "signup" => OtpKind::Signup,
            "magiclink" => OtpKind::MagicLink,
            "recovery" => OtpKind::Recovery,
            "email_change" => OtpKind::EmailChange,
            "email_change_current" => OtpKind::EmailChangeCurrent,
            "reauthentication" => OtpKind::Reauthentication,
            "invite" => OtpKind::Invite,
            _ => return None,
        })
    }

    fn template(self) -> &'static str {
        match self {
            OtpKind::Signup => "confirmation",
            OtpKind::MagicLink => "magic_link",
            OtpKind::Recovery => "recovery",
            OtpKind::EmailChange => "email_change",
            OtpKind::EmailChangeCurrent => "email_change_current",
            OtpKind::Reauthentication => "reauthentication",
            OtpKind::Invite => "invite_user",
        }
    }

    /// The `type` its link and code are verified with.
    pub fn verify_type(self) -> VerifyType {
        match self {
            OtpKind::Signup => VerifyType::Signup,
            OtpKind::MagicLink => VerifyType::MagicLink,
            OtpKind::Recovery => VerifyType::Recovery,
            OtpKind::EmailChange | OtpKind::EmailChangeCurrent => VerifyType::EmailChange,
            // No verification type accepts it (`VerifyType::accepts`): its mail has no link,
            // and its code only goes with a password change.
            OtpKind::Reauthentication => VerifyType::Email,
            OtpKind::Invite => VerifyType::Invite,
        }
    }

    /// The `amr` method of the session it opens.
    pub fn amr(self) -> &'static str {
        match self {
            OtpKind::Recovery => "recovery",
            OtpKind::EmailChange | OtpKind::EmailChangeCurrent => "email_change",
            OtpKind::Signup | OtpKind::MagicLink => "otp",
            OtpKind::Reauthentication => "reauthentication",
            OtpKind::Invite => "invite",
        }
    }
}

/// The `type` of a verification, as GoTrue names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyType {
    /// `signup`.
    Signup,
    /// `magiclink` (deprecated in GoTrue, still accepted).
    MagicLink,
    /// `email`: a sign-in or confirmation code.
    Email,
    /// `recovery`.
    Recovery,
    /// `email_change`.
    EmailChange,
    /// `invite`.
    Invite,
}

impl VerifyType {
    /// Parses `type`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "signup" => VerifyType::Signup,
            "magiclink" => VerifyType::MagicLink,
            "email" => VerifyType::Email,
            "recovery" => VerifyType::Recovery,
            "email_change" => VerifyType::EmailChange,
            "invite" => VerifyType::Invite,
            _ => return None,
        })
    }

    /// The name echoed in the redirect's `type`.
    pub fn name(self) -> &'static str {
        match self {
            VerifyType::Signup => "signup",
            VerifyType::MagicLink => "magiclink",
            VerifyType::Email => "email",
            VerifyType::Recovery => "recovery",
            VerifyType::EmailChange => "email_change",
            VerifyType::Invite => "invite",
        }
    }

    fn accepts(self, kind: OtpKind) -> bool {
        match self {
            VerifyType::Signup | VerifyType::MagicLink | VerifyType::Email => {
                matches!(kind, OtpKind::Signup | OtpKind::MagicLink)
            }
            VerifyType::Recovery => kind == OtpKind::Recovery,
            VerifyType::EmailChange => {
                matches!(kind, OtpKind::EmailChange | OtpKind::EmailChangeCurrent)
            }
            VerifyType::Invite => kind == OtpKind::Invite,
        }
    }
}

/// Why a flow failed; each maps to a GoTrue error code.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Unknown, used, expired or wrong token or code.
    #[error("the token or code is unknown, used, expired or wrong")]
    Invalid,
    /// A mail went to this address less than the interval ago (seconds to wait).
    #[error("a mail went to this address lately; retry in {0} s")]
    TooSoon(i64),
    /// The new address belongs to another user.
    #[error("the new address belongs to another user")]
    EmailExists,
    /// A PKCE auth code that is unknown or was already used.
    #[error("the auth code is unknown or used")]
    CodeNotFound,
    /// A PKCE auth code past its lifetime.
    #[error("the auth code has expired")]
    CodeExpired,
    /// A PKCE auth code presented with a verifier its challenge was not made from.
    #[error("the code verifier does not match the challenge")]
    BadCodeVerifier,
    /// Storage contention; retry.
    #[error("storage is busy")]
    Busy,
    /// Unexpected failure (details logged).
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for FlowError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => FlowError::Busy,
            other => {
                tracing::error!(error = %other, "storage error in an email flow");
                FlowError::Internal
            }
        }
    }
}

/// The email flows over the store and the mailer.
#[derive(Clone)]
pub struct EmailFlows {
    pub(super) store: Store,
    pub(super) clock: Clock,
    pub(super) config: Arc<Config>,
    /// Templates, redirects and delivery.
    pub mailer: Mailer,
    /// This instance's name on the requests it leases.
    owner: String,
}

/// Mail whose sending depends on who has an account: the route stores the request the same
/// way for every address and answers; the worker decides (see [`EmailFlows::handle_requests`]).
pub enum MailRequest {
    /// A sign-in link and code; `create_user` makes an account for a new address.
    SignIn {
        /// The normalised address.
        email: String,
        /// Create an unconfirmed account without a password when the address has none.
        create_user: bool,
        /// Metadata of such a new account.
        data: serde_json::Value,
    },
    /// A recovery link, if the address has an account.
    Recovery {
        /// The normalised address.
        email: String,
    },
    /// A sign-up's confirmation link, if the address's account is still unconfirmed.
    SignUp {
        /// The normalised address.
        email: String,
        /// That sign-up's argon2 password hash.
        password_hash: String,
    },
    /// `/resend`: the confirmation of a sign-up (if the address's account is unconfirmed) or
    /// of the pending email change of the account with this address.
    Resend {
        /// The normalised address.
        email: String,
        /// The email change's links rather than the sign-up's.
        email_change: bool,
    },
    /// An email change of `user_id` to `new`.
    EmailChange {
        /// The account.
        user_id: String,
        /// The normalised new address.
        new: String,
    },
}

/// A link made for the admin API (`generateLink`), or mailed by it (an invitation).
pub struct Issued {
    /// The link to follow (`/auth/v1/verify?token=…`).
    pub action_link: String,
    /// The six-digit code.
    pub code: String,
    /// The link's token (`token_hash` of `verifyOtp`).
    pub token: String,
    /// Where the link lands.
    pub redirect_to: String,
}

/// Which link the admin API makes (`generateLink`'s `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// A sign-up's confirmation (creates the account, with `password`, when new).
    Signup,
    /// An invitation (creates the account when new).
    Invite,
    /// A sign-in link (an unknown address gets a sign-up link instead, as GoTrue does).
    MagicLink,
    /// A password recovery.
    Recovery,
    /// An email change: the link for the current address.
    EmailChangeCurrent,
    /// An email change: the link for the new address.
    EmailChangeNew,
}

/// Why the admin API could not make a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The flow failed.
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// The address has no account (recovery, email change).
    #[error("no user has this address")]
    UserNotFound,
    /// The address is confirmed already (sign-up, invite), or the new address is taken.
    #[error("the address has a confirmed account")]
    EmailExists,
    /// `email_change_current` needs `email_change_double_confirm`.
    #[error("the current address confirms nothing without email_change_double_confirm")]
    CurrentNotConfirming,
}

/// How long the worker owns a request it took: a crashed worker's request waits this long.
const REQUEST_LEASE_MS: i64 = 30_000;

/// A verified token: whose it was and what it proved.
pub struct Verified {
    /// The user, after the verification's change (confirmed, new address).
    pub user: User,
    /// What the token was for.
    pub kind: OtpKind,
    /// Sessions the verification ended (confirming an address ends those that came before).
    pub ended: Ended,
    /// One side of an email change confirmed it; the other side's link is still to come
    /// (no session is opened).
    pub pending: bool,
    /// The PKCE challenge of the flow, when a PKCE client started it: a followed link then
    /// answers with an auth code bound to it rather than a session.
    pub code_challenge: Option<String>,
}

/// What starts the link token of a PKCE flow.
pub const PKCE_PREFIX: &str = "pkce_";

/// GoTrue's answer when one of the two links of an email change was followed.
pub const ONE_SIDE_CONFIRMED: &str =
    "Confirmation link accepted. Please proceed to confirm link sent to the other email";

impl EmailFlows {
    /// The flows.
    pub fn new(store: Store, clock: Clock, config: Arc<Config>, mailer: Mailer) -> Self {
        EmailFlows {
            store,
            clock,
            config,
            mailer,
            owner: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Stores a mail request and wakes the worker. Costs the same whether or not the address
    /// has an account; the request survives a crash until a worker has handled it.
    /// `code_challenge` (its stored form, see `auth::pkce`) makes it a PKCE flow: the
    /// mail's link then leads to an auth code instead of a session.
    pub async fn request(
        &self,
        req: MailRequest,
        redirect_to: Option<&str>,
        code_challenge: Option<String>,
    ) -> Result<(), FlowError> {
        let mut row = MailRequestRow {
            id: uuid::Uuid::now_v7().to_string(),
            kind: String::new(),
            email: String::new(),
            user_id: None,
            redirect_to: redirect_to.map(str::to_string),
            data: "{}".into(),
            password_hash: None,
            code_challenge,
            created_at: self.clock.now_ms(),
        };
        match req {
            MailRequest::SignIn {
                email,
                create_user,
                data,
            } => {
                row.kind = if create_user {
                    "magiclink"
                } else {
                    "magiclink_existing"
                }
                .into();
                row.email = email;
                row.data = data.to_string();
            }
            MailRequest::Recovery { email } => {
                row.kind = "recovery".into();
                row.email = email;
            }
            MailRequest::SignUp {
                email,
                password_hash,
            } => {
                row.kind = "signup".into();
                row.email = email;
                row.password_hash = Some(password_hash);
            }
            MailRequest::Resend {
                email,
                email_change,
            } => {
                row.kind = if email_change {
                    "resend_email_change"
                } else {
                    "resend_signup"
                }
                .into();
                row.email = email;
            }
            MailRequest::EmailChange { user_id, new } => {
                row.kind = "email_change".into();
                row.email = new;
                row.user_id = Some(user_id);
            }
        }
        self.store.add_mail_request(&row).await?;
        self.mailer.wake();
        Ok(())
    }

    /// Handles the stored requests one by one until none is left; returns how many. A
    /// request that fails on storage is left for its lease to lapse and is tried again; one
    /// older than `otp_expiry_seconds` is dropped (its link would be useless).
    pub async fn handle_requests(&self) -> usize {
        let mut handled = 0;
        loop {
            let now = self.clock.now_ms();
            let row = match self
                .store
                .lease_mail_request(&self.owner, now, now + REQUEST_LEASE_MS)
                .await
            {
                Ok(Some(row)) => row,
                Ok(None) => return handled,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the mail requests");
                    return handled;
                }
            };
            let stale = now - row.created_at > self.config.otp_expiry_seconds * 1000;
            let outcome = if stale {
                tracing::warn!(request_id = %row.id, "a mail request waited past the link expiry; dropped");
                Ok(())
            } else {
                self.handle(&row).await
            };
            match outcome {
                Ok(()) => {
                    handled += 1;
                    if let Err(e) = self.store.delete_mail_request(&row.id).await {
                        tracing::warn!(error = %e, request_id = %row.id, "cannot forget a handled mail request");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, request_id = %row.id, "mail request failed; retried after its lease");
                    return handled;
                }
            }
        }
    }

    async fn handle(&self, row: &MailRequestRow) -> Result<(), FlowError> {
        let redirect = row.redirect_to.as_deref();
        let pkce = row.code_challenge.as_deref();
        match row.kind.as_str() {
            "magiclink" => {
                let data =
                    serde_json::from_str(&row.data).unwrap_or_else(|_| serde_json::json!({}));
                let user = self.user_or_create(&row.email, &data).await?;
                self.send(OtpKind::MagicLink, &user, &user.email, redirect, pkce)
                    .await
            }
            "magiclink_existing" | "recovery" => {
                let kind = if row.kind == "recovery" {
                    OtpKind::Recovery
                } else {
                    OtpKind::MagicLink
                };
                match self.user(&row.email).await? {
                    Some(user) => self.send(kind, &user, &user.email, redirect, pkce).await,
                    None => Ok(()),
                }
            }
            "signup" => match (self.user(&row.email).await?, &row.password_hash) {
                (Some(user), Some(hash)) if user.email_confirmed_at.is_none() => {
                    self.send_signup(&user, hash.clone(), redirect, pkce).await
                }
                _ => Ok(()),
            },
            // A resent confirmation proves the address but vouches for no password: the one
            // waiting on the account may be somebody else's (who signed the address up first),
            // so following this link confirms the account without it (as a magic link does).
            "resend_signup" => match self.user(&row.email).await? {
                Some(user) if user.email_confirmed_at.is_none() => self
                    .issue(
                        OtpKind::Signup,
                        &user,
                        &user.email,
                        redirect,
                        None,
                        None,
                        pkce,
                        true,
                    )
                    .await
                    .map(drop),
                _ => Ok(()),
            },
            "resend_email_change" => match self.user(&row.email).await? {
                Some(user) => match self.store.pending_email_change(&user.id).await? {
                    Some(new) => self.request_email_change(&user, &new, redirect, pkce).await,
                    None => Ok(()),
                },
                None => Ok(()),
            },
            "email_change" => {
                let user = match &row.user_id {
                    Some(id) => self.store.user_by_id(id).await?,
                    None => None,
                };
                match user {
                    Some(user) => {
                        self.request_email_change(&user, &row.email, redirect, pkce)
                            .await
                    }
                    None => Ok(()),
                }
            }
            other => {
                tracing::warn!(kind = other, "unknown mail request kind; dropped");
                Ok(())
            }
        }
    }

    /// Takes the per-address sending slot; the same for known and unknown addresses.
    pub async fn address_slot(&self, address: &str) -> Result<(), FlowError> {
        let interval = self.config.mail_min_interval_seconds * 1000;
        let hash = tokens::sha256_hex(&format!("mail-address:{address}"));
        let now = self.clock.now_ms();
        if self.store.take_address_slot(&hash, now, interval).await? {
            return Ok(());
        }
        let last = self.store.address_last_sent(&hash).await?.unwrap_or(now);
        let wait = (last + interval - now).max(1000);
        Err(FlowError::TooSoon((wait + 999) / 1000))
    }

    /// Issues a token of `kind` for `user`, replacing the previous one, and queues its mail to
    /// `to` in the same transaction. `redirect_to` is checked against the allowlist.
    pub async fn send(
        &self,
        kind: OtpKind,
        user: &User,
        to: &str,
        redirect_to: Option<&str>,
        pkce: Option<&str>,
    ) -> Result<(), FlowError> {
        self.issue(kind, user, to, redirect_to, None, None, pkce, true)
            .await
            .map(drop)
    }

    /// The confirmation mail of one sign-up. Its link carries that sign-up's password (its
    /// argon2 hash): following it confirms the address with this password, and no other.
    pub async fn send_signup(
        &self,
        user: &User,
        password_hash: String,
        redirect_to: Option<&str>,
        pkce: Option<&str>,
    ) -> Result<(), FlowError> {
        self.issue(
            OtpKind::Signup,
            user,
            &user.email,
            redirect_to,
            Some(password_hash),
            None,
            pkce,
            true,
        )
        .await
        .map(drop)
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        kind: OtpKind,
        user: &User,
        to: &str,
        redirect_to: Option<&str>,
        password_hash: Option<String>,
        new_email: Option<&str>,
        pkce: Option<&str>,
        deliver: bool,
    ) -> Result<Issued, FlowError> {
        // A PKCE flow's link token says so by its prefix (as GoTrue's does), so that even a
        // failed verification answers the way a PKCE client reads it (in the query).
        let link_token = match pkce {
            Some(_) => format!("{PKCE_PREFIX}{}", tokens::random_token(LINK_TOKEN_BYTES)),
            None => tokens::random_token(LINK_TOKEN_BYTES),
        };
        let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now_ms();
        let redirect = self.mailer.redirects().resolve(redirect_to);
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let link = format!(
            "{}/auth/v1/verify?token={}&type={}&redirect_to={}",
            self.config.public_base(),
            link_token,
            kind.verify_type().name(),
            enc(&redirect)
        );
        let ctx = MailContext {
            confirmation_url: link,
            token: code.clone(),
            token_hash: link_token.clone(),
            email: user.email.clone(),
            new_email: match kind {
                OtpKind::EmailChange => Some(to.to_string()),
                OtpKind::EmailChangeCurrent => new_email.map(str::to_string),
                _ => None,
            },
            site_url: self.config.site().to_string(),
            redirect_to: redirect,
            expires_in_minutes: self.config.otp_expiry_seconds / 60,
            requested_at: crate::clock::rfc3339(now),
        };
        let issued = Issued {
            action_link: ctx.confirmation_url.clone(),
            code: code.clone(),
            token: link_token.clone(),
            redirect_to: ctx.redirect_to.clone(),
        };
        let otp = OtpRow {
            code_hash: code_hash(&id, &code),
            id,
            user_id: user.id.clone(),
            kind: kind.name().to_string(),
            email: to.to_string(),
            token_hash: tokens::sha256_hex(&link_token),
            expires_at: now + self.config.otp_expiry_seconds * 1000,
            password_hash,
            code_challenge: pkce.map(str::to_string),
        };
        if !deliver {
            self.store.issue_otp(&otp, None, now).await?;
            return Ok(issued);
        }
        let rendered = self
            .mailer
            .templates()
            .render(kind.template(), &ctx)
            .map_err(|e| {
                tracing::error!(error = %e, "a mail template failed to render");
                FlowError::Internal
            })?;
        let mail = NewMail {
            recipient: to.to_string(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        };
        self.store.issue_otp(&otp, Some(&mail), now).await?;
        self.mailer.wake();
        Ok(issued)
    }

    /// `PUT /user {email}`: starts a change to `new` (replacing any pending one). The new
    /// address gets its confirmation link, or, when another account has it, a notice instead
    /// (the caller's answer is the same, so the route reveals no account). The current
    /// address gets its own confirmation link when both must confirm
    /// (`email_change_double_confirm`), else a notice that the change was asked for.
    pub async fn request_email_change(
        &self,
        user: &User,
        new: &str,
        redirect_to: Option<&str>,
        pkce: Option<&str>,
    ) -> Result<(), FlowError> {
        let taken = self.store.user_by_email(new).await?.is_some();
        let now = self.clock.now_ms();
        self.store.begin_email_change(&user.id, new, now).await?;
        if taken {
            self.notice("email_in_use", new, &user.email, new).await?;
        } else {
            self.issue(
                OtpKind::EmailChange,
                user,
                new,
                redirect_to,
                None,
                None,
                pkce,
                true,
            )
            .await?;
        }
        if user.email.is_empty() {
            // An anonymous user has no current address to confirm from or to tell: the new
            // address alone decides (GoTrue's rule).
            Ok(())
        } else if self.config.email_change_double_confirm {
            self.issue(
                OtpKind::EmailChangeCurrent,
                user,
                &user.email,
                redirect_to,
                None,
                Some(new),
                pkce,
                true,
            )
            .await
            .map(drop)
        } else {
            self.notice("email_change_notice", &user.email, &user.email, new)
                .await
        }
    }

    /// Queues a mail without a link or code (`template` names it).
    async fn notice(
        &self,
        template: &str,
        to: &str,
        email: &str,
        new_email: &str,
    ) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let ctx = MailContext {
            confirmation_url: String::new(),
            token: String::new(),
            token_hash: String::new(),
            email: email.to_string(),
            new_email: Some(new_email.to_string()),
            site_url: self.config.site().to_string(),
            redirect_to: self.config.site().to_string(),
            expires_in_minutes: self.config.otp_expiry_seconds / 60,
            requested_at: crate::clock::rfc3339(now),
        };
        let rendered = self
            .mailer
            .templates()
            .render(template, &ctx)
            .map_err(|e| {
                tracing::error!(error = %e, "a mail template failed to render");
                FlowError::Internal
            })?;
        let mail = NewMail {
            recipient: to.to_string(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        };
        self.store.queue_mail(&mail, now).await?;
        self.mailer.wake();
        Ok(())
    }

    /// Mails `user` a reauthentication code (replacing a previous one).
    pub async fn send_reauthentication(&self, user: &User) -> Result<(), FlowError> {
        self.issue(
            OtpKind::Reauthentication,
            user,
            &user.email,
            None,
            None,
            None,
            None,
            true,
        )
        .await
        .map(drop)
    }

    /// Uses up `user_id`'s reauthentication code if `nonce` is it (`Invalid` otherwise). A
    /// wrong nonce spends one of the code's attempts.
    pub async fn check_reauthentication(
        &self,
        user_id: &str,
        nonce: &str,
    ) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let Some(row) = self
            .store
            .otp_for_user(user_id, OtpKind::Reauthentication.name())
            .await?
        else {
            return Err(FlowError::Invalid);
        };
        if row.expires_at <= now
            || !self
                .store
                .take_code_attempt(&row.id, MAX_CODE_ATTEMPTS)
                .await?
        {
            return Err(FlowError::Invalid);
        }
        if !tokens::ct_eq(&code_hash(&row.id, nonce.trim()), &row.code_hash) {
            self.store
                .drop_spent_otps(&[row.id], MAX_CODE_ATTEMPTS)
                .await?;
            return Err(FlowError::Invalid);
        }
        if !self.store.consume_otp(&row.id).await? {
            return Err(FlowError::Invalid);
        }
        Ok(())
    }

    /// Verifies a link token (`token` in the link, `token_hash` in `verifyOtp`).
    pub async fn verify_link(&self, token: &str, vtype: VerifyType) -> Result<Verified, FlowError> {
        if token.is_empty() || token.len() > 256 {
            return Err(FlowError::Invalid);
        }
        let row = self
            .store
            .otp_by_token_hash(&tokens::sha256_hex(token))
            .await?
            .ok_or(FlowError::Invalid)?;
        self.redeem(row, vtype).await
    }

    /// Verifies a six-digit code sent to `email`; a wrong code counts against the address's
    /// live tokens, which are dropped after `MAX_CODE_ATTEMPTS` wrong codes.
    pub async fn verify_code(
        &self,
        email: &str,
        code: &str,
        vtype: VerifyType,
    ) -> Result<Verified, FlowError> {
        let now = self.clock.now_ms();
        let rows: Vec<OtpRow> = self
            .store
            .otps_for_email(email, now)
            .await?
            .into_iter()
            .filter(|r| OtpKind::from_name(&r.kind).is_some_and(|k| vtype.accepts(k)))
            .collect();
        let code = code.trim();
        let mut hit = None;
        let mut tried = Vec::with_capacity(rows.len());
        for r in rows {
            // The attempt is spent first, so a burst of guesses gets no more than the limit.
            if !self
                .store
                .take_code_attempt(&r.id, MAX_CODE_ATTEMPTS)
                .await?
            {
                continue;
            }
            // Every candidate is compared, in constant time, whatever the outcome.
            if tokens::ct_eq(&code_hash(&r.id, code), &r.code_hash) && hit.is_none() {
                hit = Some(r);
            } else {
                tried.push(r.id);
            }
        }
        match hit {
            Some(row) => self.redeem(row, vtype).await,
            None => {
                self.store
                    .drop_spent_otps(&tried, MAX_CODE_ATTEMPTS)
                    .await?;
                Err(FlowError::Invalid)
            }
        }
    }

    async fn redeem(&self, row: OtpRow, vtype: VerifyType) -> Result<Verified, FlowError> {
        let now = self.clock.now_ms();
        let kind = OtpKind::from_name(&row.kind).ok_or(FlowError::Invalid)?;
        if !vtype.accepts(kind) || row.expires_at <= now {
            return Err(FlowError::Invalid);
        }
        // Single use: only the request that deletes the row goes on.
        if !self.store.consume_otp(&row.id).await? {
            return Err(FlowError::Invalid);
        }
        let mut ended = Ended::default();
        let mut pending = false;
        match kind {
            OtpKind::EmailChange | OtpKind::EmailChangeCurrent => {
                // 1: the new address confirmed; 2: the current one did.
                let (side, checked) = match kind {
                    OtpKind::EmailChange => (1, Some(row.email.as_str())),
                    _ => (2, None),
                };
                // An account without an address (an anonymous sign-in) has no current side.
                let has_current = self
                    .store
                    .user_by_id(&row.user_id)
                    .await?
                    .is_some_and(|u| !u.email.is_empty());
                let required = if self.config.email_change_double_confirm && has_current {
                    3
                } else {
                    1
                };
                match self
                    .store
                    .confirm_email_change(&row.user_id, side, checked, required, now)
                    .await
                {
                    Ok(EmailChangeStep::Applied) => {}
                    Ok(EmailChangeStep::Pending) => pending = true,
                    Err(StoreError::Conflict(_)) => return Err(FlowError::EmailExists),
                    Err(StoreError::NotFound) => return Err(FlowError::Invalid),
                    Err(e) => return Err(e.into()),
                }
            }
            // Following any emailed link proves the address. A sign-up's link also vouches
            // for the password given with that sign-up, and only that one: when somebody else
            // signed up the same address first, their password never signs in. A magic link
            // or a recovery vouches for no password, so one set on the unconfirmed account is
            // dropped (else a squatter who signed up first could sign in later).
            OtpKind::Signup => {
                ended = self
                    .store
                    .confirm_email(&row.user_id, row.password_hash.as_deref(), now)
                    .await?
            }
            OtpKind::MagicLink | OtpKind::Recovery | OtpKind::Invite => {
                ended = self.store.confirm_email(&row.user_id, None, now).await?
            }
            // Never accepted by a verification type (checked above).
            OtpKind::Reauthentication => return Err(FlowError::Invalid),
        }
        let user = self
            .store
            .user_by_id(&row.user_id)
            .await?
            .ok_or(FlowError::Invalid)?;
        Ok(Verified {
            user,
            kind,
            ended,
            pending,
            code_challenge: row.code_challenge,
        })
    }

    /// The user with this (normalised) address, if any.
    pub async fn user(&self, email: &str) -> Result<Option<User>, FlowError> {
        Ok(self.store.user_by_email(email).await?)
    }

    /// The user with this address, created unconfirmed and without a password if new.
    pub async fn user_or_create(
        &self,
        email: &str,
        data: &serde_json::Value,
    ) -> Result<User, FlowError> {
        Ok(self
            .store
            .create_passwordless_user(email, data, self.clock.now_ms())
            .await?)
    }
}

fn code_hash(id: &str, code: &str) -> String {
    tokens::sha256_hex(&format!("{id}:{code}"))
}

impl EmailFlows {
    /// `generateLink`: a link (and code) for `email` without mailing it, as GoTrue makes
    /// them: the account is created for a new address on `signup` (with `password_hash`),
    /// `invite` and `magiclink` (which becomes `signup`); `recovery` and the email changes
    /// need an account. Returns the user, the link and the type it was made as.
    pub async fn generate_link(
        &self,
        kind: LinkType,
        email: &str,
        new_email: Option<&str>,
        password_hash: Option<String>,
        data: &serde_json::Value,
        redirect_to: Option<&str>,
    ) -> Result<(User, Issued, &'static str), LinkError> {
        let existing = self.user(email).await?;
        let confirmed = existing
            .as_ref()
            .is_some_and(|u| u.email_confirmed_at.is_some());
        let (user, otp_kind, name) = match (kind, existing) {
            (LinkType::MagicLink, Some(u)) => (u, OtpKind::MagicLink, "magiclink"),
            (LinkType::MagicLink | LinkType::Signup, None) => (
                self.user_or_create(email, data).await?,
                OtpKind::Signup,
                "signup",
            ),
            (LinkType::Signup, Some(_)) if confirmed => return Err(LinkError::EmailExists),
            (LinkType::Signup, Some(u)) => (u, OtpKind::Signup, "signup"),
            (LinkType::Invite, Some(_)) if confirmed => return Err(LinkError::EmailExists),
            (LinkType::Invite, Some(u)) => (u, OtpKind::Invite, "invite"),
            (LinkType::Invite, None) => (
                self.user_or_create(email, data).await?,
                OtpKind::Invite,
                "invite",
            ),
            (LinkType::Recovery, Some(u)) => (u, OtpKind::Recovery, "recovery"),
            (LinkType::EmailChangeCurrent | LinkType::EmailChangeNew, Some(u)) => {
                let new = new_email.ok_or(LinkError::EmailExists)?;
                if kind == LinkType::EmailChangeCurrent && !self.config.email_change_double_confirm
                {
                    return Err(LinkError::CurrentNotConfirming);
                }
                if self.user(new).await?.is_some() {
                    return Err(LinkError::EmailExists);
                }
                // Both links of one change may be made: the second keeps the first alive.
                self.store
                    .begin_email_change_unless_pending(&u.id, new, self.clock.now_ms())
                    .await
                    .map_err(FlowError::from)?;
                let (k, n) = if kind == LinkType::EmailChangeNew {
                    (OtpKind::EmailChange, "email_change_new")
                } else {
                    (OtpKind::EmailChangeCurrent, "email_change_current")
                };
                (u, k, n)
            }
            (
                LinkType::Recovery | LinkType::EmailChangeCurrent | LinkType::EmailChangeNew,
                None,
            ) => return Err(LinkError::UserNotFound),
        };
        let to = match otp_kind {
            OtpKind::EmailChange => new_email.unwrap_or(email).to_string(),
            _ => user.email.clone(),
        };
        let hash = if otp_kind == OtpKind::Signup {
            password_hash
        } else {
            None
        };
        let issued = self
            .issue(
                otp_kind,
                &user,
                &to,
                redirect_to,
                hash,
                new_email,
                None,
                false,
            )
            .await?;
        let user = self
            .store
            .user_by_id(&user.id)
            .await
            .map_err(FlowError::from)?
            .ok_or(LinkError::UserNotFound)?;
        Ok((user, issued, name))
    }

    /// `inviteUserByEmail`: creates the account when new (unconfirmed, without a password)
    /// and mails it an invitation through the queue; a confirmed address is `EmailExists`.
    pub async fn invite(
        &self,
        email: &str,
        data: &serde_json::Value,
        redirect_to: Option<&str>,
    ) -> Result<User, LinkError> {
        let user = match self.user(email).await? {
            Some(u) if u.email_confirmed_at.is_some() => return Err(LinkError::EmailExists),
            Some(u) => u,
            None => self.user_or_create(email, data).await?,
        };
        self.issue(
            OtpKind::Invite,
            &user,
            &user.email,
            redirect_to,
            None,
            None,
            None,
            true,
        )
        .await?;
        self.store
            .user_by_id(&user.id)
            .await
            .map_err(FlowError::from)?
            .ok_or(LinkError::UserNotFound)
    }
}
