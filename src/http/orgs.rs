//! `/v1/orgs`: organizations, members and roles (keys and the audit log have their own
//! files). Handlers resolve the caller's [`Access`], check what needs only it, and call
//! [`crate::orgs::Orgs`].

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::domain::permissions::Permission;
use crate::error::{ApiError, Code, Reason};
use crate::http::envelope::{created, errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{ApiJson, ClientIp, Ids, Principal};
use crate::http::limits::{parse_specs, RateLimitSpec};
use crate::ids::OrgId;
use crate::orgs::{
    Access, Actor, By, Denied, Invalid, ListedOrg, MemberRole, OrgChanges, OrgError,
};
use crate::store::{Audit, Invitation, Member, Org, Role};

/// `/v1/orgs…`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(get_org, update_org, delete_org))
        .routes(routes!(list_members, add_member))
        .routes(routes!(change_role, remove_member))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(delete_role))
}

/// The organizations service's view of a principal.
pub fn actor(principal: &Principal) -> Actor {
    match principal {
        Principal::User { user_id, aal2, .. } => Actor::User {
            user_id: user_id.clone(),
            aal2: *aal2,
        },
        Principal::ApiKey { key } => Actor::Key {
            org_id: OrgId::from_stored(key.org_id.clone()),
            key_id: crate::ids::KeyId::from_stored(key.id.clone()),
            scopes: key.scopes.clone(),
        },
        Principal::OAuthClient {
            user_id,
            client_id,
            org_id,
            scopes,
            aal2,
            ..
        } => Actor::OAuth {
            user_id: user_id.clone(),
            client_id: client_id.clone(),
            org_id: OrgId::from_stored(org_id.clone()),
            scopes: scopes.clone(),
            aal2: *aal2,
        },
    }
}

/// The scopes OpenID Connect defines, which are no organization permission.
pub const OPENID_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// An OAuth client's scopes in effect now: the OpenID scopes of its token, and the token's
/// permissions that the person still holds in the grant's organization (none once they
/// left it). Empty for other principals.
/// With `member_only`, a person who left the organization is refused (403 `not_a_member`).
pub async fn oauth_scopes_in_effect(
    state: &AppState,
    principal: &Principal,
    member_only: bool,
) -> Result<Vec<String>, ApiError> {
    let Principal::OAuthClient { org_id, scopes, .. } = principal else {
        return Ok(Vec::new());
    };
    let org = OrgId::from_stored(org_id.clone());
    let held = match state.orgs.access(&actor(principal), &org).await {
        Ok(a) => a.permissions,
        Err(OrgError::Denied(_)) if !member_only => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(scopes
        .iter()
        .filter(|s| OPENID_SCOPES.contains(&s.as_str()) || held.contains(s))
        .cloned()
        .collect())
}

/// The audit context of a request.
pub fn audit(state: &AppState, access: &Access, ip: &ClientIp) -> Audit {
    Audit {
        actor: access.actor.clone(),
        ip: Some(ip.0.to_string()),
        now: state.edge.clock.now_ms(),
    }
}

/// Who makes a change with `access` from `ip`.
fn by(access: &Access, ip: &ClientIp) -> By {
    access.by(Some(ip.0.to_string()))
}

/// Resolves the caller's standing in organization `org` (checked as an `org_…` id first).
pub async fn org_access(
    state: &AppState,
    principal: &Principal,
    org: &str,
) -> Result<Access, ApiError> {
    let org = OrgId::parse(org).map_err(|e| ApiError::malformed_id(&e))?;
    Ok(state.orgs.access(&actor(principal), &org).await?)
}

/// The person behind a principal: (user id, email); API keys and OAuth clients are refused
/// (`required: user`): an app acts in its grant's organization only, never as the person.
pub(crate) fn user_only(principal: &Principal) -> Result<(&str, &str), ApiError> {
    match principal {
        Principal::User { user_id, email, .. } => Ok((user_id, email)),
        Principal::ApiKey { .. } | Principal::OAuthClient { .. } => Err(Denied::NotAPerson.into()),
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        if d == Denied::MfaRequired {
            return ApiError::msg(Code::MfaRequired, d.to_string());
        }
        let e = ApiError::msg(Code::Forbidden, d.to_string());
        match d.required() {
            Some(required) => e.details(json!({ "required": required })),
            None => e.reason(Reason::NotAMember),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(i: Invalid) -> Self {
        ApiError::field(&i.field, &i.problem)
    }
}

impl From<crate::ids::Malformed> for ApiError {
    fn from(e: crate::ids::Malformed) -> Self {
        ApiError::malformed_id(&e)
    }
}

impl From<OrgError> for ApiError {
    fn from(e: OrgError) -> Self {
        match e {
            OrgError::Denied(d) => d.into(),
            OrgError::NotFound(what) => ApiError::not_found(what),
            OrgError::Invalid(i) => i.into(),
            OrgError::Conflict(m) => ApiError::msg(Code::Conflict, m),
            OrgError::Store(s) => s.into(),
        }
    }
}

/// A new organization.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgBody {
    /// 1-100 characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

/// Creates an organization; the caller becomes its owner.
#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", request_body = OrgBody,
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 201, description = "The new organization", body = Envelope<Org>),
        (status = 403, description = "`forbidden`: API keys cannot create organizations (`details.required`: `user`), nor can an anonymous user (`details.required`: `email`)", body = ErrorEnvelope),
        errors::Auth, errors::Body))]
pub async fn create_org(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiJson(body): ApiJson<OrgBody>,
) -> Result<Success<Org>, ApiError> {
    let (user_id, email) = user_only(&principal)?;
    if email.is_empty() {
        return Err(Denied::Anonymous.into());
    }
    let by = By::user(user_id, Some(ip.0.to_string()));
    Ok(created(state.orgs.create(&body.name, user_id, &by).await?))
}

/// The caller's organizations, with their role in each (an API key sees its own).
#[utoipa::path(get, path = "/v1/orgs", tag = "orgs",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "Organizations", body = Envelope<Vec<ListedOrg>>),
        (status = 404, description = "`not_found`: the key's organization is gone", body = ErrorEnvelope),
        errors::Auth))]
pub async fn list_orgs(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Success<Vec<ListedOrg>>, ApiError> {
    Ok(ok(state.orgs.list(&actor(&principal)).await?))
}

/// One organization.
#[utoipa::path(get, path = "/v1/orgs/{org}", tag = "orgs",
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The organization", body = Envelope<Org>),
        errors::Auth, errors::Org))]
pub async fn get_org(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<Org>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    Ok(ok(state.orgs.get(&a.org_id).await?))
}

/// Changes to an organization; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrgBody {
    /// 1-100 characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Windows across all the organization's keys; `null` restores the default.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<Vec<RateLimitSpec>>, min_items = 1, max_items = 8)]
    pub rate_limits: Option<Option<Vec<RateLimitSpec>>>,
    /// Whether members must have verified a second factor (`aal2`) to act in the
    /// organization; turning it on needs an aal2 credential itself.
    pub require_mfa: Option<bool>,
}

/// Renames an organization, sets its rate limits or requires MFA of its members (owners and
/// admins).
#[utoipa::path(patch, path = "/v1/orgs/{org}", tag = "orgs", request_body = UpdateOrgBody,
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The organization as changed", body = Envelope<Org>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn update_org(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<UpdateOrgBody>,
) -> Result<Success<Org>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require_user()?;
    a.require_admin()?;
    let name = body
        .name
        .map(|n| crate::orgs::check_name("name", &n, 100))
        .transpose()?;
    let rate_limits = body
        .rate_limits
        .map(|r| r.map(|r| parse_specs("rate_limits", &r)).transpose())
        .transpose()?;
    if body.require_mfa == Some(true) && !matches!(principal, Principal::User { aal2: true, .. }) {
        return Err(Denied::MfaRequired.into());
    }
    let changes = OrgChanges {
        name,
        rate_limits,
        require_mfa: body.require_mfa,
    };
    Ok(ok(state.orgs.update(&a, &by(&a, &ip), changes).await?))
}

/// Deletes an organization and everything it owns (owners only).
#[utoipa::path(delete, path = "/v1/orgs/{org}", tag = "orgs",
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 204, description = "Deleted"), errors::Auth, errors::Org))]
pub async fn delete_org(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<StatusCode, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require_owner()?;
    state.orgs.delete(&a.org_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The members.
#[utoipa::path(get, path = "/v1/orgs/{org}/members", tag = "members",
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The members", body = Envelope<Vec<Member>>),
        errors::Auth, errors::Org))]
pub async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<Vec<Member>>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require(Permission::MembersRead)?;
    Ok(ok(state.orgs.members(&a.org_id).await?))
}

/// A member to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    /// The address to invite.
    #[schema(format = Email)]
    pub email: String,
    /// A built-in (`owner`, `admin`, `member`) or custom role.
    pub role: String,
}

/// A new role for a member.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// A built-in (`owner`, `admin`, `member`) or custom role.
    pub role: String,
}

/// Deprecated: creates an invitation, exactly as `POST /v1/orgs/{org}/invitations` does.
/// Nobody becomes a member without accepting.
#[utoipa::path(post, path = "/v1/orgs/{org}/members", tag = "members", request_body = AddMemberBody,
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 201, description = "An invitation (deprecated route)", body = Envelope<Invitation>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<AddMemberBody>,
) -> Result<Success<Invitation>, ApiError> {
    let body = crate::http::invitations::InviteBody {
        email: body.email,
        role: body.role,
    };
    Ok(created(
        crate::http::invitations::invite(&state, &principal, &ip, &org, body).await?,
    ))
}

/// Changes a member's role.
#[utoipa::path(patch, path = "/v1/orgs/{org}/members/{user}", tag = "members", request_body = RoleBody,
    params(("org" = inline(OrgId), Path, description = "The organization"),
        ("user" = String, Path, description = "The member's user id")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "Changed", body = Envelope<MemberRole>),
        errors::Auth, errors::Org, errors::Body, errors::Conflict))]
pub async fn change_role(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, user)): Ids<(OrgId, String)>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<Success<MemberRole>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require(Permission::MembersWrite)?;
    let changed = state
        .orgs
        .change_role(&a, &by(&a, &ip), &user, &body.role)
        .await?;
    Ok(ok(changed))
}

/// Removes a member.
#[utoipa::path(delete, path = "/v1/orgs/{org}/members/{user}", tag = "members",
    params(("org" = inline(OrgId), Path, description = "The organization"),
        ("user" = String, Path, description = "The member's user id")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 204, description = "Removed"), errors::Auth, errors::Org, errors::Conflict))]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, user)): Ids<(OrgId, String)>,
) -> Result<StatusCode, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require(Permission::MembersWrite)?;
    state.orgs.remove_member(&a, &by(&a, &ip), &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Built-in and custom roles.
#[utoipa::path(get, path = "/v1/orgs/{org}/roles", tag = "roles",
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The roles", body = Envelope<Vec<Role>>),
        errors::Auth, errors::Org))]
pub async fn list_roles(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<Vec<Role>>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require(Permission::MembersRead)?;
    Ok(ok(state.orgs.roles(&a.org_id).await?))
}

/// A custom role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoleBody {
    /// 1-32 of a-z 0-9 _ -, starting with a letter; not a built-in role's name.
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,31}$")]
    pub name: String,
    /// Permissions (each one the creator holds).
    #[schema(value_type = Vec<Permission>)]
    pub permissions: Vec<String>,
}

/// Defines a custom role.
#[utoipa::path(post, path = "/v1/orgs/{org}/roles", tag = "roles", request_body = NewRoleBody,
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 201, description = "The new role", body = Envelope<Role>),
        errors::Auth, errors::Org, errors::Body, errors::Conflict))]
pub async fn create_role(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<NewRoleBody>,
) -> Result<Success<Role>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require(Permission::MembersWrite)?;
    let role = state
        .orgs
        .create_role(&a, &by(&a, &ip), &body.name, &body.permissions)
        .await?;
    Ok(created(role))
}

/// Deletes a custom role no member holds.
#[utoipa::path(delete, path = "/v1/orgs/{org}/roles/{name}", tag = "roles",
    params(("org" = inline(OrgId), Path, description = "The organization"),
        ("name" = String, Path, description = "The custom role's name")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 204, description = "Deleted"), errors::Auth, errors::Org, errors::Conflict))]
pub async fn delete_role(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, name)): Ids<(OrgId, String)>,
) -> Result<StatusCode, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require(Permission::MembersWrite)?;
    state.orgs.delete_role(&a, &by(&a, &ip), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_once_with_typed_ids() {
        let spec = router()
            .merge(crate::http::invitations::router())
            .into_openapi();
        let doc = serde_json::to_value(&spec).unwrap_or_default();
        if std::env::var("PRINT_SPEC").is_ok() {
            println!("{doc:#}");
        }
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        let mut ops = 0;
        for (path, item) in &paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                ops += 1;
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                if path.contains("{org}") {
                    let org = params.iter().find(|p| p["name"] == "org");
                    let pattern = org.map(|p| p["schema"]["pattern"].clone());
                    assert_eq!(
                        pattern,
                        Some(json!("^org_[0-9a-f]{32}$")),
                        "{method} {path}"
                    );
                }
                let statuses = op["responses"].as_object().cloned().unwrap_or_default();
                assert!(
                    statuses.keys().any(|s| s.starts_with('2')),
                    "{method} {path}"
                );
            }
        }
        assert_eq!(ops, 20, "{:?}", paths.keys().collect::<Vec<_>>());
    }
}
