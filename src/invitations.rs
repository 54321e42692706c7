//! Invitations: the only way into an organization. An owner (or anyone who may grant the
//! role) invites an address; the person holding that address accepts, and only then becomes a
//! member. Nothing about the invitee's account is revealed before that: the answer to an
//! invitation is the same for registered, unknown and member addresses.

use serde_json::json;

use crate::accounts::AccountError;
use crate::app::AppState;
use crate::auth::tokens;
use crate::domain::Email;
use crate::error::{ApiError, Code};
use crate::mail::flows::FlowError;
use crate::mail::templates::InvitationContext;
use crate::store::{Audit, Invitation, NewInvitation, NewMail, StoreError};

/// Bytes of randomness in an invitation token (256 bits).
const TOKEN_BYTES: usize = 32;

/// Who invites: a person, or the operator (`gatehouse org invite`).
pub struct Inviter<'a> {
    /// User id, or `cli`.
    pub id: &'a str,
    /// Shown to the invitee.
    pub email: &'a str,
}

/// The accept page's link: the token rides in the fragment, so it never reaches a server log.
pub fn accept_url(state: &AppState, id: &str, token: &str) -> String {
    format!(
        "{}/dashboard/#invitation={id}&token={token}",
        state.config.public_base()
    )
}

/// Invites `email` into `org_id` with `role` (already checked as grantable), replacing a
/// pending invitation to the same address, and queues its mail unless the address is
/// already a member's. The per-address mail interval applies to every address alike.
pub async fn invite(
    state: &AppState,
    org_id: &str,
    inviter: Inviter<'_>,
    email: &Email,
    role: &str,
    audit: &Audit,
) -> Result<Invitation, ApiError> {
    state
        .email
        .address_slot(email.as_str())
        .await
        .map_err(flow_error)?;
    let org = state
        .store
        .org(org_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Organization"))?;
    let id = format!("inv_{}", uuid::Uuid::new_v4().simple());
    let token = tokens::random_token(TOKEN_BYTES);
    let expires_at = audit.now + state.config.invitation_seconds * 1000;
    let mail = if state
        .store
        .has_member_with_email(org_id, email.as_str())
        .await?
    {
        None
    } else {
        let ctx = InvitationContext {
            accept_url: accept_url(state, &id, &token),
            email: email.as_str().to_string(),
            org_name: org.name.clone(),
            inviter_email: inviter.email.to_string(),
            role: role.to_string(),
            expires_at: crate::clock::rfc3339(expires_at),
            expires_in_hours: state.config.invitation_seconds / 3600,
            site_url: state.config.site().to_string(),
        };
        let r = state
            .email
            .mailer
            .templates()
            .render("invitation", &ctx)
            .map_err(ApiError::internal)?;
        Some(NewMail {
            recipient: email.as_str().to_string(),
            subject: r.subject,
            text: r.text,
            html: r.html,
        })
    };
    let new = NewInvitation {
        id,
        org_id: org_id.to_string(),
        email: email.as_str().to_string(),
        role: role.to_string(),
        inviter_id: inviter.id.to_string(),
        inviter_email: inviter.email.to_string(),
        token_hash: tokens::sha256_hex(&token),
        expires_at,
    };
    let inv = state
        .store
        .create_invitation(&new, mail.as_ref(), audit)
        .await?;
    if mail.is_some() {
        state.email.mailer.wake();
    }
    Ok(inv)
}

fn flow_error(e: FlowError) -> ApiError {
    match e {
        FlowError::TooSoon(secs) => {
            let mut err = ApiError::msg(
                Code::RateLimited,
                format!("This address was sent a mail recently; try again in {secs} seconds."),
            )
            .details(json!({ "reason": "address_interval", "retry_after": secs }));
            err.retry_after = Some(secs.max(1) as u64);
            err
        }
        FlowError::Busy => StoreError::Busy.into(),
        other => ApiError::internal(other),
    }
}

/// 409 unless the invitation is still pending (an expired one says so).
fn require_pending(inv: &Invitation) -> Result<(), ApiError> {
    if inv.status == "pending" {
        return Ok(());
    }
    Err(ApiError::msg(
        Code::Conflict,
        format!("This invitation is {}.", inv.status),
    )
    .details(json!({ "reason": inv.status })))
}

/// The invitation `id` if it is addressed to `email`: 404 when there is none, 403 when it is
/// someone else's (without saying whose).
pub async fn addressed_to(state: &AppState, id: &str, email: &str) -> Result<Invitation, ApiError> {
    let inv = state
        .store
        .invitation(id, state.clock.now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found("Invitation"))?;
    if inv.email != email {
        return Err(ApiError::msg(
            Code::Forbidden,
            "This invitation is addressed to another email address.",
        )
        .details(json!({ "reason": "wrong_email" })));
    }
    Ok(inv)
}

/// The caller's confirmed address, or 403: an unconfirmed address proves nothing.
pub async fn confirmed_email(state: &AppState, user_id: &str) -> Result<String, ApiError> {
    let user = state
        .store
        .user_by_id(user_id)
        .await?
        .ok_or_else(|| ApiError::new(Code::Unauthorized))?;
    if user.email_confirmed_at.is_none() {
        return Err(
            ApiError::msg(Code::Forbidden, "Confirm your email address first.")
                .details(json!({ "reason": "email_not_confirmed" })),
        );
    }
    Ok(user.email)
}

/// Accepts an invitation as the signed-in `user_id`, whose confirmed address must be the
/// invitation's.
pub async fn accept(
    state: &AppState,
    id: &str,
    user_id: &str,
    audit: &Audit,
) -> Result<Invitation, ApiError> {
    let email = confirmed_email(state, user_id).await?;
    let inv = addressed_to(state, id, &email).await?;
    require_pending(&inv)?;
    state.store.accept_invitation(&inv, user_id, audit).await?;
    forget_memberships(state, user_id).await;
    Ok(state.store.invitation(id, audit.now).await?.unwrap_or(inv))
}

/// Declines an invitation as the signed-in `user_id`.
pub async fn decline(
    state: &AppState,
    id: &str,
    user_id: &str,
    audit: &Audit,
) -> Result<Invitation, ApiError> {
    let email = confirmed_email(state, user_id).await?;
    let inv = addressed_to(state, id, &email).await?;
    require_pending(&inv)?;
    state.store.decline_invitation(&inv, audit).await?;
    Ok(state.store.invitation(id, audit.now).await?.unwrap_or(inv))
}

/// The pending invitation an emailed token belongs to; 404 for an unknown token.
pub async fn by_token(state: &AppState, token: &str) -> Result<Invitation, ApiError> {
    let invalid = || {
        ApiError::msg(Code::NotFound, "This invitation link is invalid.")
            .details(json!({ "reason": "invalid_token" }))
    };
    if token.is_empty() || token.len() > 256 {
        return Err(invalid());
    }
    state
        .store
        .invitation_by_token(&tokens::sha256_hex(token), state.clock.now_ms())
        .await?
        .ok_or_else(invalid)
}

/// Accepts with the emailed token and a password, for someone without a session (the accept
/// page of a newcomer).
///
/// The token proves the address. With no account at that address, one is created, confirmed,
/// with this password (the password policy applies). With an account, the password must be
/// its own: the token then confirms an unconfirmed account, without a confirmation mail
/// (someone who signed up with `/auth/v1/signup` from the link), but only one created after
/// this invitation was issued: a password set on the address before anyone held this link may
/// be someone else's (a squatter's), and must not survive by being confirmed here. Such an
/// account is refused (`account_predates_invitation`); its owner confirms it the usual way (a
/// magic link or a password reset drops that password), signs in and accepts.
pub async fn accept_with_token(
    state: &AppState,
    token: &str,
    password: String,
    ip: Option<String>,
) -> Result<Invitation, ApiError> {
    let inv = by_token(state, token).await?;
    require_pending(&inv)?;
    if state.store.user_by_email(&inv.email).await?.is_none() {
        let user = match state
            .accounts
            .create_confirmed_user(&inv.email, password)
            .await
        {
            Ok(user) => user,
            Err(AccountError::WeakPassword(weak)) => {
                return Err(ApiError::field("password", &weak.message))
            }
            Err(AccountError::Validation(m)) => return Err(ApiError::field("password", &m)),
            Err(AccountError::UserExists) => {
                return Err(ApiError::msg(
                    Code::Conflict,
                    "An account for this address was just created; sign in, then accept.",
                ))
            }
            Err(AccountError::Busy) => return Err(StoreError::Busy.into()),
            Err(other) => return Err(ApiError::internal(other)),
        };
        return join(state, &inv, &user.id, ip).await;
    }
    let user = match state.accounts.authenticate(&inv.email, password).await {
        Ok(user) => user,
        Err(AccountError::EmailNotConfirmed) => {
            let user = state
                .store
                .user_by_email(&inv.email)
                .await?
                .ok_or_else(|| ApiError::new(Code::Unauthorized))?;
            if user.created_at < inv.created_at {
                return Err(ApiError::msg(
                    Code::Conflict,
                    "The account for this address was created before the invitation and is not \
                     confirmed: confirm it (a sign-in link or a password reset), sign in, then accept.",
                )
                .details(json!({ "reason": "account_predates_invitation" })));
            }
            // The link proves the address, and the redeemer gave this sign-up's password:
            // the address is confirmed with it (pending links and earlier sessions end).
            let ended = state
                .store
                .confirm_email(
                    &user.id,
                    user.password_hash.as_deref(),
                    state.clock.now_ms(),
                )
                .await?;
            state.end_sessions(ended).await;
            user
        }
        Err(AccountError::InvalidCredentials) => {
            return Err(ApiError::msg(
                Code::Unauthorized,
                "Invalid login credentials: sign up with the invited address first.",
            )
            .details(json!({ "reason": "invalid_credentials" })))
        }
        Err(AccountError::Busy) => return Err(StoreError::Busy.into()),
        Err(other) => return Err(ApiError::internal(other)),
    };
    join(state, &inv, &user.id, ip).await
}

/// Accepts `inv` for `user_id` (audited as that user).
async fn join(
    state: &AppState,
    inv: &Invitation,
    user_id: &str,
    ip: Option<String>,
) -> Result<Invitation, ApiError> {
    let audit = Audit {
        actor: format!("user:{user_id}"),
        ip,
        now: state.clock.now_ms(),
    };
    state.store.accept_invitation(inv, user_id, &audit).await?;
    forget_memberships(state, user_id).await;
    Ok(state
        .store
        .invitation(&inv.id, audit.now)
        .await?
        .unwrap_or_else(|| inv.clone()))
}

/// Revokes a pending invitation of `org_id`.
pub async fn revoke(
    state: &AppState,
    org_id: &str,
    id: &str,
    audit: &Audit,
) -> Result<(), ApiError> {
    match state.store.revoke_invitation(org_id, id, audit).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => Err(ApiError::not_found("Invitation")),
        Err(StoreError::Conflict(_)) => {
            let inv = state.store.invitation(id, audit.now).await?;
            let status = inv.map_or_else(|| "gone".to_string(), |i| i.status);
            Err(
                ApiError::msg(Code::Conflict, format!("This invitation is {status}."))
                    .details(json!({ "reason": status })),
            )
        }
        Err(e) => Err(e.into()),
    }
}

async fn forget_memberships(state: &AppState, user_id: &str) {
    state
        .invalidate(crate::fanout::Invalidation::Memberships(
            user_id.to_string(),
        ))
        .await;
}
