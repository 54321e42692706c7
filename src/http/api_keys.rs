//! `/v1/orgs/{org}/api-keys`, `/v1/keys/verify` and `/v1/orgs/{org}/audit-log`: parse,
//! authorise, call [`crate::keys::Keys`], shape the answer.

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::auth::api_key::Environment;
use crate::config::Policy;
use crate::domain::budget::Budget;
use crate::domain::credits::{KeyCredits, MAX_COST};
use crate::domain::permissions::Permission;
use crate::domain::{AuditAction, AuditActor, ACTOR_PATTERN, AUDIT_ACTIONS};
use crate::domain::{ChatLimits, ChatLimitsChange, TokenLimits};
use crate::error::{ApiError, Code};
use crate::http::envelope::{created, errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{ApiJson, ClientIp, Ids, Principal};
use crate::http::orgs::{audit, org_access};
use crate::ids::{KeyId, OrgId};
use crate::keys::{
    Creator, CreditsInput, KeyError, KeyFailure, KeyInput, KeyLimits, KeyUpdate, RefillInput,
    Verification,
};
use crate::ratelimit::{RateLimitSpec, Rates};
use crate::store::{ApiKeyRecord, AuditEntry};

/// Routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, update_key, revoke_key))
        .routes(routes!(roll_key))
        .routes(routes!(verify_key))
        .routes(routes!(audit_log))
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid { field, problem } => ApiError::field(field, &problem),
            KeyError::NotHeld(missing) => ApiError::msg(
                Code::Forbidden,
                format!("You cannot grant {missing}, which you do not hold."),
            )
            .details(json!({ "required": missing })),
            KeyError::NotFound => ApiError::not_found("API key"),
            KeyError::NoOrg(_) => ApiError::not_found("Organization"),
            e @ KeyError::NotActive(_) => ApiError::msg(Code::Conflict, e.to_string()),
            KeyError::Unavailable => {
                ApiError::unavailable(1, "Storage is unavailable; retry shortly.")
            }
            KeyError::LimiterUnavailable => crate::http::limits::unavailable(),
            KeyError::Store(e) => e.into(),
        }
    }
}

/// A key's state, as listed.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only describes `KeyView::status` in the OpenAPI document
enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

/// Why `/v1/keys/verify` found a key unusable.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // only describes `Verdict::reason` in the OpenAPI document
enum VerdictReason {
    Malformed,
    NotFound,
    Expired,
    Revoked,
    RateLimited,
    UsageExceeded,
}

/// The result code of `/v1/keys/verify`: `valid`, or why the key is not usable now.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // only describes `Verdict::code` in the OpenAPI document
enum VerdictCode {
    Valid,
    Malformed,
    NotFound,
    Expired,
    Revoked,
    RateLimited,
    UsageExceeded,
}

/// How often credits are set back to the refill amount.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only describes `RefillSpec::interval` in the OpenAPI document
enum RefillInterval {
    Daily,
    Monthly,
}

/// A refill: at each period's start the balance is SET to `amount` (not added to).
#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct RefillSpec {
    /// `daily` (every UTC midnight) or `monthly` (UTC midnight of `day`).
    #[schema(value_type = RefillInterval)]
    pub interval: String,
    /// The balance each period starts with.
    #[schema(minimum = 0, maximum = 1e15)]
    pub amount: i64,
    /// The day of the month (1-31, default 1) of a monthly refill; the month's last day when
    /// it is shorter. Not given for daily.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31)]
    pub day: Option<i64>,
}

/// A key's credits: uses left. Each authenticated use spends one (`/v1/keys/verify`: `cost`);
/// at zero the key is refused with 402 `credits_exhausted`.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct CreditsSpec {
    /// Uses left now (on create and update: the balance to start with).
    #[schema(minimum = 0, maximum = 1e15)]
    pub remaining: i64,
    /// Sets the balance back periodically; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<RefillSpec>,
}

impl From<CreditsSpec> for CreditsInput {
    fn from(c: CreditsSpec) -> Self {
        CreditsInput {
            remaining: c.remaining,
            refill: c.refill.map(|r| RefillInput {
                interval: r.interval,
                amount: r.amount,
                day: r.day,
            }),
        }
    }
}

/// A key's credits as they stand at `now` (refilled if a period began since storage wrote
/// them).
fn credits_view(c: &KeyCredits, now: i64) -> CreditsSpec {
    CreditsSpec {
        remaining: c.balance.at(c.refill.as_ref(), now).remaining,
        refill: c.refill.map(|r| RefillSpec {
            interval: r.interval.as_str().to_string(),
            amount: r.amount,
            day: r.day.map(i64::from),
        }),
    }
}

/// An API key as listed: never the key, never its hash.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// `key_…`.
    #[schema(value_type = KeyId)]
    pub id: String,
    /// The organization.
    #[schema(value_type = OrgId)]
    pub org_id: String,
    /// Name.
    pub name: String,
    /// The first 12 characters.
    pub start: String,
    /// `start••••`, for display.
    pub masked: String,
    /// Permissions.
    #[schema(value_type = Vec<Permission>)]
    pub scopes: Vec<String>,
    /// `live` or `test`.
    #[schema(value_type = Environment)]
    pub environment: String,
    /// Caller data.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Creator (`user:…`, `api_key:…`, `cli`).
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
    #[schema(value_type = Option<KeyId>)]
    pub rolled_to: Option<String>,
    /// `active`, `expired` or `revoked`.
    #[schema(value_type = KeyStatus)]
    pub status: &'static str,
    /// The key's own rate limits; `null`: the deployment's default for keys.
    pub rate_limits: Option<Vec<RateLimitSpec>>,
    /// The key's spend budgets; `null`: none (see docs/spend.md).
    pub budgets: Option<Vec<Budget>>,
    /// Its credits; `null`: unlimited uses.
    pub credits: Option<CreditsSpec>,
    /// Model patterns the key may ask for (`*` and `?` are wildcards); `null`: any model the
    /// organization allows.
    pub allowed_models: Option<Vec<String>>,
    /// The key's token windows; `null`: none (the organization's still apply).
    pub token_limits: Option<TokenLimits>,
    /// Chat answers the key may have under way at once; `null`: no bound of its own.
    pub max_parallel: Option<u32>,
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
        budgets: k.budgets.clone(),
        credits: k.credits.as_ref().map(|c| credits_view(c, now)),
        allowed_models: k.chat_limits.allowed_models.clone(),
        token_limits: k.chat_limits.token_limits,
        max_parallel: k.chat_limits.max_parallel,
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

fn created_key(state: &AppState, minted: crate::keys::Minted) -> Success<CreatedKey> {
    created(CreatedKey {
        record: view(&minted.record, state.edge.clock.now_ms()),
        key: minted.key,
    })
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// 1-50 characters.
    #[schema(min_length = 1, max_length = 50)]
    pub name: String,
    /// Permissions, a subset of the creator's; never `keys:write` or `members:write`.
    #[serde(default)]
    #[schema(value_type = Vec<Permission>)]
    pub scopes: Vec<String>,
    /// `live` (default) or `test`.
    #[schema(value_type = Option<Environment>)]
    pub environment: Option<String>,
    /// Days until expiry (1-3650); default 365; `null` for never.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<Option<i64>>,
    /// A JSON object of at most 4 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The key's own windows, replacing the default (all must admit a request).
    #[schema(min_items = 1, max_items = 8)]
    pub rate_limits: Option<Vec<RateLimitSpec>>,
    /// Spend budgets (1-4, at most one per period); absent or `null`: none.
    #[schema(min_items = 1, max_items = 4)]
    pub budgets: Option<Vec<Budget>>,
    /// Credits (uses left, maybe refilled); absent or `null`: unlimited.
    pub credits: Option<CreditsSpec>,
    /// Model patterns the key may ask for in chat, e.g. `["gpt-4o*", "anthropic/*"]` (`*`
    /// matches any run of characters, `?` one); absent or `null`: any model.
    #[schema(max_items = 100)]
    pub allowed_models: Option<Vec<String>>,
    /// The key's token windows for chat; absent or `null`: none.
    pub token_limits: Option<TokenLimits>,
    /// Chat answers the key may have under way at once (1-10000); absent or `null`: no bound.
    #[schema(minimum = 1, maximum = 10000)]
    pub max_parallel: Option<u32>,
}

/// Creates a key (`keys:write`); its scopes must be held by the creator.
#[utoipa::path(post, path = "/v1/orgs/{org}/api-keys", tag = "api-keys",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization")),
    request_body = CreateKeyBody,
    responses((status = 201, description = "The key, shown this once", body = Envelope<CreatedKey>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Success<CreatedKey>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::KeysWrite)?;
    let input = KeyInput {
        name: body.name,
        scopes: body.scopes,
        environment: body.environment,
        expires_in_days: body.expires_in_days,
        metadata: body.metadata,
        rate_limits: body.rate_limits,
        budgets: body.budgets,
        credits: body.credits.map(CreditsInput::from),
        chat_limits: ChatLimits {
            allowed_models: body.allowed_models,
            token_limits: body.token_limits,
            max_parallel: body.max_parallel,
        },
    };
    let minted = state
        .keys
        .create(
            &org,
            input,
            Creator::Member(&a.permissions),
            &audit(&state, &a, &ip),
        )
        .await?;
    Ok(created_key(&state, minted))
}

/// The organization's keys (`keys:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/api-keys", tag = "api-keys",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization")),
    responses((status = 200, description = "The keys", body = Envelope<Vec<KeyView>>),
        errors::Auth, errors::Org))]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<Vec<KeyView>>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::KeysRead)?;
    let keys = state.keys.list(&org).await?;
    let now = state.edge.clock.now_ms();
    Ok(ok(keys.iter().map(|k| view(k, now)).collect()))
}

/// One key (`keys:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/api-keys/{id}", tag = "api-keys",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"), ("id" = KeyId, Path, description = "The key")),
    responses((status = 200, description = "The key", body = Envelope<KeyView>),
        errors::Auth, errors::Org))]
pub async fn get_key(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, id)): Ids<(OrgId, KeyId)>,
) -> Result<Success<KeyView>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::KeysRead)?;
    let k = state.keys.get(&org, &id).await?;
    Ok(ok(view(&k, state.edge.clock.now_ms())))
}

/// Revokes a key (`keys:write`), effective at once on every instance.
#[utoipa::path(delete, path = "/v1/orgs/{org}/api-keys/{id}", tag = "api-keys",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"), ("id" = KeyId, Path, description = "The key")),
    responses((status = 200, description = "The revoked key", body = Envelope<KeyView>),
        errors::Auth, errors::Org,
        (status = 409, description = "`conflict`: the key is already revoked", body = ErrorEnvelope)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, KeyId)>,
) -> Result<Success<KeyView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::KeysWrite)?;
    let k = state
        .keys
        .revoke(&org, &id, &audit(&state, &a, &ip))
        .await?;
    Ok(ok(view(&k, state.edge.clock.now_ms())))
}

/// How long the old key keeps working after a roll.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RollBody {
    /// Seconds (0 to 30 days); default 86400.
    #[schema(minimum = 0, maximum = 2_592_000)]
    pub grace_seconds: Option<i64>,
}

/// Issues a new key with the same settings (`keys:write`); the old one works until the grace
/// period ends. The body is optional.
#[utoipa::path(post, path = "/v1/orgs/{org}/api-keys/{id}/roll", tag = "api-keys",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"), ("id" = KeyId, Path, description = "The key to replace")),
    request_body(content = Option<RollBody>, description = "Optional; an empty body takes the defaults"),
    responses((status = 201, description = "The new key, shown this once", body = Envelope<CreatedKey>),
        errors::Auth, errors::Org,
        (status = 409, description = "`conflict`: the key is revoked, expired or already rolled", body = ErrorEnvelope),
        (status = 422, description = "`validation_failed`: `grace_seconds` out of range", body = ErrorEnvelope)))]
pub async fn roll_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, KeyId)>,
    body: axum::body::Bytes,
) -> Result<Success<CreatedKey>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::KeysWrite)?;
    // The body is optional: an empty one (or JSON `null`) means the defaults.
    let body: RollBody = if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null"
    {
        RollBody::default()
    } else {
        if body.trim_ascii_start().starts_with(b"[") {
            return Err(ApiError::msg(
                Code::InvalidRequest,
                crate::http::extract::NOT_AN_OBJECT,
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::msg(Code::InvalidRequest, format!("the body is not valid: {e}"))
        })?
    };
    let minted = state
        .keys
        .roll(&org, &id, body.grace_seconds, &audit(&state, &a, &ip))
        .await?;
    Ok(created_key(&state, minted))
}

/// Changes to a key; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyBody {
    /// 1-50 characters.
    #[schema(min_length = 1, max_length = 50)]
    pub name: Option<String>,
    /// A JSON object of at most 4 KiB (replaces the old one).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The key's own windows; `null` restores the default.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<Vec<RateLimitSpec>>, min_items = 1, max_items = 8)]
    pub rate_limits: Option<Option<Vec<RateLimitSpec>>>,
    /// Spend budgets (1-4, at most one per period); `null` removes them.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<Vec<Budget>>, min_items = 1, max_items = 4)]
    pub budgets: Option<Option<Vec<Budget>>>,
    /// New credits, set now as the balance (a new period starts); `null`: unlimited.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<CreditsSpec>)]
    pub credits: Option<Option<CreditsSpec>>,
    /// Model patterns the key may ask for; `null`: any model.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub allowed_models: Option<Option<Vec<String>>>,
    /// The key's token windows; `null`: none.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<TokenLimits>)]
    pub token_limits: Option<Option<TokenLimits>>,
    /// Chat answers under way at once (1-10000); `null`: no bound.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub max_parallel: Option<Option<u32>>,
}

/// Renames a key or changes its metadata or rate limits (`keys:write`); applies at once
/// on every instance.
#[utoipa::path(patch, path = "/v1/orgs/{org}/api-keys/{id}", tag = "api-keys",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"), ("id" = KeyId, Path, description = "The key")),
    request_body = UpdateKeyBody,
    responses((status = 200, description = "The changed key", body = Envelope<KeyView>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn update_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, KeyId)>,
    ApiJson(body): ApiJson<UpdateKeyBody>,
) -> Result<Success<KeyView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::KeysWrite)?;
    let update = KeyUpdate {
        name: body.name,
        metadata: body.metadata,
        rate_limits: body.rate_limits,
        budgets: body.budgets,
        credits: body.credits.map(|c| c.map(CreditsInput::from)),
        chat_limits: ChatLimitsChange {
            allowed_models: body.allowed_models,
            token_limits: body.token_limits,
            max_parallel: body.max_parallel,
        },
    };
    let k = state
        .keys
        .update(&org, &id, update, &audit(&state, &a, &ip))
        .await?;
    Ok(ok(view(&k, state.edge.clock.now_ms())))
}

/// A key to check.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The presented key.
    pub key: String,
    /// Credits this verification spends from a key that has credits (0-1000000, default 1;
    /// 0 checks without spending).
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub cost: Option<i64>,
}

/// The verdict on a key, Unkey-style.
#[derive(Serialize, ToSchema)]
pub struct Verdict {
    /// Whether the key may be used now.
    pub valid: bool,
    /// `valid`, or why not (the same value as `reason`).
    #[schema(value_type = VerdictCode)]
    pub code: &'static str,
    /// Why not: `malformed`, `not_found`, `expired`, `revoked`, `rate_limited`,
    /// `usage_exceeded` (its credits are spent or below `cost`).
    #[schema(value_type = Option<VerdictReason>)]
    pub reason: Option<&'static str>,
    /// Credits left after this verification; `null`: unlimited (or the key is not usable).
    pub remaining: Option<i64>,
    /// Key id.
    #[schema(value_type = Option<KeyId>)]
    pub key_id: Option<String>,
    /// Organization id.
    #[schema(value_type = Option<OrgId>)]
    pub org_id: Option<String>,
    /// Permissions.
    #[schema(value_type = Option<Vec<Permission>>)]
    pub scopes: Option<Vec<String>>,
    /// `live`/`test`.
    #[schema(value_type = Option<Environment>)]
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

/// Verifies a key of the caller's own organization; the caller is an API key with
/// `keys:verify`.
#[utoipa::path(post, path = "/v1/keys/verify", tag = "api-keys",
    security(("bearer" = []), ("api_key" = [])),
    request_body = VerifyBody,
    responses((status = 200, description = "The verdict (an unusable key is `valid: false`, not an error)", body = Envelope<Verdict>),
        errors::Auth, errors::Body,
        (status = 403, description = "`forbidden`: the caller is not an API key with `keys:verify` (`details.required`)", body = ErrorEnvelope)))]
pub async fn verify_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Success<Verdict>, ApiError> {
    let org = match &principal {
        Principal::ApiKey { key } => OrgId::from_stored(key.org_id.clone()),
        Principal::User { .. } | Principal::OAuthClient { .. } => {
            return Err(ApiError::msg(
                Code::Forbidden,
                "Verify keys with an API key that has keys:verify.",
            )
            .details(json!({ "required": "keys:verify" })))
        }
    };
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::KeysVerify)?;
    let cost = body.cost.unwrap_or(1);
    if !(0..=MAX_COST).contains(&cost) {
        return Err(ApiError::field(
            "cost",
            &format!("must be between 0 and {MAX_COST}"),
        ));
    }
    let limits = KeyLimits {
        limiter: state.limits.limiter(),
        default: state.config.rates(Policy::ApiKey),
        fail_closed: state.config.fails_closed(Policy::ApiKey),
        policy: Policy::ApiKey.name(),
    };
    let verdict = match state.keys.verify_for(&org, &body.key, cost, limits).await? {
        Verification::Refused(why) => refused(why),
        Verification::Known {
            key: k,
            decision: d,
            remaining,
            exhausted,
        } => {
            let reason = if !d.allowed {
                Some("rate_limited")
            } else if exhausted {
                Some("usage_exceeded")
            } else {
                None
            };
            Verdict {
                valid: reason.is_none(),
                code: reason.unwrap_or("valid"),
                reason,
                remaining,
                ratelimit: d.binding().map(|b| VerdictLimit {
                    limit: b.limit,
                    window_seconds: b.window_seconds,
                    remaining: b.remaining,
                    reset: b.reset_at,
                    retry_after: b.retry_after,
                }),
                key_id: Some(k.id.clone()),
                org_id: Some(k.org_id.clone()),
                scopes: Some(k.scopes.clone()),
                environment: Some(k.environment.clone()),
                expires_at: k.expires_at,
                metadata: Some(k.metadata.clone()),
            }
        }
    };
    Ok(ok(verdict))
}

fn refused(why: KeyFailure) -> Verdict {
    Verdict {
        valid: false,
        code: why.reason().as_str(),
        reason: Some(why.reason().as_str()),
        remaining: None,
        key_id: None,
        org_id: None,
        scopes: None,
        environment: None,
        expires_at: None,
        metadata: None,
        ratelimit: None,
    }
}

/// Paging and filters of the audit log. (`schema_with` drops a field's doc comment from
/// `/openapi.json`, so the two filters' schemas carry their description.)
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many entries (1-200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Entries older than this position (`seq` of the last entry of the previous page).
    pub before: Option<i64>,
    /// Only entries of this action (exactly, one of the actions the log records).
    #[param(schema_with = audit_action_schema)]
    pub action: Option<String>,
    /// Only entries by this actor, as entries name it: `user:{user id}`, `api_key:{key id}`,
    /// `cli` (the command line) or `system` (the delivery worker).
    #[param(schema_with = audit_actor_schema)]
    pub actor: Option<String>,
}

fn audit_action_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(AUDIT_ACTIONS.iter().copied()))
        .description(Some("Only entries of this action (exactly)."))
        .build()
}

fn audit_actor_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(ACTOR_PATTERN))
        .description(Some(
            "Only entries by this actor: `user:{user id}`, `api_key:{key id}`, `cli` or `system`.",
        ))
        .build()
}

/// The organization's audit log, newest first (`audit:read`), by action and actor if asked.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit-log", tag = "audit",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"), AuditQuery),
    responses((status = 200, description = "Entries, newest first", body = Envelope<Vec<AuditEntry>>),
        errors::Auth, errors::Org,
        (status = 422, description = "`validation_failed`: `limit` out of range, `action` not an action the log records or `actor` not in an actor's form (`details.fields`)", body = ErrorEnvelope)))]
pub async fn audit_log(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<Vec<AuditEntry>>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::msg(Code::InvalidRequest, format!("Bad query string: {e}")))?;
    // Access first, as for `limit`: who may not read the log learns nothing from its filters.
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::AuditRead)?;
    let action = q
        .action
        .as_deref()
        .map(AuditAction::parse)
        .transpose()
        .map_err(|problem| ApiError::field("action", problem))?;
    let actor = q
        .actor
        .as_deref()
        .map(AuditActor::parse)
        .transpose()
        .map_err(|problem| ApiError::field("actor", problem))?;
    let got = state
        .keys
        .audit_log(&org, q.limit, q.before, action.as_ref(), actor.as_ref())
        .await?;
    Ok(ok(got))
}
