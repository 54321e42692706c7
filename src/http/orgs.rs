//! `/v1/orgs`: organizations, members and roles.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::permissions;
use crate::domain::permissions::Permission;
use crate::error::{ApiError, Code};
use crate::http::envelope::{created, ok, Success};
use crate::http::extract::{ApiJson, ClientIp, Principal};
use crate::http::limits::{parse_specs, RateLimitSpec};
use crate::orgs::{access, check_id, check_name, role_permissions, Access};
use crate::store::{Audit, Member, Org, Role, StoreError};

/// `/v1/orgs…` (keys and the audit log have their own files).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orgs", get(list_orgs).post(create_org))
        .route(
            "/v1/orgs/{org}",
            get(get_org).patch(update_org).delete(delete_org),
        )
        .route("/v1/orgs/{org}/members", get(list_members).post(add_member))
        .route(
            "/v1/orgs/{org}/members/{user}",
            patch(change_role).delete(remove_member),
        )
        .route("/v1/orgs/{org}/roles", get(list_roles).post(create_role))
        .route(
            "/v1/orgs/{org}/roles/{name}",
            axum::routing::delete(delete_role),
        )
}

/// The audit context of a request.
pub fn audit(state: &AppState, access: &Access, ip: &ClientIp) -> Audit {
    Audit {
        actor: access.actor.clone(),
        ip: Some(ip.0.to_string()),
        now: state.clock.now_ms(),
    }
}

/// Checks the path's organization id and resolves the caller's standing in it.
pub async fn org_access(
    state: &AppState,
    principal: &Principal,
    org: &str,
) -> Result<Access, ApiError> {
    check_id(org, "org")?;
    access(&state.store, principal, org).await
}

/// The person behind a principal: (user id, email); API keys get 403 (`required: user`).
pub(crate) fn user_only(principal: &Principal) -> Result<(&str, &str), ApiError> {
    match principal {
        Principal::User { user_id, email, .. } => Ok((user_id, email)),
        Principal::ApiKey { .. } => Err(ApiError::msg(
            Code::Forbidden,
            "API keys cannot do this; sign in as a person.",
        )
        .details(json!({ "required": "user" }))),
    }
}

/// A new organization.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgBody {
    /// 1-100 characters.
    pub name: String,
}

/// Creates an organization; the caller becomes its owner.
#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", request_body = OrgBody,
    responses((status = 201, body = Org), (status = 422, description = "validation_failed")))]
pub async fn create_org(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiJson(body): ApiJson<OrgBody>,
) -> Result<Success<Org>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    let name = check_name("name", &body.name, 100)?;
    let audit = Audit {
        actor: format!("user:{user_id}"),
        ip: Some(ip.0.to_string()),
        now: state.clock.now_ms(),
    };
    let org = state.store.create_org(&name, user_id, &audit).await?;
    forget_memberships(&state, user_id).await;
    Ok(created(org))
}

/// The caller's organizations, with their role in each.
#[utoipa::path(get, path = "/v1/orgs", tag = "orgs", responses((status = 200, description = "Organizations")))]
pub async fn list_orgs(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    match &principal {
        Principal::User { user_id, .. } => {
            let list: Vec<_> = state
                .store
                .orgs_of_user(user_id)
                .await?
                .into_iter()
                .map(|(o, role)| json!({ "id": o.id, "name": o.name, "role": role, "created_at": o.created_at }))
                .collect();
            Ok(ok(list).into_response())
        }
        Principal::ApiKey { key } => {
            let org = state
                .store
                .org(&key.org_id)
                .await?
                .ok_or_else(|| ApiError::not_found("Organization"))?;
            Ok(ok(vec![
                json!({ "id": org.id, "name": org.name, "created_at": org.created_at }),
            ])
            .into_response())
        }
    }
}

/// One organization.
#[utoipa::path(get, path = "/v1/orgs/{org}", tag = "orgs",
    responses((status = 200, body = Org), (status = 403, description = "Not a member of the selected organization")))]
pub async fn get_org(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
) -> Result<Success<Org>, ApiError> {
    org_access(&state, &principal, &org).await?;
    Ok(ok(state
        .store
        .org(&org)
        .await?
        .ok_or_else(|| ApiError::not_found("Organization"))?))
}

/// Changes to an organization; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrgBody {
    /// 1-100 characters.
    pub name: Option<String>,
    /// Windows across all the organization's keys; `null` restores the default.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<Vec<RateLimitSpec>>)]
    pub rate_limits: Option<Option<Vec<RateLimitSpec>>>,
}

/// Renames an organization or sets its rate limits (owners and admins).
#[utoipa::path(patch, path = "/v1/orgs/{org}", tag = "orgs", request_body = UpdateOrgBody, responses((status = 200, body = Org)))]
pub async fn update_org(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<UpdateOrgBody>,
) -> Result<Success<Org>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require_user()?;
    if !matches!(a.role.as_deref(), Some("owner" | "admin")) {
        return Err(ApiError::msg(
            Code::Forbidden,
            "Only owners and admins can change the organization.",
        )
        .details(json!({ "required": "admin" })));
    }
    let name = body.name.map(|n| check_name("name", &n, 100)).transpose()?;
    let rates = body
        .rate_limits
        .map(|r| r.map(|r| parse_specs("rate_limits", &r)).transpose())
        .transpose()?;
    let changed_limits = rates.is_some();
    let renamed = name.is_some();
    let org_view = state
        .store
        .update_org(
            &org,
            name.as_deref(),
            rates.as_ref().map(Option::as_ref),
            &audit(&state, &a, &ip),
        )
        .await?;
    if changed_limits {
        state
            .invalidate(crate::fanout::Invalidation::Org(org.clone()))
            .await;
    }
    if renamed {
        forget_memberships(&state, crate::fanout::EVERYONE).await;
    }
    Ok(ok(org_view))
}

/// Deletes an organization and everything it owns (owners only).
#[utoipa::path(delete, path = "/v1/orgs/{org}", tag = "orgs", responses((status = 204, description = "Deleted")))]
pub async fn delete_org(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
) -> Result<StatusCode, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require_owner()?;
    for hash in state.store.delete_org(&org).await? {
        state
            .invalidate(crate::fanout::Invalidation::Key(hash))
            .await;
    }
    forget_memberships(&state, crate::fanout::EVERYONE).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The members.
#[utoipa::path(get, path = "/v1/orgs/{org}/members", tag = "members", responses((status = 200, body = [Member])))]
pub async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
) -> Result<Success<Vec<Member>>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::MembersRead)?;
    Ok(ok(state.store.members(&org).await?))
}

/// A member to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    /// The address to invite.
    pub email: String,
    /// A built-in or custom role.
    pub role: String,
}

/// A new role for a member.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// A built-in or custom role.
    pub role: String,
}

/// Checks that `a` may hand out `role`: it exists, only owners grant `owner`, and nobody
/// grants a permission they do not hold (so a custom role cannot escalate).
pub(crate) async fn grantable(state: &AppState, a: &Access, role: &str) -> Result<(), ApiError> {
    let perms = role_permissions(&state.store, &a.org_id, role)
        .await?
        .ok_or_else(|| ApiError::field("role", "no such role in this organization"))?;
    if role == "owner" {
        a.require_owner()?;
    }
    a.require_all(&perms)?;
    Ok(())
}

/// Checks that `a` may change or remove a member whose role is `current`: only owners act on
/// owners, and the actor holds every permission of that role.
async fn may_act_on(state: &AppState, a: &Access, current: &str) -> Result<(), ApiError> {
    if current == "owner" {
        a.require_owner()?;
    }
    let perms = role_permissions(&state.store, &a.org_id, current)
        .await?
        .unwrap_or_default();
    a.require_covers(&perms)
}

/// Deprecated: creates an invitation, exactly as `POST /v1/orgs/{org}/invitations` does.
/// Nobody becomes a member without accepting.
#[utoipa::path(post, path = "/v1/orgs/{org}/members", tag = "members", request_body = AddMemberBody,
    responses((status = 201, body = crate::store::Invitation, description = "An invitation (deprecated route)")))]
pub async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<AddMemberBody>,
) -> Result<Success<crate::store::Invitation>, ApiError> {
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
    responses((status = 200, description = "Changed"), (status = 409, description = "The last owner cannot be demoted")))]
pub async fn change_role(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, user)): Path<(String, String)>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<Success<serde_json::Value>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::MembersWrite)?;
    let current = state
        .store
        .membership(&org, &user)
        .await?
        .ok_or_else(|| ApiError::not_found("Member"))?;
    may_act_on(&state, &a, &current).await?;
    grantable(&state, &a, &body.role).await?;
    state
        .store
        .set_member_role(&org, &user, &body.role, &audit(&state, &a, &ip))
        .await
        .map_err(member_error)?;
    forget_memberships(&state, &user).await;
    Ok(ok(json!({ "user_id": user, "role": body.role })))
}

/// `/v1/me` lists a person's organizations from a cache: every change to them forgets it,
/// here and on the other instances (`EVERYONE` for a change that touches all members).
async fn forget_memberships(state: &AppState, user_id: &str) {
    state
        .invalidate(crate::fanout::Invalidation::Memberships(
            user_id.to_string(),
        ))
        .await;
}

fn member_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("Member"),
        other => other.into(),
    }
}

/// Removes a member.
#[utoipa::path(delete, path = "/v1/orgs/{org}/members/{user}", tag = "members",
    responses((status = 204, description = "Removed"), (status = 409, description = "The last owner cannot be removed")))]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::MembersWrite)?;
    let current = state
        .store
        .membership(&org, &user)
        .await?
        .ok_or_else(|| ApiError::not_found("Member"))?;
    may_act_on(&state, &a, &current).await?;
    state
        .store
        .remove_member(&org, &user, &audit(&state, &a, &ip))
        .await
        .map_err(member_error)?;
    forget_memberships(&state, &user).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Built-in and custom roles.
#[utoipa::path(get, path = "/v1/orgs/{org}/roles", tag = "roles", responses((status = 200, body = [Role])))]
pub async fn list_roles(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
) -> Result<Success<Vec<Role>>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::MembersRead)?;
    let mut roles: Vec<Role> = permissions::BUILTIN_ROLES
        .iter()
        .map(|r| Role {
            name: r.to_string(),
            permissions: permissions::builtin(r).unwrap_or_default(),
            builtin: true,
        })
        .collect();
    roles.extend(state.store.custom_roles(&org).await?);
    Ok(ok(roles))
}

/// A custom role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoleBody {
    /// 1-32 of a-z 0-9 _ -.
    pub name: String,
    /// Permissions (each one the creator holds).
    pub permissions: Vec<String>,
}

/// Defines a custom role.
#[utoipa::path(post, path = "/v1/orgs/{org}/roles", tag = "roles", request_body = NewRoleBody,
    responses((status = 201, body = Role), (status = 409, description = "Name taken")))]
pub async fn create_role(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<NewRoleBody>,
) -> Result<Success<Role>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::MembersWrite)?;
    permissions::check_role_name(&body.name).map_err(|m| ApiError::field("name", m))?;
    let perms = permissions::parse_list(&body.permissions)
        .map_err(|p| ApiError::field("permissions", &format!("unknown permission {p:?}")))?;
    a.require_all(&perms)?;
    state
        .store
        .create_role(&org, &body.name, &perms, &audit(&state, &a, &ip))
        .await?;
    Ok(created(Role {
        name: body.name,
        permissions: perms,
        builtin: false,
    }))
}

/// Deletes a custom role no member holds.
#[utoipa::path(delete, path = "/v1/orgs/{org}/roles/{name}", tag = "roles",
    responses((status = 204, description = "Deleted"), (status = 409, description = "Still held")))]
pub async fn delete_role(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::MembersWrite)?;
    if permissions::BUILTIN_ROLES.contains(&name.as_str()) {
        return Err(ApiError::msg(
            Code::Conflict,
            "Built-in roles cannot be deleted.",
        ));
    }
    state
        .store
        .delete_role(&org, &name, &audit(&state, &a, &ip))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("Role"),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
