//! Invitations: the only way into an organization. An owner (or anyone who may grant the
//! role) invites an address; the person holding that address accepts, and only then becomes a
//! member. Nothing about the invitee's account is revealed before that: the answer to an
//! invitation is the same for registered, unknown and member addresses.

use std::sync::Arc;

use crate::accounts::{AccountError, Accounts};
use crate::auth::tokens;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::Email;
use crate::fanout::{Bus, Invalidation};
use crate::ids::{InvitationId, OrgId};
use crate::mail::flows::{EmailFlows, FlowError};
use crate::mail::templates::InvitationContext;
use crate::orgs::{By, OrgError, Orgs};
use crate::store::{Audit, Invitation, NewInvitation, NewMail, Store, StoreError};

/// Bytes of randomness in an invitation token (256 bits).
const TOKEN_BYTES: usize = 32;

/// Who invites: a person, or the operator (`gatehouse org invite`).
pub struct Inviter<'a> {
    /// User id, or `cli`.
    pub id: &'a str,
    /// Shown to the invitee.
    pub email: &'a str,
}

/// Why an invitation use case failed.
#[derive(Debug, thiserror::Error)]
pub enum InvitationError {
    /// An organization rule refused it (access, the role, storage).
    #[error(transparent)]
    Org(#[from] OrgError),
    /// No such invitation.
    #[error("Invitation not found.")]
    NotFound,
    /// The organization is gone.
    #[error("Organization not found.")]
    OrgNotFound,
    /// The invitation is addressed to someone else.
    #[error("This invitation is addressed to another email address.")]
    WrongEmail,
    /// The caller's address is not confirmed, so it proves nothing.
    #[error("Confirm your email address first.")]
    EmailNotConfirmed,
    /// The signed-in user no longer exists.
    #[error("unknown user")]
    UnknownUser,
    /// The invitation is no longer pending: `accepted`, `declined`, `revoked`, `expired`
    /// or `gone`.
    #[error("This invitation is {0}.")]
    NotPending(String),
    /// The emailed token is unknown, used up or malformed.
    #[error("This invitation link is invalid.")]
    InvalidToken,
    /// A mail went to this address less than the interval ago (seconds to wait).
    #[error("This address was sent a mail recently; try again in {0} second{s}.", s = if *.0 == 1 { "" } else { "s" })]
    TooSoon(i64),
    /// A value (the password) is not acceptable.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The problem.
        problem: String,
    },
    /// An account for the address appeared while redeeming.
    #[error("An account for this address was just created; sign in, then accept.")]
    AccountJustCreated,
    /// An unconfirmed account older than the invitation: its password may be a squatter's.
    #[error(
        "The account for this address was created before the invitation and is not \
         confirmed: confirm it (a sign-in link or a password reset), sign in, then accept."
    )]
    AccountPredatesInvitation,
    /// The password is not the account's.
    #[error("Invalid login credentials: sign up with the invited address first.")]
    InvalidCredentials,
    /// Storage failed or is busy.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An unexpected failure (logged by whoever answers it).
    #[error("{0}")]
    Internal(String),
}

impl From<FlowError> for InvitationError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::TooSoon(secs) => InvitationError::TooSoon(secs),
            FlowError::Busy => StoreError::Busy.into(),
            other => InvitationError::Internal(other.to_string()),
        }
    }
}

/// The invitations service: cheap to clone.
#[derive(Clone)]
pub struct Invitations {
    store: Store,
    clock: Clock,
    config: Arc<Config>,
    email: EmailFlows,
    accounts: Accounts,
    orgs: Orgs,
    bus: Bus,
}

impl Invitations {
    /// The service over its dependencies.
    pub fn new(
        store: Store,
        clock: Clock,
        config: Arc<Config>,
        email: EmailFlows,
        accounts: Accounts,
        orgs: Orgs,
        bus: Bus,
    ) -> Self {
        Invitations {
            store,
            clock,
            config,
            email,
            accounts,
            orgs,
            bus,
        }
    }

    fn audit(&self, by: &By) -> Audit {
        Audit {
            actor: by.actor.clone(),
            ip: by.ip.clone(),
            now: self.clock.now_ms(),
        }
    }

    /// The accept page's link: the token rides in the fragment, so it never reaches a server
    /// log.
    pub fn accept_url(&self, id: &str, token: &str) -> String {
        format!(
            "{}/dashboard/#invitation={id}&token={token}",
            self.config.public_base()
        )
    }

    /// Invites `email` into `org` with `role` (already checked as grantable), replacing a
    /// pending invitation to the same address, and queues its mail unless the address is
    /// already a member's. The per-address mail interval applies to every address alike.
    pub async fn invite(
        &self,
        org: &OrgId,
        inviter: Inviter<'_>,
        email: &Email,
        role: &str,
        by: &By,
    ) -> Result<Invitation, InvitationError> {
        self.email.address_slot(email.as_str()).await?;
        let found = self
            .store
            .org(org)
            .await?
            .ok_or(InvitationError::OrgNotFound)?;
        let id = InvitationId::new();
        let token = tokens::random_token(TOKEN_BYTES);
        let audit = self.audit(by);
        let expires_at = audit.now + self.config.invitation_seconds * 1000;
        let mail = if self
            .store
            .has_member_with_email(org, email.as_str())
            .await?
        {
            None
        } else {
            let ctx = InvitationContext {
                accept_url: self.accept_url(&id, &token),
                email: email.as_str().to_string(),
                org_name: found.name.clone(),
                inviter_email: inviter.email.to_string(),
                role: role.to_string(),
                expires_at: crate::clock::rfc3339(expires_at),
                expires_in_hours: self.config.invitation_seconds / 3600,
                site_url: self.config.site().to_string(),
            };
            let r = self
                .email
                .mailer
                .templates()
                .render("invitation", &ctx)
                .map_err(|e| InvitationError::Internal(e.to_string()))?;
            Some(NewMail {
                recipient: email.as_str().to_string(),
                subject: r.subject,
                text: r.text,
                html: r.html,
            })
        };
        let new = NewInvitation {
            id: id.into_string(),
            org_id: org.to_string(),
            email: email.as_str().to_string(),
            role: role.to_string(),
            inviter_id: inviter.id.to_string(),
            inviter_email: inviter.email.to_string(),
            token_hash: tokens::sha256_hex(&token),
            expires_at,
        };
        let inv = self
            .store
            .create_invitation(&new, mail.as_ref(), &audit)
            .await?;
        if mail.is_some() {
            self.email.mailer.wake();
        }
        Ok(inv)
    }

    /// The organization's invitations: pending, accepted, declined, revoked and expired.
    pub async fn of_org(&self, org: &OrgId) -> Result<Vec<Invitation>, InvitationError> {
        Ok(self
            .store
            .invitations_of_org(org, self.clock.now_ms())
            .await?)
    }

    /// The pending invitations to `user_id`'s confirmed address.
    pub async fn to_user(&self, user_id: &str) -> Result<Vec<Invitation>, InvitationError> {
        let email = self.confirmed_email(user_id).await?;
        Ok(self
            .store
            .invitations_to(&email, self.clock.now_ms())
            .await?)
    }

    /// The invitation `id` if it is addressed to `email`: not found when there is none,
    /// [`InvitationError::WrongEmail`] when it is someone else's (without saying whose).
    async fn addressed_to(
        &self,
        id: &InvitationId,
        email: &str,
    ) -> Result<Invitation, InvitationError> {
        let inv = self
            .store
            .invitation(id, self.clock.now_ms())
            .await?
            .ok_or(InvitationError::NotFound)?;
        if inv.email != email {
            return Err(InvitationError::WrongEmail);
        }
        Ok(inv)
    }

    /// `user_id`'s confirmed address: an unconfirmed address proves nothing.
    pub async fn confirmed_email(&self, user_id: &str) -> Result<String, InvitationError> {
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(InvitationError::UnknownUser)?;
        if user.email_confirmed_at.is_none() {
            return Err(InvitationError::EmailNotConfirmed);
        }
        Ok(user.email)
    }

    /// Accepts an invitation as the signed-in `user_id`, whose confirmed address must be the
    /// invitation's.
    pub async fn accept(
        &self,
        id: &InvitationId,
        user_id: &str,
        ip: Option<String>,
    ) -> Result<Invitation, InvitationError> {
        let audit = self.audit(&By::user(user_id, ip));
        let email = self.confirmed_email(user_id).await?;
        let inv = self.addressed_to(id, &email).await?;
        require_pending(&inv)?;
        self.store.accept_invitation(&inv, user_id, &audit).await?;
        self.orgs.forget_memberships(user_id).await;
        Ok(self.store.invitation(id, audit.now).await?.unwrap_or(inv))
    }

    /// Declines an invitation as the signed-in `user_id`.
    pub async fn decline(
        &self,
        id: &InvitationId,
        user_id: &str,
        ip: Option<String>,
    ) -> Result<Invitation, InvitationError> {
        let audit = self.audit(&By::user(user_id, ip));
        let email = self.confirmed_email(user_id).await?;
        let inv = self.addressed_to(id, &email).await?;
        require_pending(&inv)?;
        self.store.decline_invitation(&inv, &audit).await?;
        Ok(self.store.invitation(id, audit.now).await?.unwrap_or(inv))
    }

    /// The pending invitation an emailed token belongs to.
    pub async fn by_token(&self, token: &str) -> Result<Invitation, InvitationError> {
        if token.is_empty() || token.len() > 256 {
            return Err(InvitationError::InvalidToken);
        }
        self.store
            .invitation_by_token(&tokens::sha256_hex(token), self.clock.now_ms())
            .await?
            .ok_or(InvitationError::InvalidToken)
    }

    /// Accepts with the emailed token and a password, for someone without a session (the
    /// accept page of a newcomer).
    ///
    /// The token proves the address. With no account at that address, one is created,
    /// confirmed, with this password (the password policy applies). With an account, the
    /// password must be its own: the token then confirms an unconfirmed account, without a
    /// confirmation mail (someone who signed up with `/auth/v1/signup` from the link), but
    /// only one created after this invitation was issued: a password set on the address
    /// before anyone held this link may be someone else's (a squatter's), and must not
    /// survive by being confirmed here. Such an account is refused
    /// ([`InvitationError::AccountPredatesInvitation`]); its owner confirms it the usual way
    /// (a magic link or a password reset drops that password), signs in and accepts.
    pub async fn accept_with_token(
        &self,
        token: &str,
        password: String,
        ip: Option<String>,
    ) -> Result<Invitation, InvitationError> {
        let inv = self.by_token(token).await?;
        require_pending(&inv)?;
        if self.store.user_by_email(&inv.email).await?.is_none() {
            let user = match self
                .accounts
                .create_confirmed_user(&inv.email, password)
                .await
            {
                Ok(user) => user,
                Err(AccountError::WeakPassword(weak)) => {
                    return Err(InvitationError::Invalid {
                        field: "password",
                        problem: weak.message,
                    })
                }
                Err(AccountError::Validation(crate::accounts::Invalid::PasswordTooLong)) => {
                    return Err(InvitationError::Invalid {
                        field: "password",
                        problem: "Password cannot be longer than 1024 characters".into(),
                    })
                }
                Err(AccountError::UserExists) => return Err(InvitationError::AccountJustCreated),
                Err(AccountError::Busy) => return Err(StoreError::Busy.into()),
                Err(other) => return Err(InvitationError::Internal(other.to_string())),
            };
            return self.join(&inv, &user.id, ip).await;
        }
        let user = match self.accounts.authenticate(&inv.email, password).await {
            Ok(user) => user,
            Err(AccountError::EmailNotConfirmed) => {
                let user = self
                    .store
                    .user_by_email(&inv.email)
                    .await?
                    .ok_or(InvitationError::UnknownUser)?;
                if user.created_at < inv.created_at {
                    return Err(InvitationError::AccountPredatesInvitation);
                }
                // The link proves the address, and the redeemer gave this sign-up's password:
                // the address is confirmed with it (pending links and earlier sessions end).
                let ended = self
                    .store
                    .confirm_email(&user.id, user.password_hash.as_deref(), self.clock.now_ms())
                    .await?;
                for id in ended.sessions {
                    self.bus.invalidate(Invalidation::Session(id)).await;
                }
                for hash in ended.web_sessions {
                    self.bus.invalidate(Invalidation::WebSession(hash)).await;
                }
                user
            }
            // A banned user redeems nothing; answered like a wrong password.
            Err(AccountError::InvalidCredentials | AccountError::Banned(_)) => {
                return Err(InvitationError::InvalidCredentials)
            }
            Err(AccountError::Busy) => return Err(StoreError::Busy.into()),
            Err(other) => return Err(InvitationError::Internal(other.to_string())),
        };
        self.join(&inv, &user.id, ip).await
    }

    /// Accepts `inv` for `user_id` (audited as that user).
    async fn join(
        &self,
        inv: &Invitation,
        user_id: &str,
        ip: Option<String>,
    ) -> Result<Invitation, InvitationError> {
        let audit = self.audit(&By::user(user_id, ip));
        self.store.accept_invitation(inv, user_id, &audit).await?;
        self.orgs.forget_memberships(user_id).await;
        Ok(self
            .store
            .invitation(&inv.id, audit.now)
            .await?
            .unwrap_or_else(|| inv.clone()))
    }

    /// Revokes a pending invitation of `org`.
    pub async fn revoke(
        &self,
        org: &OrgId,
        id: &InvitationId,
        by: &By,
    ) -> Result<(), InvitationError> {
        let audit = self.audit(by);
        match self.store.revoke_invitation(org, id, &audit).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound) => Err(InvitationError::NotFound),
            Err(StoreError::Conflict(_)) => {
                let inv = self.store.invitation(id, audit.now).await?;
                let status = inv.map_or_else(|| "gone".to_string(), |i| i.status);
                Err(InvitationError::NotPending(status))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Refused unless the invitation is still pending (an expired one says so).
fn require_pending(inv: &Invitation) -> Result<(), InvitationError> {
    if inv.status == "pending" {
        Ok(())
    } else {
        Err(InvitationError::NotPending(inv.status.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::InvitationError;

    #[test]
    fn a_one_second_wait_is_said_in_the_singular() {
        assert_eq!(
            InvitationError::TooSoon(1).to_string(),
            "This address was sent a mail recently; try again in 1 second."
        );
        assert_eq!(
            InvitationError::TooSoon(30).to_string(),
            "This address was sent a mail recently; try again in 30 seconds."
        );
    }
}
