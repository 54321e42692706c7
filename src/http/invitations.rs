//! `/v1/orgs/{org}/invitations` (the organization's side) and `/v1/invitations` (the
//! invitee's side).

use crate::domain::permissions::Permission;
use crate::http::orgs::user_only;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;

use utoipa::ToSchema;

use crate::app::AppState;
use crate::config::Policy;
use crate::domain::Email;
use crate::error::ApiError;
use crate::http::envelope::{created, ok, Success};
use crate::http::extract::{ApiJson, ClientIp, Principal};
use crate::http::limits;
use crate::http::orgs::{audit, grantable, org_access};
use crate::invitations::{self, Inviter};
use crate::orgs::check_id;
use crate::ratelimit::Request as LimitRequest;
use crate::store::{Audit, Invitation};

/// The invitation routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/orgs/{org}/invitations",
            get(list_org_invitations).post(create_invitation),
        )
        .route("/v1/orgs/{org}/invitations/{id}", delete(revoke_invitation))
        .route("/v1/invitations", get(my_invitations))
        .route("/v1/invitations/lookup", post(lookup))
        .route("/v1/invitations/redeem", post(redeem))
        .route("/v1/invitations/{id}/accept", post(accept))
        .route("/v1/invitations/{id}/decline", post(decline))
}

/// An invitation to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// The address to invite (with or without an account).
    pub email: String,
    /// A built-in or custom role the inviter could grant.
    pub role: String,
}

/// Counts an invitation against its organization's and its inviter's windows.
async fn limit(state: &AppState, org: &str, user_id: &str) -> Result<(), ApiError> {
    let policies = [
        (Policy::InvitationOrg, org),
        (Policy::InvitationUser, user_id),
    ];
    // One tag for every invitation counter: a tag scopes its counters, and the inviter's
    // window must count across all their organizations (a low-volume route: one Redis slot).
    let mut req = LimitRequest {
        tag: "invitations".to_string(),
        windows: Vec::new(),
        fail_closed: policies.iter().any(|(p, _)| state.config.fails_closed(*p)),
    };
    for (p, subject) in policies {
        req.add(p.name(), subject, state.config.rates(p));
    }
    let d = state.limit(&req).await.map_err(|_| limits::unavailable())?;
    if d.allowed {
        Ok(())
    } else {
        Err(limits::refused(&d))
    }
}

/// Creates an invitation (shared with the deprecated `POST …/members`).
pub async fn invite(
    state: &AppState,
    principal: &Principal,
    ip: &ClientIp,
    org: &str,
    body: InviteBody,
) -> Result<Invitation, ApiError> {
    let a = org_access(state, principal, org).await?;
    a.require(Permission::MembersWrite)?;
    let (user_id, inviter_email) = user_only(principal)?;
    let email = Email::parse(&body.email).map_err(|m| ApiError::field("email", m))?;
    grantable(state, &a, &body.role).await?;
    limit(state, org, user_id).await?;
    let inviter = Inviter {
        id: user_id,
        email: inviter_email,
    };
    let audit = audit(state, &a, ip);
    invitations::invite(state, org, inviter, &email, &body.role, &audit).await
}

/// Invites an address: the same answer whether or not it has an account or is a member
/// (a member gets no mail). A pending invitation to the address is replaced and its mail
/// sent again.
#[utoipa::path(post, path = "/v1/orgs/{org}/invitations", tag = "invitations", request_body = InviteBody,
    responses((status = 201, body = Invitation), (status = 403, description = "forbidden"),
              (status = 422, description = "validation_failed"), (status = 429, description = "rate_limited")))]
pub async fn create_invitation(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<Success<Invitation>, ApiError> {
    Ok(created(invite(&state, &principal, &ip, &org, body).await?))
}

/// The organization's invitations: pending, accepted, declined, revoked and expired.
#[utoipa::path(get, path = "/v1/orgs/{org}/invitations", tag = "invitations",
    responses((status = 200, body = [Invitation])))]
pub async fn list_org_invitations(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
) -> Result<Success<Vec<Invitation>>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    if !a.has(Permission::MembersWrite) {
        a.require(Permission::MembersRead)?;
    }
    let now = state.clock.now_ms();
    Ok(ok(state.store.invitations_of_org(&org, now).await?))
}

/// Revokes a pending invitation.
#[utoipa::path(delete, path = "/v1/orgs/{org}/invitations/{id}", tag = "invitations",
    responses((status = 204, description = "Revoked"), (status = 404, description = "not_found"),
              (status = 409, description = "No longer pending")))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::MembersWrite)?;
    check_id(&id, "inv")?;
    invitations::revoke(&state, &org, &id, &audit(&state, &a, &ip)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn own_audit(state: &AppState, user_id: &str, ip: &ClientIp) -> Audit {
    Audit {
        actor: format!("user:{user_id}"),
        ip: Some(ip.0.to_string()),
        now: state.clock.now_ms(),
    }
}

/// The pending invitations to the caller's confirmed address.
#[utoipa::path(get, path = "/v1/invitations", tag = "invitations",
    responses((status = 200, body = [Invitation])))]
pub async fn my_invitations(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Success<Vec<Invitation>>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    let email = invitations::confirmed_email(&state, user_id).await?;
    let now = state.clock.now_ms();
    Ok(ok(state.store.invitations_to(&email, now).await?))
}

/// Accepts an invitation addressed to the caller's confirmed address.
#[utoipa::path(post, path = "/v1/invitations/{id}/accept", tag = "invitations",
    responses((status = 200, body = Invitation), (status = 403, description = "Addressed to another email"),
              (status = 409, description = "No longer pending, or already a member")))]
pub async fn accept(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(id): Path<String>,
) -> Result<Success<Invitation>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    check_id(&id, "inv")?;
    let audit = own_audit(&state, user_id, &ip);
    Ok(ok(invitations::accept(&state, &id, user_id, &audit).await?))
}

/// Declines an invitation addressed to the caller's confirmed address.
#[utoipa::path(post, path = "/v1/invitations/{id}/decline", tag = "invitations",
    responses((status = 200, body = Invitation), (status = 403, description = "Addressed to another email"),
              (status = 409, description = "No longer pending")))]
pub async fn decline(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(id): Path<String>,
) -> Result<Success<Invitation>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    check_id(&id, "inv")?;
    let audit = own_audit(&state, user_id, &ip);
    Ok(ok(invitations::decline(&state, &id, user_id, &audit).await?))
}

/// The emailed token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// The `token` of the accept link.
    pub token: String,
}

/// The emailed token and the password of the account at the invited address.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    /// The `token` of the accept link.
    pub token: String,
    /// The password chosen at sign-up.
    pub password: String,
}

async fn limit_ip(state: &AppState, policy: Policy, ip: &ClientIp) -> Result<(), ApiError> {
    match state.limit_ip(policy, &ip.key()).await {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => Err(limits::refused(&d)),
        Err(_) => Err(limits::unavailable()),
    }
}

/// What the holder of an accept link is invited to (no account needed).
#[utoipa::path(post, path = "/v1/invitations/lookup", tag = "invitations", request_body = TokenBody,
    responses((status = 200, body = Invitation), (status = 404, description = "Invalid link")))]
pub async fn lookup(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Success<Invitation>, ApiError> {
    limit_ip(&state, Policy::Verify, &ip).await?;
    Ok(ok(invitations::by_token(&state, &body.token).await?))
}

/// Accepts with the emailed token and the invited address's password, right after signing
/// up on the accept page: the token confirms an account created after the invitation.
#[utoipa::path(post, path = "/v1/invitations/redeem", tag = "invitations", request_body = RedeemBody,
    responses((status = 200, body = Invitation), (status = 401, description = "Wrong password"),
              (status = 404, description = "Invalid link"), (status = 409, description = "No longer pending, or an older unconfirmed account")))]
pub async fn redeem(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<RedeemBody>,
) -> Result<Success<Invitation>, ApiError> {
    limit_ip(&state, Policy::SignIn, &ip).await?;
    let inv =
        invitations::accept_with_token(&state, &body.token, body.password, Some(ip.0.to_string()))
            .await?;
    Ok(ok(inv))
}
