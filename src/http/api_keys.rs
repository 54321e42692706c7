//! `/v1/orgs/{org}/api-keys`, `/v1/keys/verify` and `/v1/orgs/{org}/audit-log`.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::api_key::Environment;
use crate::domain::permissions;
use crate::domain::permissions::Permission;
use crate::error::{ApiError, Code};
use crate::http::envelope::{created, ok, Success};
use crate::http::extract::{ApiJson, ClientIp, Principal};
use crate::http::limits::{parse_specs, RateLimitSpec};
use crate::http::orgs::{audit, org_access};
use crate::keys::{KeyFailure, NewKey};
use crate::orgs::{check_id, check_name};
use crate::ratelimit::Rates;
use crate::store::{ApiKeyRecord, AuditEntry, KeyChange, StoreError};

/// Routes of this file.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orgs/{org}/api-keys", get(list_keys).post(create_key))
        .route(
            "/v1/orgs/{org}/api-keys/{id}",
            get(get_key).patch(update_key).delete(revoke_key),
        )
        .route("/v1/orgs/{org}/api-keys/{id}/roll", post(roll_key))
        .route("/v1/keys/verify", post(verify_key))
        .route("/v1/orgs/{org}/audit-log", get(audit_log))
}

const DAY_MS: i64 = 86_400_000;
const MAX_METADATA_BYTES: usize = 4096;

/// An API key as listed: never the key, never its hash.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// `key_…`.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// Name.
    pub name: String,
    /// The first 12 characters.
    pub start: String,
    /// `start••••`, for display.
    pub masked: String,
    /// Permissions.
    pub scopes: Vec<String>,
    /// `live` or `test`.
    pub environment: String,
    /// Caller data.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Creator (`user:…`, `cli`).
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms or null (never).
    pub expires_at: Option<i64>,
    /// Unix ms (written behind, within 30 s).
    pub last_used_at: Option<i64>,
    /// Unix ms.
    pub revoked_at: Option<i64>,
    /// The key that replaced this one in a roll.
    pub rolled_to: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    /// The key's own rate limits; `null`: the deployment's default for keys.
    pub rate_limits: Option<Vec<RateLimitSpec>>,
}

fn view(k: &ApiKeyRecord, now: i64) -> KeyView {
    KeyView {
        id: k.id.clone(),
        org_id: k.org_id.clone(),
        name: k.name.clone(),
        start: k.start.clone(),
        masked: format!("{}••••", k.start),
        scopes: k.scopes.clone(),
        environment: k.environment.clone(),
        metadata: k.metadata.clone(),
        created_by: k.created_by.clone(),
        created_at: k.created_at,
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
        rolled_to: k.rolled_to.clone(),
        status: k.status(now),
        rate_limits: k.rate_limits.as_ref().map(Rates::specs),
    }
}

/// A new key and its one-time secret.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The full key: shown once, never again.
    pub key: String,
    /// The stored record.
    #[serde(flatten)]
    pub record: KeyView,
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// 1-50 characters.
    pub name: String,
    /// Permissions, a subset of the creator's; never `keys:write` or `members:write`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `live` (default) or `test`.
    pub environment: Option<String>,
    /// Days until expiry (1-3650); default 365; `null` for never.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<i64>)]
    pub expires_in_days: Option<Option<i64>>,
    /// A JSON object of at most 4 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The key's own windows, replacing the default (all must admit a request).
    pub rate_limits: Option<Vec<RateLimitSpec>>,
}

/// The checked settings shared by creation (HTTP and CLI).
pub struct KeySettings {
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Environment.
    pub environment: Environment,
    /// Lifetime in ms, or never.
    pub lifetime_ms: Option<i64>,
    /// Metadata.
    pub metadata: Value,
    /// Own rate limits.
    pub rate_limits: Option<Rates>,
}

/// Validates creation input; a key's scopes must be held by its creator (`None`: the operator).
pub fn check_settings(
    body: CreateKeyBody,
    creator: Option<&crate::orgs::Access>,
) -> Result<KeySettings, ApiError> {
    let name = check_name("name", &body.name, 50)?;
    let scopes = permissions::parse_list(&body.scopes)
        .map_err(|p| ApiError::field("scopes", &format!("unknown permission {p:?}")))?;
    if let Some(p) = scopes
        .iter()
        .find(|p| permissions::NEVER_ON_KEYS.contains(&p.as_str()))
    {
        return Err(ApiError::field(
            "scopes",
            &format!("{p} cannot be given to an API key"),
        ));
    }
    if let Some(creator) = creator {
        creator.require_all(&scopes)?;
    }
    let environment = match body.environment.as_deref() {
        None => Environment::Live,
        Some(e) => Environment::parse(e)
            .ok_or_else(|| ApiError::field("environment", "must be live or test"))?,
    };
    let lifetime_ms = match body.expires_in_days {
        None => Some(365 * DAY_MS),
        Some(None) => None,
        Some(Some(d)) if (1..=3650).contains(&d) => Some(d * DAY_MS),
        Some(Some(_)) => {
            return Err(ApiError::field(
                "expires_in_days",
                "must be between 1 and 3650, or null for never",
            ))
        }
    };
    let metadata = check_metadata(body.metadata)?;
    let rate_limits = body
        .rate_limits
        .map(|r| parse_specs("rate_limits", &r))
        .transpose()?;
    Ok(KeySettings {
        name,
        scopes,
        environment,
        lifetime_ms,
        metadata,
        rate_limits,
    })
}

fn check_metadata(metadata: Option<Value>) -> Result<Value, ApiError> {
    let metadata = match metadata {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(m)) => Value::Object(m),
        Some(_) => return Err(ApiError::field("metadata", "must be a JSON object")),
    };
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(ApiError::field("metadata", "must be at most 4 KiB"));
    }
    Ok(metadata)
}

/// Creates a key (owners: `keys:write`).
#[utoipa::path(post, path = "/v1/orgs/{org}/api-keys", tag = "api-keys", request_body = CreateKeyBody,
    responses((status = 201, body = CreatedKey), (status = 403, description = "forbidden"), (status = 422, description = "validation_failed")))]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Success<CreatedKey>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::KeysWrite)?;
    let s = check_settings(body, Some(&a))?;
    let now = state.clock.now_ms();
    let (key, record) = state.keys.mint(NewKey {
        org_id: org.clone(),
        name: s.name,
        scopes: s.scopes,
        environment: s.environment,
        lifetime_ms: s.lifetime_ms,
        metadata: s.metadata,
        created_by: a.actor.clone(),
        rate_limits: s.rate_limits,
    });
    state
        .store
        .create_api_key(&record, &audit(&state, &a, &ip))
        .await?;
    Ok(created(CreatedKey {
        key,
        record: view(&record, now),
    }))
}

/// The organization's keys.
#[utoipa::path(get, path = "/v1/orgs/{org}/api-keys", tag = "api-keys", responses((status = 200, body = [KeyView])))]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
) -> Result<Success<Vec<KeyView>>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::KeysRead)?;
    let now = state.clock.now_ms();
    Ok(ok(state
        .store
        .api_keys(&org)
        .await?
        .iter()
        .map(|k| view(k, now))
        .collect()))
}

async fn find_key(state: &AppState, org: &str, id: &str) -> Result<ApiKeyRecord, ApiError> {
    check_id(id, "key")?;
    state
        .store
        .api_key(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))
}

/// One key.
#[utoipa::path(get, path = "/v1/orgs/{org}/api-keys/{id}", tag = "api-keys",
    responses((status = 200, body = KeyView), (status = 404, description = "not_found")))]
pub async fn get_key(
    State(state): State<AppState>,
    principal: Principal,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<KeyView>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::KeysRead)?;
    let k = find_key(&state, &org, &id).await?;
    Ok(ok(view(&k, state.clock.now_ms())))
}

/// Revokes a key, effective at once.
#[utoipa::path(delete, path = "/v1/orgs/{org}/api-keys/{id}", tag = "api-keys",
    responses((status = 200, body = KeyView), (status = 404, description = "not_found"), (status = 409, description = "Already revoked")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<KeyView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::KeysWrite)?;
    check_id(&id, "key")?;
    let k = state
        .store
        .revoke_api_key(&org, &id, &audit(&state, &a, &ip))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("API key"),
            other => other.into(),
        })?;
    state
        .invalidate(crate::fanout::Invalidation::Key(k.key_hash.clone()))
        .await;
    Ok(ok(view(&k, state.clock.now_ms())))
}

/// How long the old key keeps working after a roll.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RollBody {
    /// Seconds (0 to 30 days); default 86400.
    pub grace_seconds: Option<i64>,
}

/// Issues a new key with the same settings; the old one works until the grace period ends.
#[utoipa::path(post, path = "/v1/orgs/{org}/api-keys/{id}/roll", tag = "api-keys", request_body = RollBody,
    responses((status = 201, body = CreatedKey), (status = 409, description = "Revoked or already rolled")))]
pub async fn roll_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Success<CreatedKey>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::KeysWrite)?;
    // The body is optional: an empty one means the defaults.
    let body: RollBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::msg(Code::InvalidRequest, format!("the body is not valid: {e}"))
        })?
    };
    let grace = body.grace_seconds.unwrap_or(86_400);
    if !(0..=30 * 86_400).contains(&grace) {
        return Err(ApiError::field(
            "grace_seconds",
            "must be between 0 and 2592000",
        ));
    }
    let old = find_key(&state, &org, &id).await?;
    let now = state.clock.now_ms();
    if old.status(now) != "active" {
        return Err(ApiError::msg(
            Code::Conflict,
            format!(
                "The key is {}; only active keys can be rolled.",
                old.status(now)
            ),
        ));
    }
    let (key, record) = state.keys.mint(NewKey {
        org_id: org.clone(),
        name: old.name.clone(),
        scopes: old.scopes.clone(),
        environment: Environment::parse(&old.environment).unwrap_or(Environment::Live),
        lifetime_ms: old.expires_at.map(|e| e - old.created_at),
        metadata: old.metadata.clone(),
        created_by: a.actor.clone(),
        rate_limits: old.rate_limits.clone(),
    });
    let grace_end = now + grace * 1000;
    let old_expires = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
    state
        .store
        .roll_api_key(&id, &record, old_expires, &audit(&state, &a, &ip))
        .await?;
    state
        .invalidate(crate::fanout::Invalidation::Key(old.key_hash.clone()))
        .await;
    Ok(created(CreatedKey {
        key,
        record: view(&record, now),
    }))
}

/// Changes to a key; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyBody {
    /// 1-50 characters.
    pub name: Option<String>,
    /// A JSON object of at most 4 KiB (replaces the old one).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The key's own windows; `null` restores the default.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<Vec<RateLimitSpec>>)]
    pub rate_limits: Option<Option<Vec<RateLimitSpec>>>,
}

/// Renames a key or changes its metadata or rate limits (`keys:write`); applies at once
/// on every instance.
#[utoipa::path(patch, path = "/v1/orgs/{org}/api-keys/{id}", tag = "api-keys", request_body = UpdateKeyBody,
    responses((status = 200, body = KeyView), (status = 404, description = "not_found"), (status = 422, description = "validation_failed")))]
pub async fn update_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateKeyBody>,
) -> Result<Success<KeyView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::KeysWrite)?;
    check_id(&id, "key")?;
    let change = KeyChange {
        name: body.name.map(|n| check_name("name", &n, 50)).transpose()?,
        metadata: body.metadata.map(|m| check_metadata(Some(m))).transpose()?,
        rate_limits: body
            .rate_limits
            .map(|r| r.map(|r| parse_specs("rate_limits", &r)).transpose())
            .transpose()?,
    };
    let k = state
        .store
        .update_api_key(&org, &id, &change, &audit(&state, &a, &ip))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("API key"),
            other => other.into(),
        })?;
    state
        .invalidate(crate::fanout::Invalidation::Key(k.key_hash.clone()))
        .await;
    Ok(ok(view(&k, state.clock.now_ms())))
}

/// A key to check.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The presented key.
    pub key: String,
}

/// The verdict on a key, Unkey-style.
#[derive(Serialize, ToSchema)]
pub struct Verdict {
    /// Whether the key may be used now.
    pub valid: bool,
    /// Why not: `malformed`, `not_found`, `expired`, `revoked`.
    pub reason: Option<&'static str>,
    /// Key id.
    pub key_id: Option<String>,
    /// Organization id.
    pub org_id: Option<String>,
    /// Permissions.
    pub scopes: Option<Vec<String>>,
    /// `live`/`test`.
    pub environment: Option<String>,
    /// Unix ms.
    pub expires_at: Option<i64>,
    /// Caller data.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The verified key's own rate-limit window closest to exhaustion (each verification
    /// counts as one use of the key).
    pub ratelimit: Option<VerdictLimit>,
}

/// A verified key's rate-limit state.
#[derive(Serialize, ToSchema)]
pub struct VerdictLimit {
    /// The window's limit.
    pub limit: u32,
    /// Its length in seconds.
    pub window_seconds: u32,
    /// Uses left now.
    pub remaining: u32,
    /// Unix seconds at which the window is full again.
    pub reset: i64,
    /// Seconds until a use is admitted (0 when this one was).
    pub retry_after: u64,
}

/// Verifies a key of the caller's own organization (needs `keys:verify`).
#[utoipa::path(post, path = "/v1/keys/verify", tag = "api-keys", request_body = VerifyBody,
    responses((status = 200, body = Verdict), (status = 403, description = "forbidden")))]
pub async fn verify_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Success<Verdict>, ApiError> {
    let org_id = match &principal {
        Principal::ApiKey { key } => key.org_id.clone(),
        Principal::User { .. } => {
            return Err(ApiError::msg(
                Code::Forbidden,
                "Verify keys with an API key that has keys:verify.",
            )
            .details(json!({ "required": "keys:verify" })))
        }
    };
    org_access(&state, &principal, &org_id)
        .await?
        .require(Permission::KeysVerify)?;
    let invalid = |why: KeyFailure| Verdict {
        valid: false,
        reason: Some(why.reason().as_str()),
        key_id: None,
        org_id: None,
        scopes: None,
        environment: None,
        expires_at: None,
        metadata: None,
        ratelimit: None,
    };
    let verdict = match state.keys.check(&body.key).await {
        // A key of another organization reads as unknown: no cross-tenant oracle.
        Ok(k) if k.org_id != org_id => invalid(KeyFailure::NotFound),
        Ok(k) => {
            // The verified key's own windows; the organization's were counted for the
            // caller's request already.
            let req = state.key_request(&k, false).await?;
            let d = state
                .limiter
                .check(&req)
                .await
                .map_err(|_| crate::http::limits::unavailable())?;
            let ratelimit = d.binding().map(|b| VerdictLimit {
                limit: b.limit,
                window_seconds: b.window_seconds,
                remaining: b.remaining,
                reset: b.reset_at,
                retry_after: b.retry_after,
            });
            if d.allowed {
                state.keys.record_use(&k.id);
            }
            Verdict {
                valid: d.allowed,
                reason: (!d.allowed).then_some("rate_limited"),
                ratelimit,
                key_id: Some(k.id.clone()),
                org_id: Some(k.org_id.clone()),
                scopes: Some(k.scopes.clone()),
                environment: Some(k.environment.clone()),
                expires_at: k.expires_at,
                metadata: Some(k.metadata.clone()),
            }
        }
        Err(KeyFailure::Unavailable) => {
            return Err(ApiError::unavailable(
                1,
                "Storage is unavailable; retry shortly.",
            ))
        }
        Err(why) => invalid(why),
    };
    Ok(ok(verdict))
}

/// Paging of the audit log.
#[derive(Deserialize)]
pub struct AuditQuery {
    /// At most this many entries (1-200, default 50).
    pub limit: Option<i64>,
    /// Entries older than this position (`seq` of the last entry of the previous page).
    pub before: Option<i64>,
}

/// The organization's audit log, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit-log", tag = "audit",
    params(("limit" = Option<i64>, Query, description = "1-200, default 50"), ("before" = Option<i64>, Query, description = "seq of the last entry already read")),
    responses((status = 200, body = [AuditEntry])))]
pub async fn audit_log(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<Vec<AuditEntry>>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::msg(Code::InvalidRequest, format!("Bad query string: {e}")))?;
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::AuditRead)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 200"));
    }
    Ok(ok(state.store.audit_log(&org, limit, q.before).await?))
}
