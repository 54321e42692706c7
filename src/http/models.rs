//! `GET /v1/models` (what the caller may ask the chat for) and an organization's chat
//! limits, `/v1/orgs/{org}/chat-limits` (allow-list, token windows, concurrency).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::domain::{ChatLimits, ChatLimitsChange, TokenLimits};
use crate::error::{ApiError, Reason};
use crate::http::chat::ChatPrincipal;
use crate::http::envelope::{errors, ok, Envelope, Success};
use crate::http::extract::{ApiJson, ClientIp, Ids, Principal};
use crate::http::orgs::org_access;
use crate::ids::OrgId;
use crate::limits::admission::Asker;

/// Routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(get_chat_limits, update_chat_limits))
}

/// One model, as OpenAI's `/v1/models` lists it.
#[derive(Serialize, ToSchema)]
pub struct ModelEntry {
    /// The model's name, as `model` in a chat.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Always `gatehouse`.
    pub owned_by: &'static str,
    /// Whether a chat without `model` asks for this one (the deployment's `upstream_model`).
    pub default: bool,
}

/// The models the caller may use, OpenAI-style.
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The models, the default first.
    pub data: Vec<ModelEntry>,
}

/// The configured models (`upstream_model`, then `chat_models`) that the calling API key may
/// ask for: those its own `allowed_models` and its organization's both match.
#[utoipa::path(get, path = "/v1/models", tag = "chat",
    security(("api_key" = []), ("api_key" = [], "bearer" = [])),
    responses((status = 200, description = "The models", body = Envelope<ModelList>),
        errors::Auth))]
pub async fn list_models(
    State(state): State<AppState>,
    principal: ChatPrincipal,
) -> Result<Success<ModelList>, ApiError> {
    let (org_id, key) = match principal {
        ChatPrincipal::Key { key, .. } => (key.org_id.clone(), Some(key)),
        // An OAuth client asks as its grant's organization (no key's allow-list).
        ChatPrincipal::OAuth { org_id, .. } => (org_id, None),
        ChatPrincipal::Person(_) => {
            return Err(ApiError::unauthorized(
                Reason::Missing,
                "Listing models needs an API key (X-API-Key or Authorization: Bearer).",
            ))
        }
    };
    let who = Asker {
        org_id: &org_id,
        key: key.as_deref(),
        widget: None,
    };
    let names = state.limits.allowed_models(who).await?;
    let data = names
        .into_iter()
        .map(|id| ModelEntry {
            default: id == state.config.upstream_model,
            id,
            object: "model",
            owned_by: "gatehouse",
        })
        .collect();
    Ok(ok(ModelList {
        object: "list",
        data,
    }))
}

/// An organization's chat limits; `null` fields do not restrict.
#[derive(Serialize, ToSchema)]
pub struct ChatLimitsView {
    /// Model patterns its keys and widgets may ask for (`*` any run of characters, `?` one
    /// character); `null`: any model.
    pub allowed_models: Option<Vec<String>>,
    /// Token windows across all its keys and widgets; `null`: none.
    pub token_limits: Option<TokenLimits>,
    /// Chat answers under way at once across all its keys; `null`: no bound.
    pub max_parallel: Option<u32>,
}

impl From<&ChatLimits> for ChatLimitsView {
    fn from(c: &ChatLimits) -> Self {
        Self {
            allowed_models: c.allowed_models.clone(),
            token_limits: c.token_limits,
            max_parallel: c.max_parallel,
        }
    }
}

/// Changes to an organization's chat limits; absent fields stay, `null` clears.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChatLimitsBody {
    /// Model patterns (at most 100), e.g. `["gpt-4o*", "anthropic/*"]`; `null`: any model.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub allowed_models: Option<Option<Vec<String>>>,
    /// Token windows; `null`: none.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<TokenLimits>)]
    pub token_limits: Option<Option<TokenLimits>>,
    /// Answers under way at once (1-10000); `null`: no bound.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub max_parallel: Option<Option<u32>>,
}

/// An organization's chat limits (any member, or one of its keys).
#[utoipa::path(get, path = "/v1/orgs/{org}/chat-limits", tag = "orgs",
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The chat limits", body = Envelope<ChatLimitsView>),
        errors::Auth, errors::Org))]
pub async fn get_chat_limits(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<ChatLimitsView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    let limits = state.limits.org_chat_limits(a.org_id.as_str()).await?;
    Ok(ok(ChatLimitsView::from(&*limits)))
}

/// Changes an organization's chat limits (owners and admins); applies at once on every
/// instance.
#[utoipa::path(patch, path = "/v1/orgs/{org}/chat-limits", tag = "orgs",
    request_body = UpdateChatLimitsBody,
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The chat limits as changed", body = Envelope<ChatLimitsView>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn update_chat_limits(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<UpdateChatLimitsBody>,
) -> Result<Success<ChatLimitsView>, ApiError> {
    let a = state
        .orgs
        .access(&crate::http::orgs::actor(&principal), &org)
        .await?;
    a.require_user()?;
    a.require_admin()?;
    let change = ChatLimitsChange {
        allowed_models: body.allowed_models,
        token_limits: body.token_limits,
        max_parallel: body.max_parallel,
    }
    .checked()
    .map_err(|e| ApiError::field(e.field, &e.problem))?;
    let limits = state
        .orgs
        .update_chat_limits(&a, &a.by(Some(ip.0.to_string())), change)
        .await?;
    Ok(ok(ChatLimitsView::from(&limits)))
}
