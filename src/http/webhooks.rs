//! `/v1/orgs/{org}/webhooks`: endpoints, secret rotation, test events, the delivery log.
//! The use cases are the webhooks service's ([`crate::webhooks::endpoints`]); this file
//! parses, authorises and shapes. Typed ids are inlined in the schemas: every `Id<K>` has
//! the component name `Id`, so a shared reference would carry one kind's pattern for all.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::domain::permissions::Permission;
use crate::error::{ApiError, Code};
use crate::http::envelope::{created, errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{ApiJson, ClientIp, Ids, Principal};
use crate::http::orgs::org_access;
use crate::ids::{DeliveryId, EndpointId, OrgId, WebhookMessageId};
use crate::orgs::Access;
use crate::store::{StoreError, WebhookAttempt, WebhookEndpoint, EVENT_TYPES};
use crate::webhooks::{Actor, EndpointUpdate, NewEndpoint, WebhookError, WithSecret};

/// Routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(send_test))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::EndpointNotFound => ApiError::not_found("Webhook endpoint"),
            WebhookError::DeliveryNotFound => ApiError::not_found("Delivery"),
            WebhookError::Invalid { field, problem } => ApiError::field(field, &problem),
            WebhookError::Conflict(what) => ApiError::msg(Code::Conflict, what),
            WebhookError::Busy => StoreError::Busy.into(),
            WebhookError::Storage(cause) => ApiError::internal(cause),
        }
    }
}

/// The caller, for the audit log.
fn actor(access: &Access, ip: &ClientIp) -> Actor {
    Actor {
        id: access.actor.clone(),
        ip: Some(ip.0.to_string()),
    }
}

/// An event type an endpoint can receive (a string, one of the listed values).
pub struct EventType;

impl utoipa::PartialSchema for EventType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(EVENT_TYPES))
            .into()
    }
}

impl utoipa::ToSchema for EventType {}

/// Why Gatehouse disabled an endpoint.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// It answered 410 Gone.
    Gone,
    /// Its deliveries failed for 5 days.
    Failing,
}

/// A webhook endpoint as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    /// The endpoint.
    #[schema(inline)]
    pub id: EndpointId,
    /// The organization.
    #[schema(inline)]
    pub org_id: OrgId,
    /// Where events are POSTed.
    pub url: String,
    /// Free text.
    pub description: String,
    /// The event types it receives; `null`: all.
    #[schema(value_type = Option<Vec<EventType>>)]
    pub event_types: Option<Vec<String>>,
    /// Whether it receives events.
    pub enabled: bool,
    /// Why Gatehouse disabled it: `gone` (it answered 410) or `failing` (5 days of failures).
    #[schema(value_type = Option<DisabledReason>)]
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

fn view(e: WebhookEndpoint, now: i64) -> EndpointView {
    EndpointView {
        id: EndpointId::from_stored(e.id),
        org_id: OrgId::from_stored(e.org_id),
        url: e.url,
        description: e.description,
        event_types: e.event_types,
        enabled: e.enabled,
        disabled_reason: e.disabled_reason,
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

fn with_secret(w: WithSecret, now: i64) -> EndpointWithSecret {
    EndpointWithSecret {
        secret: w.secret,
        endpoint: view(w.endpoint, now),
    }
}

/// An endpoint to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointBody {
    /// `https://…` (or `http://`); private addresses are refused.
    pub url: String,
    /// Event types to receive; absent or `null`: all.
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1)]
    pub event_types: Option<Vec<String>>,
    /// At most 200 characters.
    #[schema(max_length = 200)]
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
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1)]
    pub event_types: Option<Option<Vec<String>>>,
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub description: Option<String>,
    /// Enable (clears a failure streak) or disable (pending deliveries are given up).
    pub enabled: Option<bool>,
}

/// Creates an endpoint (`webhooks:write`); the answer is the only time its secret is shown.
#[utoipa::path(post, path = "/v1/orgs/{org}/webhooks", tag = "webhooks",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = inline(OrgId), Path, description = "The organization")),
    request_body = CreateEndpointBody,
    responses(
        (status = 201, description = "The endpoint, with its secret", body = Envelope<EndpointWithSecret>),
        errors::Auth, errors::Org, errors::Body,
    ))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<CreateEndpointBody>,
) -> Result<Success<EndpointWithSecret>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    let new = NewEndpoint {
        url: body.url,
        event_types: body.event_types,
        description: body.description,
        enabled: body.enabled,
    };
    let made = state
        .webhooks
        .create_endpoint(&org, new, &actor(&a, &ip))
        .await?;
    Ok(created(with_secret(made, state.edge.clock.now_ms())))
}

/// The organization's endpoints, oldest first (`webhooks:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/webhooks", tag = "webhooks",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = inline(OrgId), Path, description = "The organization")),
    responses(
        (status = 200, description = "The endpoints", body = Envelope<Vec<EndpointView>>),
        errors::Auth, errors::Org,
    ))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<Vec<EndpointView>>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WebhooksRead)?;
    let list = state.webhooks.endpoints(&org).await?;
    let now = state.edge.clock.now_ms();
    Ok(ok(list.into_iter().map(|e| view(e, now)).collect()))
}

/// One endpoint (`webhooks:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/webhooks/{id}", tag = "webhooks",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(
        ("org" = inline(OrgId), Path, description = "The organization"),
        ("id" = inline(EndpointId), Path, description = "The endpoint"),
    ),
    responses(
        (status = 200, description = "The endpoint", body = Envelope<EndpointView>),
        errors::Auth, errors::Org,
    ))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, id)): Ids<(OrgId, EndpointId)>,
) -> Result<Success<EndpointView>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WebhooksRead)?;
    let e = state.webhooks.endpoint(&org, &id).await?;
    Ok(ok(view(e, state.edge.clock.now_ms())))
}

/// Changes an endpoint (`webhooks:write`).
#[utoipa::path(patch, path = "/v1/orgs/{org}/webhooks/{id}", tag = "webhooks",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(
        ("org" = inline(OrgId), Path, description = "The organization"),
        ("id" = inline(EndpointId), Path, description = "The endpoint"),
    ),
    request_body = UpdateEndpointBody,
    responses(
        (status = 200, description = "The endpoint as changed", body = Envelope<EndpointView>),
        errors::Auth, errors::Org, errors::Body,
    ))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, EndpointId)>,
    ApiJson(body): ApiJson<UpdateEndpointBody>,
) -> Result<Success<EndpointView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    let update = EndpointUpdate {
        url: body.url,
        event_types: body.event_types,
        description: body.description,
        enabled: body.enabled,
    };
    let e = state
        .webhooks
        .update_endpoint(&org, &id, update, &actor(&a, &ip))
        .await?;
    Ok(ok(view(e, state.edge.clock.now_ms())))
}

/// Deletes an endpoint with its delivery log (`webhooks:write`).
#[utoipa::path(delete, path = "/v1/orgs/{org}/webhooks/{id}", tag = "webhooks",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(
        ("org" = inline(OrgId), Path, description = "The organization"),
        ("id" = inline(EndpointId), Path, description = "The endpoint"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        errors::Auth, errors::Org,
    ))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, EndpointId)>,
) -> Result<StatusCode, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    state
        .webhooks
        .delete_endpoint(&org, &id, &actor(&a, &ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a new signing secret (`webhooks:write`); for 24 hours deliveries carry signatures
/// from both.
#[utoipa::path(post, path = "/v1/orgs/{org}/webhooks/{id}/rotate-secret", tag = "webhooks",
    operation_id = "rotate_endpoint_secret",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(
        ("org" = inline(OrgId), Path, description = "The organization"),
        ("id" = inline(EndpointId), Path, description = "The endpoint"),
    ),
    responses(
        (status = 200, description = "The endpoint, with its new secret", body = Envelope<EndpointWithSecret>),
        errors::Auth, errors::Org,
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, EndpointId)>,
) -> Result<Success<EndpointWithSecret>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WebhooksWrite)?;
    let rotated = state
        .webhooks
        .rotate_secret(&org, &id, &actor(&a, &ip))
        .await?;
    Ok(ok(with_secret(rotated, state.edge.clock.now_ms())))
}

/// A queued event.
#[derive(Serialize, ToSchema)]
pub struct Queued {
    /// The `webhook-id` it is sent with.
    #[schema(inline)]
    pub message_id: WebhookMessageId,
}

/// Sends a `webhook.test` event to this endpoint (`webhooks:write`).
#[utoipa::path(post, path = "/v1/orgs/{org}/webhooks/{id}/test", tag = "webhooks",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(
        ("org" = inline(OrgId), Path, description = "The organization"),
        ("id" = inline(EndpointId), Path, description = "The endpoint"),
    ),
    responses(
        (status = 202, description = "The event is queued", body = Envelope<Queued>),
        errors::Auth, errors::Org, errors::Conflict,
    ))]
pub async fn send_test(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, id)): Ids<(OrgId, EndpointId)>,
) -> Result<Success<Queued>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WebhooksWrite)?;
    let message_id = state.webhooks.send_test(&org, &id).await?;
    Ok(Success(StatusCode::ACCEPTED, Queued { message_id }))
}

/// Paging of the delivery log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// At most this many attempts (1-200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// The latest delivery attempts to this endpoint, newest first (`webhooks:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/webhooks/{id}/deliveries", tag = "webhooks",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(
        ("org" = inline(OrgId), Path, description = "The organization"),
        ("id" = inline(EndpointId), Path, description = "The endpoint"),
        DeliveriesQuery,
    ),
    responses(
        (status = 200, description = "The attempts", body = Envelope<Vec<WebhookAttempt>>),
        errors::Auth, errors::Org,
        (status = 422, description = "`validation_failed`: `limit` is out of range", body = ErrorEnvelope),
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, id)): Ids<(OrgId, EndpointId)>,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<Vec<WebhookAttempt>>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::msg(Code::InvalidRequest, format!("Bad query string: {e}")))?;
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WebhooksRead)?;
    Ok(ok(state.webhooks.attempts(&org, &id, q.limit).await?))
}

/// A delivery's state after a retry.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryStatus {
    /// Waiting for the worker.
    Pending,
}

/// A delivery queued again.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    /// The delivery.
    #[schema(inline)]
    pub delivery_id: DeliveryId,
    /// Always `pending`.
    pub status: RetryStatus,
}

/// Sends a delivery again now (`webhooks:write`): a failed one is retried, a delivered one
/// replayed, with the same `webhook-id`.
#[utoipa::path(post, path = "/v1/orgs/{org}/webhooks/deliveries/{id}/retry", tag = "webhooks",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(
        ("org" = inline(OrgId), Path, description = "The organization"),
        ("id" = inline(DeliveryId), Path, description = "The delivery"),
    ),
    responses(
        (status = 202, description = "The delivery is queued", body = Envelope<Retried>),
        errors::Auth, errors::Org, errors::Conflict,
    ))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, id)): Ids<(OrgId, DeliveryId)>,
) -> Result<Success<Retried>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WebhooksWrite)?;
    state.webhooks.retry_delivery(&org, &id).await?;
    Ok(Success(
        StatusCode::ACCEPTED,
        Retried {
            delivery_id: id,
            status: RetryStatus::Pending,
        },
    ))
}
