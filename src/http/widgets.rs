//! `/v1/orgs/{org}/widgets`: an organization's widgets, their secrets and widget tokens.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::domain::permissions::Permission;
use crate::domain::WidgetTokenLimits;
use crate::error::ApiError;
use crate::http::envelope::{created, errors, ok, Envelope, Success};
use crate::http::extract::{ApiJson, ClientIp, Ids, Principal};
use crate::http::orgs::org_access;
use crate::ids::{OrgId, WidgetId};
use crate::orgs::Access;
use crate::store::WidgetRecord;
use crate::widgets::{Actor, NewWidget, WidgetEdit, WidgetError, WidgetSettings, WithSecret};

/// Routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_widgets, create_widget))
        .routes(routes!(get_widget, update_widget, delete_widget))
        .routes(routes!(rotate_secret))
        .routes(routes!(mint_token))
}

impl From<WidgetError> for ApiError {
    fn from(e: WidgetError) -> Self {
        match e {
            WidgetError::NotFound => ApiError::not_found("Widget"),
            WidgetError::Invalid { field, problem } => ApiError::field(&field, &problem),
            WidgetError::Store(e) => e.into(),
        }
    }
}

/// A widget as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct WidgetView {
    /// `wgt_…`.
    #[schema(value_type = WidgetId)]
    pub id: String,
    /// The organization.
    #[schema(value_type = OrgId)]
    pub org_id: String,
    /// Name.
    pub name: String,
    /// Where the widget may run: `scheme://host[:port]` or `https://*.example.com`.
    pub allowed_origins: Vec<String>,
    /// Title, greeting, position and accent colour, as the widget shows them.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// Whether opening a session needs a widget token (`data-key`).
    pub require_token: bool,
    /// Unix ms of the last secret rotation.
    pub secret_rotated_at: i64,
    /// Creator: `user:{id}`, `api_key:{id}` or `cli`.
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// The model the widget's chat asks for; `null`: the deployment's `upstream_model`.
    pub model: Option<String>,
    /// The widget's daily token budgets as they apply (its own, else the configured
    /// defaults `widget_tokens_per_day` and `widget_visitor_tokens_per_day`).
    pub token_limits: WidgetTokenLimits,
    /// The `<script>` tag to paste into a page (`WIDGET_TOKEN`: a token from `…/tokens`).
    pub embed: String,
}

fn embed(state: &AppState, widget: &WidgetRecord, token: Option<&str>) -> String {
    let src = format!(
        "{}/widget.js",
        state.config.public_url.trim_end_matches('/')
    );
    let position = widget.settings["position"]
        .as_str()
        .unwrap_or("bottom-right");
    match (widget.require_token, token) {
        (_, Some(t)) => format!(
            r#"<script src="{src}" data-key="{t}" data-position="{position}" defer></script>"#
        ),
        (true, None) => format!(
            r#"<script src="{src}" data-key="WIDGET_TOKEN" data-position="{position}" defer></script>"#
        ),
        (false, None) => format!(
            r#"<script src="{src}" data-widget-id="{}" data-position="{position}" defer></script>"#,
            widget.id
        ),
    }
}

fn view(state: &AppState, widget: &WidgetRecord) -> WidgetView {
    WidgetView {
        id: widget.id.clone(),
        org_id: widget.org_id.clone(),
        name: widget.name.clone(),
        allowed_origins: widget.allowed_origins.clone(),
        settings: widget.settings.clone(),
        require_token: widget.require_token,
        secret_rotated_at: widget.secret_rotated_at,
        created_by: widget.created_by.clone(),
        created_at: widget.created_at,
        updated_at: widget.updated_at,
        model: widget.model.clone(),
        token_limits: {
            let own = widget.token_limits.unwrap_or_default();
            WidgetTokenLimits {
                tokens_per_day: Some(
                    own.tokens_per_day
                        .unwrap_or(state.config.widget_tokens_per_day),
                ),
                visitor_tokens_per_day: Some(
                    own.visitor_tokens_per_day
                        .unwrap_or(state.config.widget_visitor_tokens_per_day),
                ),
            }
        },
        embed: embed(state, widget, None),
    }
}

/// A widget with its signing secret, shown at creation and rotation only.
#[derive(Serialize, ToSchema)]
pub struct WidgetWithSecret {
    /// `wsec_…`: signs widget tokens, and identified visitors' `user_hash` (hex
    /// HMAC-SHA256 of the user id) on your backend. Shown this once.
    pub secret: String,
    /// The widget.
    #[serde(flatten)]
    pub widget: WidgetView,
}

fn with_secret(state: &AppState, w: WithSecret) -> WidgetWithSecret {
    WidgetWithSecret {
        widget: view(state, &w.widget),
        secret: w.secret,
    }
}

/// The audit log's actor for a caller.
fn actor(access: &Access, ip: &ClientIp) -> Actor {
    Actor {
        actor: access.actor.clone(),
        ip: Some(ip.0.to_string()),
    }
}

/// A widget to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWidgetBody {
    /// 1-100 characters once trimmed.
    pub name: String,
    /// At most 50: `https://app.example.com`, `http://localhost:3000`, `https://*.example.com`.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub allowed_origins: Vec<String>,
    /// The widget's look.
    pub settings: Option<WidgetSettings>,
    /// Whether a widget token is needed to open a session (default true).
    pub require_token: Option<bool>,
    /// The model the widget's chat asks for (default: the deployment's `upstream_model`);
    /// it must be on the organization's `allowed_models`.
    #[schema(min_length = 1, max_length = 200)]
    pub model: Option<String>,
    /// Daily token budgets for the widget and for each visitor (absent: the configured
    /// defaults).
    pub token_limits: Option<WidgetTokenLimits>,
}

/// 422 on `model` when the organization's allow-list does not match it.
async fn check_widget_model(
    state: &AppState,
    org: &OrgId,
    model: Option<&str>,
) -> Result<(), ApiError> {
    let Some(model) = model else { return Ok(()) };
    let limits = state.limits.org_chat_limits(org.as_str()).await?;
    if limits.allows(model) {
        Ok(())
    } else {
        Err(ApiError::field(
            "model",
            "is not on the organization's allowed_models",
        ))
    }
}

/// Creates a widget (`widgets:write`); the answer holds its secret, shown once.
#[utoipa::path(post, path = "/v1/orgs/{org}/widgets", tag = "widgets",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization")),
    request_body = CreateWidgetBody,
    responses((status = 201, description = "The widget and its secret", body = Envelope<WidgetWithSecret>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn create_widget(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<CreateWidgetBody>,
) -> Result<Success<WidgetWithSecret>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WidgetsWrite)?;
    let new = NewWidget {
        name: body.name,
        allowed_origins: body.allowed_origins,
        settings: body.settings,
        require_token: body.require_token,
        model: body.model,
        token_limits: body.token_limits,
    };
    check_widget_model(&state, &org, new.model.as_deref()).await?;
    let made = state.widgets.create(&org, &actor(&a, &ip), new).await?;
    Ok(created(with_secret(&state, made)))
}

/// The organization's widgets (`widgets:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/widgets", tag = "widgets",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization")),
    responses((status = 200, description = "The widgets", body = Envelope<Vec<WidgetView>>),
        errors::Auth, errors::Org))]
pub async fn list_widgets(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<Vec<WidgetView>>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WidgetsRead)?;
    let widgets = state.widgets.list(&org).await?;
    Ok(ok(widgets.iter().map(|w| view(&state, w)).collect()))
}

/// One widget (`widgets:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/widgets/{id}", tag = "widgets",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"),
        ("id" = WidgetId, Path, description = "The widget")),
    responses((status = 200, description = "The widget", body = Envelope<WidgetView>),
        errors::Auth, errors::Org))]
pub async fn get_widget(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, id)): Ids<(OrgId, WidgetId)>,
) -> Result<Success<WidgetView>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WidgetsRead)?;
    Ok(ok(view(&state, &state.widgets.get(&org, &id).await?)))
}

/// Changes to a widget; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWidgetBody {
    /// 1-100 characters once trimmed.
    pub name: Option<String>,
    /// Replaces the allowlist (at most 50).
    #[schema(max_items = 50)]
    pub allowed_origins: Option<Vec<String>>,
    /// Changes only the settings given.
    pub settings: Option<WidgetSettings>,
    /// Whether a widget token is needed.
    pub require_token: Option<bool>,
    /// The model the widget's chat asks for; `null`: the deployment's `upstream_model`. It
    /// must be on the organization's `allowed_models`.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub model: Option<Option<String>>,
    /// Daily token budgets; `null`: the configured defaults.
    #[serde(default, deserialize_with = "crate::http::extract::absent_or_null")]
    #[schema(value_type = Option<WidgetTokenLimits>)]
    pub token_limits: Option<Option<WidgetTokenLimits>>,
}

/// Changes a widget (`widgets:write`); applies at once on every instance.
#[utoipa::path(patch, path = "/v1/orgs/{org}/widgets/{id}", tag = "widgets",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"),
        ("id" = WidgetId, Path, description = "The widget")),
    request_body = UpdateWidgetBody,
    responses((status = 200, description = "The changed widget", body = Envelope<WidgetView>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn update_widget(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, WidgetId)>,
    ApiJson(body): ApiJson<UpdateWidgetBody>,
) -> Result<Success<WidgetView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WidgetsWrite)?;
    let edit = WidgetEdit {
        name: body.name,
        allowed_origins: body.allowed_origins,
        settings: body.settings,
        require_token: body.require_token,
        model: body.model,
        token_limits: body.token_limits,
    };
    check_widget_model(&state, &org, edit.model.as_ref().and_then(Option::as_deref)).await?;
    let widget = state
        .widgets
        .update(&org, &id, &actor(&a, &ip), edit)
        .await?;
    Ok(ok(view(&state, &widget)))
}

/// Deletes a widget (`widgets:write`): its sessions end at once; its visitors' threads stay
/// with the organization.
#[utoipa::path(delete, path = "/v1/orgs/{org}/widgets/{id}", tag = "widgets",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"),
        ("id" = WidgetId, Path, description = "The widget")),
    responses((status = 200, description = "The deleted widget", body = Envelope<WidgetView>),
        errors::Auth, errors::Org))]
pub async fn delete_widget(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, WidgetId)>,
) -> Result<Success<WidgetView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WidgetsWrite)?;
    let widget = state.widgets.delete(&org, &id, &actor(&a, &ip)).await?;
    Ok(ok(view(&state, &widget)))
}

/// Issues a new signing secret (`widgets:write`): every widget token and session of the
/// widget stops working at once; mint new tokens and update your `user_hash` code.
#[utoipa::path(post, path = "/v1/orgs/{org}/widgets/{id}/rotate-secret", tag = "widgets",
    operation_id = "rotate_widget_secret",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"),
        ("id" = WidgetId, Path, description = "The widget")),
    responses((status = 200, description = "The widget and its new secret", body = Envelope<WidgetWithSecret>),
        errors::Auth, errors::Org))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, id)): Ids<(OrgId, WidgetId)>,
) -> Result<Success<WidgetWithSecret>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WidgetsWrite)?;
    let rotated = state
        .widgets
        .rotate_secret(&org, &id, &actor(&a, &ip))
        .await?;
    Ok(ok(with_secret(&state, rotated)))
}

/// A widget token and the tag that embeds it.
#[derive(Serialize, ToSchema)]
pub struct WidgetToken {
    /// base64url(`{org_id}:{widget_id}:{nonce}:{signature}`): public, for `data-key`.
    pub token: String,
    /// The widget.
    #[schema(value_type = WidgetId)]
    pub widget_id: String,
    /// The `<script>` tag with this token.
    pub embed: String,
}

/// Mints a widget token (`widgets:write`). Tokens are not stored: any number may be
/// minted, and rotating the secret revokes them all.
#[utoipa::path(post, path = "/v1/orgs/{org}/widgets/{id}/tokens", tag = "widgets",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    params(("org" = OrgId, Path, description = "The organization"),
        ("id" = WidgetId, Path, description = "The widget")),
    responses((status = 201, description = "A widget token", body = Envelope<WidgetToken>),
        errors::Auth, errors::Org))]
pub async fn mint_token(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, id)): Ids<(OrgId, WidgetId)>,
) -> Result<Success<WidgetToken>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WidgetsWrite)?;
    let (token, widget) = state.widgets.mint_token(&org, &id).await?;
    Ok(created(WidgetToken {
        embed: embed(&state, &widget, Some(&token)),
        widget_id: widget.id,
        token,
    }))
}
