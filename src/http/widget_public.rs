//! `/v1/widgets/{id}/…`: the public widget flow a visitor's browser runs, and `/widget.js`.
//!
//! The flow is config, then session (Origin and widget token), then signed calls (session
//! token, HMAC signature, timestamp and a single-use nonce, Origin re-checked). CORS is per
//! widget: only an allowed origin is reflected, so a copied tag on another site cannot read
//! a single answer.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, options};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::chat::Caller;
use crate::config::Policy;
use crate::error::{ApiError, Code};
use crate::http::chat::{answer, check_chat_body, ChatBody};
use crate::http::envelope::{created, errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{bearer, is_json, parse_json, read_body, ClientIp, Ids};
use crate::http::limits;
use crate::ids::WidgetId;
use crate::ratelimit::Request as LimitRequest;
use crate::store::Message;
use crate::widgets::{check_identity, OpenRequest, Rejection, Session, SignedParts, Widgets};

/// The widget script, embedded in the binary.
static WIDGET_JS: &[u8] = include_bytes!("../../assets/widget.js");

/// Headers a signed call carries.
const SIGNED_HEADERS: &str =
    "authorization, content-type, x-gatehouse-timestamp, x-gatehouse-nonce, x-gatehouse-signature";

/// Routes of this file (absolute paths: they sit beside `/v1`, with their own CORS).
/// Preflights and `/widget.js` are plain routes, outside the API description.
pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    let mut doc = utoipa::openapi::OpenApi::default();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "widget_session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A widget session token (POST /v1/widgets/{id}/session); the request is \
                         also signed with the session's signing secret (X-Gatehouse-Timestamp, \
                         X-Gatehouse-Nonce, X-Gatehouse-Signature).",
                    ))
                    .build(),
            ),
        );
    let public = OpenApiRouter::with_openapi(doc)
        .routes(routes!(config))
        .route("/v1/widgets/{id}/config", options(preflight))
        .routes(routes!(open_session))
        .route("/v1/widgets/{id}/session", options(preflight))
        .routes(routes!(renew_session))
        .route("/v1/widgets/{id}/session/renew", options(preflight))
        .routes(routes!(chat))
        .route("/v1/widgets/{id}/chat", options(preflight))
        .routes(routes!(history))
        .route("/v1/widgets/{id}/history", options(preflight))
        .route_layer(middleware::from_fn_with_state(state, cors));
    public.route("/widget.js", get(widget_js))
}

/// The widget id in `/v1/widgets/{id}/…`.
fn widget_id(path: &str) -> &str {
    path.split('/').nth(3).unwrap_or("")
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let (code, message) = match r {
            Rejection::NotFound => return ApiError::not_found("Widget"),
            Rejection::Unavailable => {
                return ApiError::unavailable(1, "Storage is unavailable; retry shortly.")
            }
            Rejection::OriginNotAllowed => (
                Code::Forbidden,
                "This page's origin is not allowed to use this widget.",
            ),
            Rejection::BadToken => (Code::Unauthorized, "The widget token is not valid."),
            Rejection::BadUserHash => (Code::Unauthorized, "user_hash does not match user_id."),
            Rejection::MissingSession => (
                Code::Unauthorized,
                "A widget session token is required (Authorization: Bearer).",
            ),
            Rejection::BadSession => (Code::Unauthorized, "The widget session token is not valid."),
            Rejection::SessionExpired => (
                Code::Unauthorized,
                "The widget session has ended; open a new one.",
            ),
            Rejection::BadSignature => (
                Code::Unauthorized,
                "The request signature is missing or does not match.",
            ),
            Rejection::StaleTimestamp => (
                Code::Unauthorized,
                "The request timestamp is more than 5 minutes from the server's clock.",
            ),
            Rejection::Replayed => (Code::Unauthorized, "This nonce was already used."),
        };
        ApiError::msg(code, message).reason(r.reason())
    }
}

/// Per-widget CORS: the allowed origin is reflected (never `*`), preflights answered; a
/// preflight from any other origin is refused.
async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let id = WidgetId::parse(widget_id(req.uri().path())).ok();
    let allowed = match (&origin, &id) {
        (Some(o), Some(id)) => state
            .widgets
            .widget(id)
            .await
            .ok()
            .and_then(|w| Widgets::allowed_origin(&w, Some(o)))
            .map(|_| o.clone()),
        _ => None,
    };
    let preflight = req.method() == Method::OPTIONS;
    let mut res = if preflight {
        match allowed {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => {
                state
                    .edge
                    .metrics
                    .widget_rejection(Rejection::OriginNotAllowed.reason().as_str());
                ApiError::from(Rejection::OriginNotAllowed).into_response()
            }
        }
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(value) = allowed.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(SIGNED_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        } else {
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(
                    "x-request-id, retry-after, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset",
                ),
            );
        }
    }
    res
}

/// Preflights are answered by the CORS layer; this is what it decorates.
async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Counts a public call against the per-IP and per-widget windows, and the session's.
async fn limit(
    state: &AppState,
    widget_id: &str,
    session: Option<&str>,
    ip: &ClientIp,
) -> Result<(), ApiError> {
    let mut req = LimitRequest {
        tag: format!("widget:{widget_id}"),
        windows: Vec::new(),
        fail_closed: [Policy::WidgetSession, Policy::WidgetIp, Policy::Widget]
            .iter()
            .any(|p| state.config.fails_closed(*p)),
    };
    if let Some(sid) = session {
        req.add(
            Policy::WidgetSession.name(),
            sid,
            state.config.rates(Policy::WidgetSession),
        );
    }
    req.add(
        Policy::WidgetIp.name(),
        &ip.key(),
        state.config.rates(Policy::WidgetIp),
    );
    req.add(
        Policy::Widget.name(),
        widget_id,
        state.config.rates(Policy::Widget),
    );
    let d = state
        .limits
        .check(&req)
        .await
        .map_err(|_| limits::unavailable())?;
    if d.allowed {
        Ok(())
    } else {
        Err(limits::refused(&d))
    }
}

/// What a page may know about a widget.
#[derive(Serialize, ToSchema)]
pub struct PublicConfig {
    /// `wgt_…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Whether `POST …/session` needs a widget token.
    pub require_token: bool,
    /// Title, greeting, position, accent colour.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
}

/// The widget's public settings (403 unless `Origin` is allowed).
#[utoipa::path(get, path = "/v1/widgets/{id}/config", tag = "widget",
    security(()),
    params(("id" = WidgetId, Path, description = "The widget"),
        ("Origin" = String, Header, description = "The page's origin; must be on the widget's allowlist")),
    responses((status = 200, description = "The widget's public settings", body = Envelope<PublicConfig>),
        (status = 400, body = ErrorEnvelope, description = "`invalid_request`: a malformed widget id (`details.reason`: `malformed_id`)"),
        (status = 403, body = ErrorEnvelope, description = "`forbidden`: the origin is not allowed (`details.reason`: `origin_not_allowed`)"),
        (status = 404, body = ErrorEnvelope, description = "`not_found`: no such widget"),
        (status = 429, body = ErrorEnvelope, description = "`rate_limited` (`Retry-After`)"),
        (status = 503, body = ErrorEnvelope, description = "`service_unavailable`: storage or the limiter is unavailable (`Retry-After`)")))]
pub async fn config(
    State(state): State<AppState>,
    ip: ClientIp,
    Ids(id): Ids<WidgetId>,
    headers: HeaderMap,
) -> Result<Success<PublicConfig>, ApiError> {
    let (widget, _) = state.widgets.for_origin(&id, origin(&headers)).await?;
    limit(&state, &id, None, &ip).await?;
    Ok(ok(PublicConfig {
        id: widget.id.clone(),
        name: widget.name.clone(),
        require_token: widget.require_token,
        settings: widget.settings.clone(),
    }))
}

/// Opening a session.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// The widget token (`data-key`); required unless the widget has `require_token: false`.
    pub token: Option<String>,
    /// The visitor id from an earlier session (`vis_…`), so their conversation continues.
    #[schema(pattern = "^vis_[0-9a-f]{32}$")]
    pub visitor_id: Option<String>,
    /// An identified visitor: your user id (1-128 characters) …
    pub user_id: Option<String>,
    /// … and hex HMAC-SHA256(widget secret, user_id), computed on your backend.
    pub user_hash: Option<String>,
}

/// A widget session.
#[derive(Serialize, ToSchema)]
pub struct SessionAnswer {
    /// `Authorization: Bearer` on signed calls.
    pub session_token: String,
    /// The HMAC key for `X-Gatehouse-Signature` (its UTF-8 bytes, as given).
    pub signing_secret: String,
    /// Unix ms.
    pub expires_at: i64,
    /// Keep it (e.g. in localStorage) and send it next time.
    pub visitor_id: String,
}

impl From<crate::widgets::Opened> for SessionAnswer {
    fn from(o: crate::widgets::Opened) -> Self {
        Self {
            session_token: o.session_token,
            signing_secret: o.signing_secret,
            expires_at: o.expires_at,
            visitor_id: o.visitor_id,
        }
    }
}

/// Opens a widget session: `Origin` checked, the widget token checked when required. An
/// empty body is an empty request (a widget that needs no token).
#[utoipa::path(post, path = "/v1/widgets/{id}/session", tag = "widget",
    security(()),
    params(("id" = WidgetId, Path, description = "The widget"),
        ("Origin" = String, Header, description = "The page's origin; must be on the widget's allowlist")),
    request_body = SessionBody,
    responses((status = 201, description = "A session", body = Envelope<SessionAnswer>),
        errors::Body,
        (status = 401, body = ErrorEnvelope, description = "`unauthorized` (`details.reason`: `bad_token` or `bad_user_hash`)"),
        (status = 403, body = ErrorEnvelope, description = "`forbidden`: the origin is not allowed (`details.reason`: `origin_not_allowed`)"),
        (status = 404, body = ErrorEnvelope, description = "`not_found`: no such widget"),
        (status = 429, body = ErrorEnvelope, description = "`rate_limited`: a rate limit or the failure budget refused the request (`Retry-After`)"),
        (status = 503, body = ErrorEnvelope, description = "`service_unavailable`: storage or the limiter is unavailable (`Retry-After`)")))]
pub async fn open_session(
    State(state): State<AppState>,
    ip: ClientIp,
    Ids(id): Ids<WidgetId>,
    req: Request,
) -> Result<Success<SessionAnswer>, ApiError> {
    let headers = req.headers().clone();
    let json = is_json(&headers);
    let raw = read_body(req, &state).await?;
    let body: SessionBody = if raw.iter().all(u8::is_ascii_whitespace) {
        SessionBody::default()
    } else {
        parse_json(json, &raw)?
    };
    let user = check_identity(
        body.visitor_id.as_deref(),
        body.user_id.as_deref(),
        body.user_hash.as_deref(),
    )?;
    // The origin first: a page elsewhere learns nothing, and spends nothing of the widget's limits.
    state.widgets.for_origin(&id, origin(&headers)).await?;
    limit(&state, &id, None, &ip).await?;
    crate::http::failures::admit(&state, &ip).await?;
    let opened = state
        .widgets
        .open(
            &id,
            OpenRequest {
                origin: origin(&headers),
                token: body.token.as_deref(),
                visitor_id: body.visitor_id.as_deref(),
                user,
            },
        )
        .await;
    if let Err(r) = &opened {
        if r.is_failed_credential() {
            crate::http::failures::spend(&state, &ip).await;
        }
    }
    Ok(created(opened?.into()))
}

/// A verified signed call: the session and the raw body it signed.
pub struct SignedCall {
    /// The widget in the path.
    pub id: WidgetId,
    /// The session.
    pub session: Session,
    /// The exact bytes that were signed.
    pub body: Bytes,
    /// Whether they claim to be JSON.
    pub json: bool,
}

impl FromRequest<AppState> for SignedCall {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let ip = ClientIp::from_request_parts(&mut parts, state)
            .await
            .unwrap_or(ClientIp(std::net::IpAddr::from([127, 0, 0, 1])));
        let Ids(id) = Ids::<WidgetId>::from_request_parts(&mut parts, state).await?;
        let path = parts.uri.path().to_string();
        let h = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let raw = read_body(Request::from_parts(parts.clone(), body), state).await?;
        crate::http::failures::admit(state, &ip).await?;
        let verified = state
            .widgets
            .verify(
                &id,
                SignedParts {
                    origin: origin(&parts.headers),
                    session_token: bearer(&parts),
                    timestamp: h("x-gatehouse-timestamp"),
                    nonce: h("x-gatehouse-nonce"),
                    signature: h("x-gatehouse-signature"),
                    method: parts.method.as_str(),
                    path: &path,
                    body: &raw,
                },
            )
            .await;
        if let Err(r) = &verified {
            if r.is_failed_credential() {
                crate::http::failures::spend(state, &ip).await;
            }
        }
        let session = verified?;
        limit(state, &id, Some(&session.claims.sid), &ip).await?;
        Ok(SignedCall {
            id,
            session,
            body: raw,
            json: is_json(&parts.headers),
        })
    }
}

/// The headers of every request signed with a widget session.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by the `SignedCall` extractor; this type only describes them.
struct SignedHeaders {
    /// The session's origin.
    #[param(rename = "Origin")]
    origin: String,
    /// Unix seconds, within 5 minutes of the server's clock.
    #[param(rename = "X-Gatehouse-Timestamp")]
    timestamp: String,
    /// Single-use within the session.
    #[param(rename = "X-Gatehouse-Nonce")]
    nonce: String,
    /// Hex HMAC-SHA256 of the request with the session's signing secret.
    #[param(rename = "X-Gatehouse-Signature")]
    signature: String,
}

/// Renews a session before it ends (signed with the current one; the body is ignored, `{}`
/// by convention).
#[utoipa::path(post, path = "/v1/widgets/{id}/session/renew", tag = "widget",
    security(("widget_session" = [])),
    params(("id" = WidgetId, Path, description = "The widget"),
        SignedHeaders),
    responses((status = 201, description = "A fresh session for the same visitor and origin", body = Envelope<SessionAnswer>),
        (status = 400, body = ErrorEnvelope, description = "`invalid_request`: a malformed widget id (`details.reason`: `malformed_id`)"),
        (status = 404, body = ErrorEnvelope, description = "`not_found`: no such widget"),
        errors::WidgetSession))]
pub async fn renew_session(
    State(state): State<AppState>,
    call: SignedCall,
) -> Result<Success<SessionAnswer>, ApiError> {
    Ok(created(state.widgets.renew(&call.session).into()))
}

fn visitor_caller(s: &Session) -> Caller {
    Caller {
        org_id: s.claims.org.clone(),
        key_id: None,
        user_id: None,
        visitor: Some(s.claims.vis.clone()),
        widget_id: Some(s.claims.wid.clone()),
        key_budgets: None,
        client_id: None,
    }
}

/// A visitor's message (signed). Without `thread_id`, the visitor's latest conversation
/// continues, across sessions.
#[utoipa::path(post, path = "/v1/widgets/{id}/chat", tag = "widget", operation_id = "widget_chat",
    security(("widget_session" = [])),
    params(("id" = WidgetId, Path, description = "The widget"),
        SignedHeaders),
    request_body = ChatBody,
    responses((status = 200, description = "The answer; with `stream: true`, `text/event-stream` of `delta` events and a final `done` event",
            body = Envelope<crate::http::chat::ChatAnswer>),
        (status = 402, body = ErrorEnvelope, description = "`budget_exhausted`: a spend budget of the organization or the visitor is exhausted (`details.budget`, with `resets_at`)"),
        (status = 404, body = ErrorEnvelope, description = "`not_found`: no such widget, or no such thread of this visitor"),
        (status = 415, body = ErrorEnvelope, description = "`unsupported_media_type`: the body must be JSON"),
        (status = 422, body = ErrorEnvelope, description = "`validation_failed`: `details.fields` names each invalid field"),
        (status = 502, body = ErrorEnvelope, description = "`upstream_error`: the model server failed"),
        (status = 504, body = ErrorEnvelope, description = "`upstream_timeout`: the model server did not answer in time"),
        (status = 400, body = ErrorEnvelope, description = "`invalid_request`: a malformed widget id (`details.reason`: `malformed_id`), or a body that is not valid JSON of this shape"),
        errors::WidgetChat))]
pub async fn chat(State(state): State<AppState>, call: SignedCall) -> Result<Response, ApiError> {
    let body: ChatBody = parse_json(call.json, &call.body)?;
    check_chat_body(&body)?;
    let caller = visitor_caller(&call.session);
    let latest = match body.thread_id {
        Some(_) => None,
        None => state.widgets.latest_thread(&call.session).await?,
    };
    let widget = call.session.widget.clone();
    answer(&state, caller, body, latest, None, Some(&widget)).await
}

/// A visitor's latest conversation.
#[derive(Serialize, ToSchema)]
pub struct History {
    /// The thread, or `null` before the first message.
    pub thread_id: Option<String>,
    /// Its last 100 messages, oldest first.
    pub messages: Vec<Message>,
}

/// The visitor's latest conversation, to redraw it after a reload (signed; empty body).
#[utoipa::path(get, path = "/v1/widgets/{id}/history", tag = "widget",
    security(("widget_session" = [])),
    params(("id" = WidgetId, Path, description = "The widget"),
        SignedHeaders),
    responses((status = 200, description = "The latest conversation", body = Envelope<History>),
        (status = 400, body = ErrorEnvelope, description = "`invalid_request`: a malformed widget id (`details.reason`: `malformed_id`)"),
        (status = 404, body = ErrorEnvelope, description = "`not_found`: no such widget"),
        errors::WidgetSession))]
pub async fn history(
    State(state): State<AppState>,
    call: SignedCall,
) -> Result<Success<History>, ApiError> {
    let (thread, messages) = state.widgets.history(&call.session, 100).await?;
    Ok(ok(History {
        thread_id: thread.map(|t| t.id),
        messages,
    }))
}

/// `GET /widget.js`: the embeddable widget (no dependencies).
pub async fn widget_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        WIDGET_JS,
    )
        .into_response()
}
