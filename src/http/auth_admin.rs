//! `/auth/v1/admin` and `/auth/v1/invite`: Supabase's admin API (`supabase.auth.admin`),
//! for servers holding a service key: a `service_role` JWT signed with the deployment's key
//! (`gatehouse service-key` mints one), or the configured `service_key`. Never the
//! publishable key. Every call is written to the admin log.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::admin::AdminUserInput;
use crate::app::AppState;
use crate::auth::tokens::ct_eq;
use crate::domain::Email;
use crate::http::auth_email::{metadata, parse_address};
use crate::http::auth_v1::{factor_json, user_json, FactorBody, UserBody};
use crate::http::extract::ClientIp;
use crate::http::gotrue::{gated, ErrorCode, GoTrueError, GoTrueJson};
use crate::mail::flows::{LinkError, LinkType};
use crate::store::{AdminAction, AdminAudit};

/// Routes behind the `apikey` gate; each handler checks the service key itself.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(gated(state, routes!(list_users, create_user)))
        .routes(gated(state, routes!(get_user, update_user, delete_user)))
        .routes(gated(state, routes!(generate_link)))
        .routes(gated(state, routes!(invite)))
        .routes(gated(state, routes!(audit_log)))
        .routes(gated(state, routes!(list_factors)))
        .routes(gated(state, routes!(delete_factor)))
}

/// Which kind of service key a request carried (the admin log's actor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServiceKey {
    /// A `service_role` JWT signed with the deployment's key.
    Jwt,
    /// The configured `service_key`.
    Secret,
}

impl ServiceKey {
    fn actor(self) -> &'static str {
        match self {
            ServiceKey::Jwt => "service_key:jwt",
            ServiceKey::Secret => "service_key:secret",
        }
    }
}

/// Whether `token` is a service key, and which. The configured secret is compared in
/// constant time; the publishable key and users' access tokens are none.
pub(crate) fn service_key_kind(state: &AppState, token: &str) -> Option<ServiceKey> {
    if let Some(secret) = &state.config.service_key {
        if ct_eq(token, secret.expose_secret()) {
            return Some(ServiceKey::Secret);
        }
    }
    let now = state.edge.clock.now_secs();
    state
        .accounts
        .jwt
        .verify_service(token, now)
        .ok()
        .map(|()| ServiceKey::Jwt)
}

fn not_admin() -> GoTrueError {
    GoTrueError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::NotAdmin,
        "User not allowed",
    )
}

/// The admin gate: `Authorization: Bearer <service key>`. Anything else in the header spends
/// from the client's failure budget and is answered `not_admin`.
pub(crate) async fn admin(
    state: &AppState,
    ip: &ClientIp,
    headers: &HeaderMap,
) -> Result<AdminAudit, GoTrueError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
        .map(|(_, t)| t.trim())
        .ok_or_else(|| {
            GoTrueError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::NoAuthorization,
                "This endpoint requires a valid Bearer token",
            )
        })?;
    crate::http::failures::admit(state, ip).await?;
    match service_key_kind(state, token) {
        Some(kind) => Ok(audit(state, ip, kind)),
        None => {
            crate::http::failures::spend(state, ip).await;
            Err(not_admin())
        }
    }
}

fn audit(state: &AppState, ip: &ClientIp, kind: ServiceKey) -> AdminAudit {
    AdminAudit {
        actor: kind.actor().to_string(),
        ip: Some(ip.0.to_string()),
        now: state.edge.clock.now_ms(),
    }
}

/// The audit of a call whose `apikey` is a service key (`signOut(jwt)` from an admin
/// client), if it is one.
pub(crate) fn service_apikey(
    state: &AppState,
    ip: &ClientIp,
    headers: &HeaderMap,
) -> Option<AdminAudit> {
    let k = headers.get("apikey").and_then(|v| v.to_str().ok())?;
    service_key_kind(state, k).map(|kind| audit(state, ip, kind))
}

/// A user id in a path: GoTrue answers 404 `validation_failed` for one that is no UUID.
fn user_id(raw: &str) -> Result<String, GoTrueError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            GoTrueError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ValidationFailed,
                "user_id must be an UUID",
            )
        })
}

/// `GET /auth/v1/admin/users`.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthAdminUsers)]
pub(crate) struct UsersPage {
    /// Always `authenticated`.
    aud: &'static str,
    /// The page, newest first.
    users: Vec<UserBody>,
}

/// Most users on one page.
const MAX_PER_PAGE: i64 = 1000;

fn page_param(q: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, GoTrueError> {
    match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1_000_000_000).contains(n))
            .ok_or_else(|| {
                GoTrueError::validation(format!(
                    "Bad Pagination Parameters: {name} must be a positive integer"
                ))
            }),
    }
}

/// `res` with GoTrue's paging headers (`Link`, `X-Total-Count`) for `path`.
fn paged(
    mut res: Response,
    base: &str,
    path: &str,
    page: i64,
    per_page: i64,
    total: i64,
) -> Response {
    for (name, value) in paging_headers(base, path, page, per_page, total) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(name, v);
        }
    }
    res
}

/// GoTrue's paging headers: `Link` with `rel="next"` (when there is a next page) and
/// `rel="last"`, and `X-Total-Count`.
fn paging_headers(
    base: &str,
    path: &str,
    page: i64,
    per_page: i64,
    total: i64,
) -> Vec<(header::HeaderName, String)> {
    let pages = (total + per_page - 1) / per_page;
    let link = |p: i64| format!("<{base}{path}?page={p}&per_page={per_page}>");
    let mut value = String::new();
    if pages > page {
        value.push_str(&format!("{}; rel=\"next\", ", link(page + 1)));
    }
    value.push_str(&format!("{}; rel=\"last\"", link(pages)));
    vec![
        (header::LINK, value),
        (
            header::HeaderName::from_static("x-total-count"),
            total.to_string(),
        ),
    ]
}

#[utoipa::path(get, path = "/auth/v1/admin/users", tag = "auth", operation_id = "admin_list_users",
    security(("apikey" = [], "service_key" = [])),
    params(("page" = Option<i64>, Query, description = "Page number, from 1 (default 1)"),
           ("per_page" = Option<i64>, Query, description = "Users per page, 1–1000 (default 50)")),
    responses((status = 200, description = "A page of users, newest first; Link (rel next and last) and X-Total-Count headers", content_type = "application/json", body = UsersPage),
              (status = 400, description = "validation_failed: a bad page or per_page", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin: the bearer token is not a service key", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let page = page_param(&q, "page", 1)?;
    let per_page = page_param(&q, "per_page", 50)?;
    if per_page > MAX_PER_PAGE {
        return Err(GoTrueError::validation(format!(
            "Bad Pagination Parameters: per_page must be at most {MAX_PER_PAGE}"
        )));
    }
    let (users, total) = state
        .accounts
        .admin_list_users(page, per_page, &audit)
        .await?;
    let body = UsersPage {
        aud: "authenticated",
        users: users.iter().map(user_json).collect(),
    };
    Ok(paged(
        Json(body).into_response(),
        state.config.public_base(),
        "/auth/v1/admin/users",
        page,
        per_page,
        total,
    ))
}

/// `POST /auth/v1/admin/users` and `PUT /auth/v1/admin/users/{user_id}` (GoTrue's
/// `AdminUserAttributes`). Unknown fields are ignored.
#[derive(Deserialize, ToSchema, Default)]
#[schema(as = AuthAdminUserAttributes)]
pub(crate) struct AdminUserBody {
    /// The address (required to create).
    email: Option<String>,
    /// A password, checked against the password policy (none: the user has no password).
    password: Option<String>,
    /// Confirm the address at once.
    #[serde(default)]
    email_confirm: bool,
    /// The user's metadata: set at creation, merged on update (a null value removes a key).
    #[schema(value_type = Option<Object>)]
    user_metadata: Option<Value>,
    /// Provider metadata (`provider` and `providers` are kept), merged the same way.
    #[schema(value_type = Option<Object>)]
    app_metadata: Option<Value>,
    /// A ban from now: a Go duration such as `24h` or `1h30m`; `none` lifts it.
    ban_duration: Option<String>,
    /// Refused with `phone_provider_disabled` (phone users are not offered).
    phone: Option<String>,
    /// The password's existing hash instead of `password` (a bcrypt
    /// `$2a$`/`$2b$`/`$2y$` hash, as GoTrue stores them, or an argon2 PHC string), kept as
    /// given; a bcrypt hash is replaced by argon2id at the first password sign-in.
    password_hash: Option<String>,
}

fn input(body: AdminUserBody) -> Result<AdminUserInput, GoTrueError> {
    if body.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::PhoneProviderDisabled,
            "Phone signups are disabled",
        ));
    }
    Ok(AdminUserInput {
        email: body.email,
        password: body.password,
        email_confirm: body.email_confirm,
        user_metadata: body.user_metadata,
        app_metadata: body.app_metadata,
        ban_duration: body.ban_duration,
        password_hash: body.password_hash,
    })
}

/// The user in GoTrue's admin shape: the usual one, with `banned_until` while banned.
fn admin_user(state: &AppState, u: &crate::store::User) -> UserBody {
    let mut body = user_json(u);
    if u.banned_at(state.edge.clock.now_ms()) {
        body.banned_until = u.banned_until.map(crate::clock::rfc3339);
    }
    body
}

#[utoipa::path(post, path = "/auth/v1/admin/users", tag = "auth", operation_id = "admin_create_user",
    security(("apikey" = [], "service_key" = [])),
    request_body(content = AdminUserBody, content_type = "application/json"),
    responses((status = 200, description = "The new user", content_type = "application/json", body = UserBody),
              (status = 400, description = "bad_json, validation_failed or phone_provider_disabled", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 422, description = "email_exists or weak_password", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    GoTrueJson(body): GoTrueJson<AdminUserBody>,
) -> Result<Json<UserBody>, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let user = state
        .accounts
        .admin_create_user(input(body)?, &audit)
        .await?;
    Ok(Json(admin_user(&state, &user)))
}

#[utoipa::path(get, path = "/auth/v1/admin/users/{user_id}", tag = "auth", operation_id = "admin_get_user",
    security(("apikey" = [], "service_key" = [])),
    params(("user_id" = String, Path, description = "The user's UUID")),
    responses((status = 200, description = "The user", content_type = "application/json", body = UserBody),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 404, description = "user_not_found, or validation_failed for an id that is no UUID", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<UserBody>, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let user = state
        .accounts
        .admin_get_user(&user_id(&id)?, &audit)
        .await?;
    Ok(Json(admin_user(&state, &user)))
}

#[utoipa::path(put, path = "/auth/v1/admin/users/{user_id}", tag = "auth", operation_id = "admin_update_user",
    security(("apikey" = [], "service_key" = [])),
    params(("user_id" = String, Path, description = "The user's UUID")),
    request_body(content = AdminUserBody, content_type = "application/json"),
    responses((status = 200, description = "The updated user (a new password or a ban ends every session of the user)", content_type = "application/json", body = UserBody),
              (status = 400, description = "bad_json, validation_failed (a bad ban_duration) or phone_provider_disabled", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 404, description = "user_not_found, or validation_failed for an id that is no UUID", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 422, description = "email_exists or weak_password", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    GoTrueJson(body): GoTrueJson<AdminUserBody>,
) -> Result<Json<UserBody>, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let id = user_id(&id)?;
    let (user, ended) = state
        .accounts
        .admin_update_user(&id, input(body)?, &audit)
        .await?;
    state.end_sessions(ended).await;
    Ok(Json(admin_user(&state, &user)))
}

#[utoipa::path(delete, path = "/auth/v1/admin/users/{user_id}", tag = "auth", operation_id = "admin_delete_user",
    security(("apikey" = [], "service_key" = [])),
    params(("user_id" = String, Path, description = "The user's UUID")),
    responses((status = 200, description = "Deleted, with every session, token and membership of the user: {}", content_type = "application/json", body = Object),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 404, description = "user_not_found, or validation_failed for an id that is no UUID", body = GoTrueError),
              (status = 409, description = "conflict: the user is the only owner of an organization (named in the message); nothing was deleted", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let ended = state
        .accounts
        .admin_delete_user(&user_id(&id)?, &audit)
        .await?;
    state.end_sessions(ended).await;
    Ok(Json(json!({})))
}

#[utoipa::path(get, path = "/auth/v1/admin/users/{user_id}/factors", tag = "auth", operation_id = "admin_list_factors",
    security(("apikey" = [], "service_key" = [])),
    params(("user_id" = String, Path, description = "The user's UUID")),
    responses((status = 200, description = "The user's factors, verified or not, oldest first (`mfa.listFactors`)", content_type = "application/json", body = Vec<FactorBody>),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 404, description = "user_not_found, or validation_failed for an id that is no UUID", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn list_factors(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<FactorBody>>, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let factors = state
        .accounts
        .admin_list_factors(&user_id(&id)?, &audit)
        .await?;
    Ok(Json(factors.iter().map(factor_json).collect()))
}

fn factor_not_found() -> GoTrueError {
    GoTrueError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::MfaFactorNotFound,
        "Factor not found",
    )
}

#[utoipa::path(delete, path = "/auth/v1/admin/users/{user_id}/factors/{factor_id}", tag = "auth", operation_id = "admin_delete_factor",
    security(("apikey" = [], "service_key" = [])),
    params(("user_id" = String, Path, description = "The user's UUID"),
           ("factor_id" = String, Path, description = "The factor's UUID")),
    responses((status = 200, description = "The removed factor (`mfa.deleteFactor`), verified or not; sessions it made aal2 are aal1 again at their next refresh", content_type = "application/json", body = FactorBody),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 404, description = "user_not_found, mfa_factor_not_found (not a factor of this user), or validation_failed for an id that is no UUID", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn delete_factor(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path((id, factor_id)): Path<(String, String)>,
) -> Result<Json<FactorBody>, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let id = user_id(&id)?;
    let factor_id = uuid::Uuid::parse_str(&factor_id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            GoTrueError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ValidationFailed,
                "factor_id must be an UUID",
            )
        })?;
    let factor = state
        .accounts
        .admin_delete_factor(&id, &factor_id, &audit)
        .await?
        .ok_or_else(factor_not_found)?;
    Ok(Json(factor_json(&factor)))
}

impl From<LinkError> for GoTrueError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Flow(f) => f.into(),
            LinkError::UserNotFound => GoTrueError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::UserNotFound,
                "User with this email not found",
            ),
            LinkError::EmailExists => GoTrueError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::EmailExists,
                "A user with this email address has already been registered",
            ),
            LinkError::CurrentNotConfirming => GoTrueError::validation(
                "Enable secure email change to generate link for current email",
            ),
        }
    }
}

/// `POST /auth/v1/admin/generate_link`.
#[derive(Deserialize, ToSchema)]
#[schema(as = AuthAdminGenerateLink)]
pub(crate) struct GenerateLinkBody {
    /// signup, invite, magiclink, recovery, email_change_current or email_change_new.
    #[serde(rename = "type")]
    #[schema(value_type = String, required = true)]
    kind: Option<String>,
    /// The user's address.
    #[schema(value_type = String, required = true)]
    email: Option<String>,
    /// The new address (email changes).
    new_email: Option<String>,
    /// The password of a `signup` link's new account.
    password: Option<String>,
    /// Metadata of an account the link creates: a JSON object.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// Where the link lands (checked against redirect_allowlist).
    redirect_to: Option<String>,
}

/// What `generate_link` answers: the user, with the link's properties beside its fields
/// (supabase-js splits them into `properties` and `user`).
#[derive(Serialize, ToSchema)]
#[schema(as = AuthAdminLink)]
pub(crate) struct GeneratedLink {
    /// The link to follow.
    action_link: String,
    /// The six-digit code.
    email_otp: String,
    /// The link's token, as `verifyOtp({ token_hash })` takes it.
    hashed_token: String,
    /// Where the link lands.
    redirect_to: String,
    /// The type the link was made as (`signup` for a magic link to a new address).
    verification_type: &'static str,
    /// The user.
    #[serde(flatten)]
    user: UserBody,
}

#[utoipa::path(post, path = "/auth/v1/admin/generate_link", tag = "auth", operation_id = "admin_generate_link",
    security(("apikey" = [], "service_key" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the link lands, when the body has no redirect_to (supabase-py sends it here)")),
    request_body(content = GenerateLinkBody, content_type = "application/json"),
    responses((status = 200, description = "The link, its code and token, and the user; nothing is mailed", content_type = "application/json", body = GeneratedLink),
              (status = 400, description = "bad_json or validation_failed", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 404, description = "user_not_found: recovery or an email change for an address without an account", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 422, description = "email_exists or weak_password", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn generate_link(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<GenerateLinkBody>,
) -> Result<Json<GeneratedLink>, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let kind = match body.kind.as_deref().unwrap_or("") {
        "signup" => LinkType::Signup,
        "invite" => LinkType::Invite,
        "magiclink" => LinkType::MagicLink,
        "recovery" => LinkType::Recovery,
        "email_change_current" => LinkType::EmailChangeCurrent,
        "email_change_new" => LinkType::EmailChangeNew,
        other => {
            return Err(GoTrueError::validation(format!(
                "Invalid email action link type requested: {}",
                other.chars().take(40).collect::<String>()
            )))
        }
    };
    let email = parse_address(body.email.as_deref())?;
    let new_email = match kind {
        LinkType::EmailChangeCurrent | LinkType::EmailChangeNew => {
            Some(parse_address(body.new_email.as_deref())?)
        }
        _ => None,
    };
    let data = metadata(body.data)?;
    let password_hash = match (kind, body.password.filter(|p| !p.is_empty())) {
        (LinkType::Signup, Some(p)) => Some(state.accounts.admin_password_hash(p, &email).await?),
        (LinkType::Signup, None) => {
            return Err(GoTrueError::validation("Signup requires a valid password"))
        }
        _ => None,
    };
    let (user, issued, vtype) = state
        .email
        .generate_link(
            kind,
            email.as_str(),
            new_email.as_ref().map(Email::as_str),
            password_hash,
            &data,
            body.redirect_to
                .as_deref()
                .or(q.get("redirect_to").map(String::as_str)),
        )
        .await?;
    state
        .accounts
        .admin_record(
            &audit,
            AdminAction::LinkGenerated,
            Some(&user.id),
            json!({ "type": vtype }),
        )
        .await?;
    Ok(Json(GeneratedLink {
        action_link: issued.action_link,
        email_otp: issued.code,
        hashed_token: issued.token,
        redirect_to: issued.redirect_to,
        verification_type: vtype,
        user: admin_user(&state, &user),
    }))
}

/// `POST /auth/v1/invite`.
#[derive(Deserialize, ToSchema)]
#[schema(as = AuthAdminInvite)]
pub(crate) struct InviteBody {
    /// The address to invite.
    #[schema(value_type = String, required = true)]
    email: Option<String>,
    /// Metadata of the new account: a JSON object.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

#[utoipa::path(post, path = "/auth/v1/invite", tag = "auth", operation_id = "admin_invite",
    security(("apikey" = [], "service_key" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the invitation link lands (checked against redirect_allowlist)")),
    request_body(content = InviteBody, content_type = "application/json"),
    responses((status = 200, description = "The invited user (created unconfirmed, without a password, when new); the invitation mail is queued", content_type = "application/json", body = UserBody),
              (status = 400, description = "bad_json or validation_failed", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 422, description = "email_exists: the address has a confirmed account", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn invite(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<InviteBody>,
) -> Result<Json<UserBody>, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let email = parse_address(body.email.as_deref())?;
    let data = metadata(body.data)?;
    let redirect_to = q.get("redirect_to").map(String::as_str);
    let user = state
        .email
        .invite(email.as_str(), &data, redirect_to)
        .await?;
    state
        .accounts
        .admin_record(
            &audit,
            AdminAction::UserInvited,
            Some(&user.id),
            json!({ "email": user.email }),
        )
        .await?;
    Ok(Json(admin_user(&state, &user)))
}

/// One admin-log entry in GoTrue's audit shape.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthAdminAuditEntry)]
pub(crate) struct AuditEntryBody {
    /// When (RFC 3339).
    created_at: String,
    /// Entry id.
    id: String,
    /// The client address.
    ip_address: String,
    /// What happened.
    payload: AuditPayload,
}

/// The `payload` of an admin-log entry.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthAdminAuditPayload)]
pub(crate) struct AuditPayload {
    /// `user.created`, `user.deleted`, … (docs/audit-log.md).
    action: String,
    /// Which kind of service key: `service_key:jwt` or `service_key:secret`.
    actor_username: String,
    /// Always `admin`.
    log_type: &'static str,
    /// The user the call named, if any.
    target: Option<String>,
    /// The entry's details.
    #[schema(value_type = Object)]
    traits: Value,
}

#[utoipa::path(get, path = "/auth/v1/admin/audit", tag = "auth", operation_id = "admin_audit_log",
    security(("apikey" = [], "service_key" = [])),
    params(("page" = Option<i64>, Query, description = "Page number, from 1 (default 1)"),
           ("per_page" = Option<i64>, Query, description = "Entries per page, 1–1000 (default 50)")),
    responses((status = 200, description = "The admin log, newest first (this read included), with Link and X-Total-Count headers", content_type = "application/json", body = Vec<AuditEntryBody>),
              (status = 400, description = "validation_failed: a bad page or per_page", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "not_admin", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage is unavailable", body = GoTrueError)))]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, GoTrueError> {
    let audit = admin(&state, &ip, &headers).await?;
    let page = page_param(&q, "page", 1)?;
    let per_page = page_param(&q, "per_page", 50)?;
    if per_page > MAX_PER_PAGE {
        return Err(GoTrueError::validation(format!(
            "Bad Pagination Parameters: per_page must be at most {MAX_PER_PAGE}"
        )));
    }
    let (entries, total) = state.accounts.admin_log(page, per_page, &audit).await?;
    let body: Vec<AuditEntryBody> = entries
        .into_iter()
        .map(|e| AuditEntryBody {
            created_at: crate::clock::rfc3339(e.created_at),
            id: e.id,
            ip_address: e.ip.unwrap_or_default(),
            payload: AuditPayload {
                action: e.action,
                actor_username: e.actor,
                log_type: "admin",
                target: e.target,
                traits: e.details,
            },
        })
        .collect();
    Ok(paged(
        Json(body).into_response(),
        state.config.public_base(),
        "/auth/v1/admin/audit",
        page,
        per_page,
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::paging_headers;

    #[test]
    fn paging_headers_are_gotrues() {
        let h = paging_headers("http://x", "/auth/v1/admin/users", 1, 2, 5);
        assert_eq!(
            h[0].1,
            "<http://x/auth/v1/admin/users?page=2&per_page=2>; rel=\"next\", <http://x/auth/v1/admin/users?page=3&per_page=2>; rel=\"last\""
        );
        assert_eq!(h[1].1, "5");
        let last = paging_headers("http://x", "/auth/v1/admin/users", 3, 2, 5);
        assert_eq!(
            last[0].1,
            "<http://x/auth/v1/admin/users?page=3&per_page=2>; rel=\"last\""
        );
    }
}
