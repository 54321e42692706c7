//! `/v1/orgs/{org}/widgets`: an organization's widgets, their secrets and widget tokens.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::widget::{self as w, AllowedOrigin};
use crate::domain::permissions::Permission;
use crate::error::ApiError;
use crate::http::envelope::{created, ok, Success};
use crate::http::extract::{ApiJson, ClientIp, Principal};
use crate::http::orgs::{audit, org_access};
use crate::orgs::{check_id, check_name};
use crate::store::{StoreError, WidgetChange, WidgetRecord};

/// Routes of this file.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/orgs/{org}/widgets",
            get(list_widgets).post(create_widget),
        )
        .route(
            "/v1/orgs/{org}/widgets/{id}",
            get(get_widget).patch(update_widget).delete(delete_widget),
        )
        .route(
            "/v1/orgs/{org}/widgets/{id}/rotate-secret",
            post(rotate_secret),
        )
        .route("/v1/orgs/{org}/widgets/{id}/tokens", post(mint_token))
}

const MAX_ORIGINS: usize = 50;

/// The public look of a widget; every field optional on input (defaults apply).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WidgetSettings {
    /// The panel's title (1-80 characters); default "Chat with us".
    pub title: Option<String>,
    /// The first message a visitor sees (at most 500 characters); default "Hi! How can we help?".
    pub greeting: Option<String>,
    /// `bottom-right` (default) or `bottom-left`.
    pub position: Option<String>,
    /// `#rrggbb`; default `#2563eb`.
    pub accent_color: Option<String>,
}

/// Checks settings and lays them over `base` (the stored ones, or the defaults).
fn merge_settings(base: &Value, given: WidgetSettings) -> Result<Value, ApiError> {
    let mut out: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
    if let Some(t) = given.title {
        out.insert("title".into(), json!(check_name("settings.title", &t, 80)?));
    }
    if let Some(g) = given.greeting {
        if g.chars().count() > 500 || g.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ApiError::field(
                "settings.greeting",
                "must be at most 500 characters of text",
            ));
        }
        out.insert("greeting".into(), json!(g.trim()));
    }
    if let Some(p) = given.position {
        if p != "bottom-right" && p != "bottom-left" {
            return Err(ApiError::field(
                "settings.position",
                "must be bottom-right or bottom-left",
            ));
        }
        out.insert("position".into(), json!(p));
    }
    if let Some(c) = given.accent_color {
        let ok =
            c.len() == 7 && c.starts_with('#') && c.bytes().skip(1).all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(ApiError::field(
                "settings.accent_color",
                "must be a colour like #2563eb",
            ));
        }
        out.insert("accent_color".into(), json!(c.to_ascii_lowercase()));
    }
    Ok(Value::Object(out))
}

fn default_settings() -> Value {
    json!({
        "title": "Chat with us",
        "greeting": "Hi! How can we help?",
        "position": "bottom-right",
        "accent_color": "#2563eb",
    })
}

/// Parses, normalises and de-duplicates an allowlist.
fn check_origins(list: &[String]) -> Result<Vec<String>, ApiError> {
    if list.len() > MAX_ORIGINS {
        return Err(ApiError::field(
            "allowed_origins",
            "must hold at most 50 origins",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, o) in list.iter().enumerate() {
        let parsed = AllowedOrigin::parse(o)
            .map_err(|why| ApiError::field(&format!("allowed_origins[{i}]"), why))?
            .as_string();
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// A widget as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct WidgetView {
    /// `wgt_…`.
    pub id: String,
    /// The organization.
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
    /// Creator.
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
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

/// A widget to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWidgetBody {
    /// 1-100 characters.
    pub name: String,
    /// At most 50: `https://app.example.com`, `http://localhost:3000`, `https://*.example.com`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The widget's look.
    pub settings: Option<WidgetSettings>,
    /// Whether a widget token is needed to open a session (default true).
    pub require_token: Option<bool>,
}

/// Creates a widget (`widgets:write`); the answer holds its secret, shown once.
#[utoipa::path(post, path = "/v1/orgs/{org}/widgets", tag = "widgets", request_body = CreateWidgetBody,
    responses((status = 201, body = WidgetWithSecret), (status = 403, description = "forbidden"), (status = 422, description = "validation_failed")))]
pub async fn create_widget(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<CreateWidgetBody>,
) -> Result<Success<WidgetWithSecret>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WidgetsWrite)?;
    let name = check_name("name", &body.name, 100)?;
    let allowed_origins = check_origins(&body.allowed_origins)?;
    let settings = merge_settings(&default_settings(), body.settings.unwrap_or_default())?;
    let now = state.clock.now_ms();
    let widget = WidgetRecord {
        id: format!("wgt_{}", uuid::Uuid::new_v4().simple()),
        org_id: org.clone(),
        name,
        allowed_origins,
        settings,
        require_token: body.require_token.unwrap_or(true),
        secret: w::new_secret(),
        secret_rotated_at: now,
        created_by: a.actor.clone(),
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .create_widget(&widget, &audit(&state, &a, &ip))
        .await?;
    Ok(created(WidgetWithSecret {
        secret: widget.secret.clone(),
        widget: view(&state, &widget),
    }))
}

/// The organization's widgets.
#[utoipa::path(get, path = "/v1/orgs/{org}/widgets", tag = "widgets", responses((status = 200, body = [WidgetView])))]
pub async fn list_widgets(
    State(state): State<AppState>,
    principal: Principal,
    Path(org): Path<String>,
) -> Result<Success<Vec<WidgetView>>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WidgetsRead)?;
    Ok(ok(state
        .store
        .widgets(&org)
        .await?
        .iter()
        .map(|w| view(&state, w))
        .collect()))
}

async fn find(state: &AppState, org: &str, id: &str) -> Result<WidgetRecord, ApiError> {
    check_id(id, "wgt")?;
    state
        .store
        .widget(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Widget"))
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("Widget"),
        other => other.into(),
    }
}

/// One widget.
#[utoipa::path(get, path = "/v1/orgs/{org}/widgets/{id}", tag = "widgets",
    responses((status = 200, body = WidgetView), (status = 404, description = "not_found")))]
pub async fn get_widget(
    State(state): State<AppState>,
    principal: Principal,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<WidgetView>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WidgetsRead)?;
    Ok(ok(view(&state, &find(&state, &org, &id).await?)))
}

/// Changes to a widget; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWidgetBody {
    /// 1-100 characters.
    pub name: Option<String>,
    /// Replaces the allowlist.
    pub allowed_origins: Option<Vec<String>>,
    /// Changes only the settings given.
    pub settings: Option<WidgetSettings>,
    /// Whether a widget token is needed.
    pub require_token: Option<bool>,
}

/// Changes a widget (`widgets:write`); applies at once on every instance.
#[utoipa::path(patch, path = "/v1/orgs/{org}/widgets/{id}", tag = "widgets", request_body = UpdateWidgetBody,
    responses((status = 200, body = WidgetView), (status = 404, description = "not_found"), (status = 422, description = "validation_failed")))]
pub async fn update_widget(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateWidgetBody>,
) -> Result<Success<WidgetView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WidgetsWrite)?;
    let current = find(&state, &org, &id).await?;
    let change = WidgetChange {
        name: body.name.map(|n| check_name("name", &n, 100)).transpose()?,
        allowed_origins: body
            .allowed_origins
            .map(|o| check_origins(&o))
            .transpose()?,
        settings: body
            .settings
            .map(|s| merge_settings(&current.settings, s))
            .transpose()?,
        require_token: body.require_token,
    };
    let widget = state
        .store
        .update_widget(&org, &id, &change, &audit(&state, &a, &ip))
        .await
        .map_err(not_found)?;
    state
        .invalidate(crate::fanout::Invalidation::Widget(id))
        .await;
    Ok(ok(view(&state, &widget)))
}

/// Deletes a widget: its sessions end at once; its visitors' threads stay with the
/// organization.
#[utoipa::path(delete, path = "/v1/orgs/{org}/widgets/{id}", tag = "widgets",
    responses((status = 200, body = WidgetView), (status = 404, description = "not_found")))]
pub async fn delete_widget(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<WidgetView>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WidgetsWrite)?;
    check_id(&id, "wgt")?;
    let widget = state
        .store
        .delete_widget(&org, &id, &audit(&state, &a, &ip))
        .await
        .map_err(not_found)?;
    state
        .invalidate(crate::fanout::Invalidation::Widget(id))
        .await;
    Ok(ok(view(&state, &widget)))
}

/// Issues a new signing secret (`widgets:write`): every widget token and session of the
/// widget stops working at once; mint new tokens and update your `user_hash` code.
#[utoipa::path(post, path = "/v1/orgs/{org}/widgets/{id}/rotate-secret", tag = "widgets",
    responses((status = 200, body = WidgetWithSecret), (status = 404, description = "not_found")))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<WidgetWithSecret>, ApiError> {
    let a = org_access(&state, &principal, &org).await?;
    a.require(Permission::WidgetsWrite)?;
    check_id(&id, "wgt")?;
    let secret = w::new_secret();
    let widget = state
        .store
        .rotate_widget_secret(&org, &id, &secret, &audit(&state, &a, &ip))
        .await
        .map_err(not_found)?;
    state
        .invalidate(crate::fanout::Invalidation::Widget(id))
        .await;
    Ok(ok(WidgetWithSecret {
        secret,
        widget: view(&state, &widget),
    }))
}

/// A widget token and the tag that embeds it.
#[derive(Serialize, ToSchema)]
pub struct WidgetToken {
    /// base64url(`{org_id}:{widget_id}:{nonce}:{signature}`): public, for `data-key`.
    pub token: String,
    /// The widget.
    pub widget_id: String,
    /// The `<script>` tag with this token.
    pub embed: String,
}

/// Mints a widget token (`widgets:write`). Tokens are not stored: any number may be
/// minted, and rotating the secret revokes them all.
#[utoipa::path(post, path = "/v1/orgs/{org}/widgets/{id}/tokens", tag = "widgets",
    responses((status = 201, body = WidgetToken), (status = 404, description = "not_found")))]
pub async fn mint_token(
    State(state): State<AppState>,
    principal: Principal,
    Path((org, id)): Path<(String, String)>,
) -> Result<Success<WidgetToken>, ApiError> {
    org_access(&state, &principal, &org)
        .await?
        .require(Permission::WidgetsWrite)?;
    let widget = find(&state, &org, &id).await?;
    let token = w::mint_token(&widget.secret, &widget.org_id, &widget.id);
    Ok(created(WidgetToken {
        embed: embed(&state, &widget, Some(&token)),
        widget_id: widget.id,
        token,
    }))
}

/// The token for the command line (`gatehouse widget token`).
pub async fn mint_for_cli(state: &AppState, org: &str, id: &str) -> Result<String, ApiError> {
    check_id(org, "org")?;
    let widget = find(state, org, id).await?;
    Ok(w::mint_token(&widget.secret, &widget.org_id, &widget.id))
}
