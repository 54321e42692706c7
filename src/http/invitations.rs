//! `/v1/orgs/{org}/invitations` (the organization's side) and `/v1/invitations` (the
//! invitee's side), over [`crate::invitations::Invitations`].

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::config::Policy;
use crate::domain::permissions::Permission;
use crate::domain::Email;
use crate::error::{ApiError, Code, Reason};
use crate::http::envelope::{created, errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{ApiJson, ClientIp, Ids, Principal};
use crate::http::limits;
use crate::http::orgs::{actor, user_only};
use crate::ids::{InvitationId, OrgId};
use crate::invitations::{InvitationError, Inviter};
use crate::ratelimit::Request as LimitRequest;
use crate::store::Invitation;

/// The invitation routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_org_invitations, create_invitation))
        .routes(routes!(revoke_invitation))
        .routes(routes!(my_invitations))
        .routes(routes!(lookup))
        .routes(routes!(redeem))
        .routes(routes!(accept))
        .routes(routes!(decline))
}

impl From<InvitationError> for ApiError {
    fn from(e: InvitationError) -> Self {
        use InvitationError as E;
        let message = e.to_string();
        match e {
            E::Org(o) => o.into(),
            E::NotFound => ApiError::not_found("Invitation"),
            E::OrgNotFound => ApiError::not_found("Organization"),
            E::WrongEmail => ApiError::msg(Code::Forbidden, message).reason(Reason::WrongEmail),
            E::EmailNotConfirmed => {
                ApiError::msg(Code::Forbidden, message).reason(Reason::EmailNotConfirmed)
            }
            E::UnknownUser => ApiError::new(Code::Unauthorized),
            // The invitation's status is its reason: accepted, declined, revoked or expired.
            E::NotPending(status) => ApiError::msg(Code::Conflict, message)
                .reason(Reason::parse(&status).unwrap_or(Reason::Gone)),
            E::InvalidToken => ApiError::msg(Code::NotFound, message).reason(Reason::InvalidToken),
            E::TooSoon(secs) => {
                let mut err = ApiError::msg(Code::RateLimited, message).details(
                    json!({ "reason": Reason::AddressInterval.as_str(), "retry_after": secs }),
                );
                err.retry_after = Some(secs.max(1) as u64);
                err
            }
            E::Invalid { field, problem } => ApiError::field(field, &problem),
            E::AccountJustCreated => ApiError::msg(Code::Conflict, message),
            E::AccountPredatesInvitation => {
                ApiError::msg(Code::Conflict, message).reason(Reason::AccountPredatesInvitation)
            }
            E::InvalidCredentials => {
                ApiError::msg(Code::Unauthorized, message).reason(Reason::InvalidCredentials)
            }
            E::Store(s) => s.into(),
            E::Internal(cause) => ApiError::internal(cause),
        }
    }
}

/// An invitation to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// The address to invite (with or without an account).
    #[schema(format = Email)]
    pub email: String,
    /// A built-in (`owner`, `admin`, `member`) or custom role the inviter could grant.
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
    let d = state
        .limits
        .check(&req)
        .await
        .map_err(|_| limits::unavailable())?;
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
    org: &OrgId,
    body: InviteBody,
) -> Result<Invitation, ApiError> {
    let a = state.orgs.access(&actor(principal), org).await?;
    a.require(Permission::MembersWrite)?;
    let (user_id, inviter_email) = user_only(principal)?;
    let email = Email::parse(&body.email).map_err(|m| ApiError::field("email", m))?;
    state.orgs.grantable(&a, &body.role).await?;
    limit(state, org, user_id).await?;
    let inviter = Inviter {
        id: user_id,
        email: inviter_email,
    };
    let by = a.by(Some(ip.0.to_string()));
    Ok(state
        .invitations
        .invite(org, inviter, &email, &body.role, &by)
        .await?)
}

/// Invites an address: the same answer whether or not it has an account or is a member
/// (a member gets no mail). A pending invitation to the address is replaced and its mail
/// sent again.
#[utoipa::path(post, path = "/v1/orgs/{org}/invitations", tag = "invitations", request_body = InviteBody,
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 201, description = "The invitation", body = Envelope<Invitation>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn create_invitation(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<Success<Invitation>, ApiError> {
    Ok(created(invite(&state, &principal, &ip, &org, body).await?))
}

/// The organization's invitations: pending, accepted, declined, revoked and expired.
#[utoipa::path(get, path = "/v1/orgs/{org}/invitations", tag = "invitations",
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The invitations", body = Envelope<Vec<Invitation>>),
        errors::Auth, errors::Org))]
pub async fn list_org_invitations(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<Vec<Invitation>>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    if !a.has(Permission::MembersWrite) {
        a.require(Permission::MembersRead)?;
    }
    Ok(ok(state.invitations.of_org(&org).await?))
}

/// Revokes a pending invitation.
#[utoipa::path(delete, path = "/v1/orgs/{org}/invitations/{id}", tag = "invitations",
    params(("org" = inline(OrgId), Path, description = "The organization"),
        ("id" = inline(InvitationId), Path, description = "The invitation")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 204, description = "Revoked"), errors::Auth, errors::Org,
        (status = 409, description = "`conflict`: no longer pending (`details.reason`: its status)", body = ErrorEnvelope)))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, InvitationId)>,
) -> Result<StatusCode, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require(Permission::MembersWrite)?;
    let by = a.by(Some(ip.0.to_string()));
    state.invitations.revoke(&org, &id, &by).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The pending invitations to the caller's confirmed address.
#[utoipa::path(get, path = "/v1/invitations", tag = "invitations",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The invitations", body = Envelope<Vec<Invitation>>),
        (status = 403, description = "`forbidden`: an API key (`details.required`: `user`), or an unconfirmed address (`details.reason`: `email_not_confirmed`)", body = ErrorEnvelope),
        errors::Auth))]
pub async fn my_invitations(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Success<Vec<Invitation>>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    Ok(ok(state.invitations.to_user(user_id).await?))
}

/// Accepts an invitation addressed to the caller's confirmed address.
#[utoipa::path(post, path = "/v1/invitations/{id}/accept", tag = "invitations",
    params(("id" = inline(InvitationId), Path, description = "The invitation")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The accepted invitation", body = Envelope<Invitation>),
        errors::Invitee, errors::Auth))]
pub async fn accept(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(id): Ids<InvitationId>,
) -> Result<Success<Invitation>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    let ip = Some(ip.0.to_string());
    Ok(ok(state.invitations.accept(&id, user_id, ip).await?))
}

/// Declines an invitation addressed to the caller's confirmed address.
#[utoipa::path(post, path = "/v1/invitations/{id}/decline", tag = "invitations",
    params(("id" = inline(InvitationId), Path, description = "The invitation")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The declined invitation", body = Envelope<Invitation>),
        errors::Invitee, errors::Auth))]
pub async fn decline(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(id): Ids<InvitationId>,
) -> Result<Success<Invitation>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    let ip = Some(ip.0.to_string());
    Ok(ok(state.invitations.decline(&id, user_id, ip).await?))
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
    match state.limits.ip(policy, &ip.key()).await {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => Err(limits::refused(&d)),
        Err(_) => Err(limits::unavailable()),
    }
}

/// What the holder of an accept link is invited to (no account needed).
#[utoipa::path(post, path = "/v1/invitations/lookup", tag = "invitations", security(()), request_body = TokenBody,
    responses((status = 200, description = "The invitation", body = Envelope<Invitation>),
        (status = 404, description = "`not_found`: the link is invalid (`details.reason`: `invalid_token`)", body = ErrorEnvelope),
        (status = 429, description = "`rate_limited` (`Retry-After`)", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable` (`Retry-After`)", body = ErrorEnvelope),
        errors::Body))]
pub async fn lookup(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Success<Invitation>, ApiError> {
    limit_ip(&state, Policy::Verify, &ip).await?;
    Ok(ok(state.invitations.by_token(&body.token).await?))
}

/// Accepts with the emailed token and the invited address's password, right after signing
/// up on the accept page: the token confirms an account created after the invitation.
#[utoipa::path(post, path = "/v1/invitations/redeem", tag = "invitations", security(()), request_body = RedeemBody,
    responses((status = 200, description = "The accepted invitation", body = Envelope<Invitation>),
        (status = 401, description = "`unauthorized`: wrong password (`details.reason`: `invalid_credentials`)", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: the link is invalid (`details.reason`: `invalid_token`)", body = ErrorEnvelope),
        (status = 409, description = "`conflict`: no longer pending, or an older unconfirmed account (`details.reason`)", body = ErrorEnvelope),
        (status = 429, description = "`rate_limited` (`Retry-After`)", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable` (`Retry-After`)", body = ErrorEnvelope),
        errors::Body))]
pub async fn redeem(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<RedeemBody>,
) -> Result<Success<Invitation>, ApiError> {
    limit_ip(&state, Policy::SignIn, &ip).await?;
    let ip = Some(ip.0.to_string());
    let inv = state
        .invitations
        .accept_with_token(&body.token, body.password, ip)
        .await?;
    Ok(ok(inv))
}
