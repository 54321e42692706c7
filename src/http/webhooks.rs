//! `/v1/orgs/{org}/webhooks`: endpoints, secret rotation, test events, the delivery log.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::config::SecretString;
use crate::domain::permissions::Permission;
use crate::error::{ApiError, Code};
use crate::http::envelope::{created, ok, Success};
use crate::http::extract::{ApiJson, ClientIp, Principal};
use crate::http::orgs::{audit, org_access};
use crate::orgs::check_id;
use crate::store::{EndpointChange, StoreError, WebhookAttempt, WebhookEndpoint, EVENT_TYPES};
use crate::webhooks::{signing, ssrf, ROTATION_GRACE_MS};

/// Routes of this file.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/orgs/{org}/webhooks",
            get(list_endpoints).post(create_endpoint),
        )
        .route(
            "/v1/orgs/{org}/webhooks/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route(
            "/v1/orgs/{org}/webhooks/{id}/rotate-secret",
            post(rotate_secret),
        )
        .route("/v1/orgs/{org}/webhooks/{id}/test", post(send_test))
        .route(
            "/v1/orgs/{org}/webhooks/{id}/deliveries",
            get(list_deliveries),
        )
        .route(
            "/v1/orgs/{org}/webhooks/deliveries/{id}/retry",
            post(retry_delivery),
        )
}

const MAX_DESCRIPTION: usize = 200;

/// A webhook endpoint as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    /// `whk_…`.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Free text.
    pub description: String,
    /// The event types it receives; `null`: all.
    pub event_types: Option<Vec<String>>,
    /// Whether it receives events.
    pub enabled: bool,
    /// Why Gatehouse disabled it: `gone` (it answered 410) or `failing` (5 days of failures).
    pub disabled_reason: Option<String>,
    /// Unix ms of the first failure since the last success.
    pub failing_since: Option<i64>,
    /// Until this unix ms the previous secret signs too (after a rotation).
    pub previous_secret_expires_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

fn view(e: &WebhookEndpoint, now: i64) -> EndpointView {
    EndpointView {
        id: e.id.clone(),
        org_id: e.org_id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: e.event_types.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        failing_since: e.failing_since,
        previous_secret_expires_at: e.previous_secret_expires_at.filter(|t| *t > now),
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

/// An endpoint with its signing secret: shown at creation and rotation only.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecret {
    /// `whsec_…`: verify signatures with it (Standard Webhooks).
    pub secret: String,
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: EndpointView,
}

/// An endpoint to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointBody {
    /// `https://…` (or `http://`); private addresses are refused.
    pub url: String,
    /// Event types to receive; absent or `null`: all.
    pub event_types: Option<Vec<String>>,
    /// At most 200 characters.
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// Changes to an endpoint; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointBody {
    /// A new URL (checked as at creation).
    pub url: Option<String>,
    /// New event types; `null`: all.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<Vec<String>>)]
    pub event_types: Option<Option<Vec<String>>>,
    /// At most 200 characters.
    pub description: Option<String>,
    /// Enable (clears a failure streak) or disable (pending deliveries are given up).
    pub enabled: Option<bool>,
}

async fn check_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let u = ssrf::parse(url.trim()).map_err(|why| ApiError::field("url", &why))?;
    ssrf::check(&u, state.webhooks.allow_private)
        .await
        .map_err(|why| ApiError::field("url", &why))?;
    Ok(u.to_string())
}

fn check_types(types: Option<Vec<String>>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(types) = types else {
        return Ok(None);
    };
    if types.is_empty() {
        return Err(ApiError::field(
            "event_types",
            "must name at least one event type, or be null for all",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for t in types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(ApiError::field(
                "event_types",
                &format!(
                    "unknown event type {t:?} (one of {})",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(Some(out))
}

fn check_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::field(
            "description",
            "must be at most 200 characters",
        )),
        other => Ok(other),
    }
}

/// Another organization's endpoint, or a deleted one, is simply not found.
fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("Webhook endpoint"),
        other => other.into(),
    }
}

/// Creates an endpoint (`webhooks:write`); the answer is the only time its secret is shown.
#[utoipa::path(post, path = "/v1/orgs/{org}/webhooks", tag = "webhooks", request_body = CreateEndpointBody,
    responses((status = 201, body = EndpointWithSecret), (status = 403, description = "forbidden"), (status = 422, description = "validation_failed")))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<CreateEndpointBody>,
) -> Result<Success<EndpointWithSecret>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    let event_types = check_types(body.event_types)?;
    let description = check_description(body.description)?.unwrap_or_default();
    let url = check_url(&state, &body.url).await?;
    let now = state.clock.now_ms();
    let secret = signing::new_secret();
    let e = WebhookEndpoint {
        id: format!("whk_{}", uuid::Uuid::new_v4().simple()),
        org_id: org.clone(),
        url,
        description,
        event_types,
        enabled: body.enabled.unwrap_or(true),
        secret: SecretString::from(secret.clone()),
        previous_secret: None,
        previous_secret_expires_at: None,
        failing_since: None,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .create_webhook_endpoint(&e, &audit(&state, &a, &ip))
        .await?;
    Ok(created(EndpointWithSecret {
        secret,
        endpoint: view(&e, now),
    }))
}

/// The organization's endpoints.
#[utoipa::path(get, path = "/v1/orgs/{org}/webhooks", tag = "webhooks", responses((status = 200, body = [EndpointView])))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
) -> Result<Success<Vec<EndpointView>>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WebhooksRead)?;
    let now = state.clock.now_ms();
    let list = state.store.webhook_endpoints(&org).await?;
    Ok(ok(list.iter().map(|e| view(e, now)).collect()))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/orgs/{org}/webhooks/{id}", tag = "webhooks",
    responses((status = 200, body = EndpointView), (status = 404, description = "not_found")))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<EndpointView>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WebhooksRead)?;
    check_id(&id, "whk")?;
    let e = state
        .store
        .webhook_endpoint(&org, &id)
        .await
        .map_err(not_found)?;
    Ok(ok(view(&e, state.clock.now_ms())))
}

/// Changes an endpoint (`webhooks:write`).
#[utoipa::path(patch, path = "/v1/orgs/{org}/webhooks/{id}", tag = "webhooks", request_body = UpdateEndpointBody,
    responses((status = 200, body = EndpointView), (status = 404, description = "not_found"), (status = 422, description = "validation_failed")))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateEndpointBody>,
) -> Result<Success<EndpointView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    check_id(&id, "whk")?;
    let event_types = body.event_types.map(check_types).transpose()?;
    let description = check_description(body.description)?;
    let url = match body.url {
        Some(u) => Some(check_url(&state, &u).await?),
        None => None,
    };
    let change = EndpointChange {
        url,
        description,
        event_types,
        enabled: body.enabled,
    };
    let e = state
        .store
        .update_webhook_endpoint(&org, &id, &change, &audit(&state, &a, &ip))
        .await
        .map_err(not_found)?;
    Ok(ok(view(&e, state.clock.now_ms())))
}

/// Deletes an endpoint with its delivery log (`webhooks:write`).
#[utoipa::path(delete, path = "/v1/orgs/{org}/webhooks/{id}", tag = "webhooks",
    responses((status = 204, description = "Deleted"), (status = 404, description = "not_found")))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    check_id(&id, "whk")?;
    state
        .store
        .delete_webhook_endpoint(&org, &id, &audit(&state, &a, &ip))
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a new signing secret; for 24 hours deliveries carry signatures from both.
#[utoipa::path(post, path = "/v1/orgs/{org}/webhooks/{id}/rotate-secret", tag = "webhooks",
    responses((status = 200, body = EndpointWithSecret), (status = 404, description = "not_found")))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<EndpointWithSecret>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    check_id(&id, "whk")?;
    let now = state.clock.now_ms();
    let secret = signing::new_secret();
    let e = state
        .store
        .rotate_webhook_secret(
            &org,
            &id,
            &SecretString::from(secret.clone()),
            now + ROTATION_GRACE_MS,
            &audit(&state, &a, &ip),
        )
        .await
        .map_err(not_found)?;
    Ok(ok(EndpointWithSecret {
        secret,
        endpoint: view(&e, now),
    }))
}

/// A queued event.
#[derive(Serialize, ToSchema)]
pub struct Queued {
    /// The `webhook-id` it is sent with.
    pub message_id: String,
}

/// Sends a `webhook.test` event to this endpoint (`webhooks:write`).
#[utoipa::path(post, path = "/v1/orgs/{org}/webhooks/{id}/test", tag = "webhooks",
    responses((status = 202, body = Queued), (status = 404, description = "not_found"), (status = 409, description = "The endpoint is disabled")))]
pub async fn send_test(
    State(state): State<AppState>,
    principal: Principal,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<Queued>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    check_id(&id, "whk")?;
    let message_id = state
        .store
        .enqueue_webhook_test(&org, &id, state.clock.now_ms())
        .await
        .map_err(not_found)?;
    Ok(Success(StatusCode::ACCEPTED, Queued { message_id }))
}

/// Paging of the delivery log.
#[derive(Deserialize)]
pub struct DeliveriesQuery {
    /// At most this many attempts (1-200, default 50).
    pub limit: Option<i64>,
}

/// The latest delivery attempts to this endpoint, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org}/webhooks/{id}/deliveries", tag = "webhooks",
    params(("limit" = Option<i64>, Query, description = "1-200, default 50")),
    responses((status = 200, body = [WebhookAttempt]), (status = 404, description = "not_found")))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path((org, id)): Path<(String, String)>,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<Vec<WebhookAttempt>>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::msg(Code::InvalidRequest, format!("Bad query string: {e}")))?;
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WebhooksRead)?;
    check_id(&id, "whk")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 200"));
    }
    let list = state
        .store
        .webhook_attempts(&org, &id, limit)
        .await
        .map_err(not_found)?;
    Ok(ok(list))
}

/// Sends a delivery again now (`webhooks:write`): a failed one is retried, a delivered one
/// replayed, with the same `webhook-id`.
#[utoipa::path(post, path = "/v1/orgs/{org}/webhooks/deliveries/{id}/retry", tag = "webhooks",
    responses((status = 202, description = "Queued"), (status = 404, description = "not_found"), (status = 409, description = "The endpoint is disabled")))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<serde_json::Value>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    check_id(&id, "whd")?;
    state
        .store
        .retry_webhook_delivery(&org, &id, state.clock.now_ms())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("Delivery"),
            other => other.into(),
        })?;
    Ok(Success(
        StatusCode::ACCEPTED,
        json!({ "delivery_id": id, "status": "pending" }),
    ))
}
