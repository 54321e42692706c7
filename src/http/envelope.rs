//! The `/v1` response envelope and the request id that every response carries.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use tower::Layer;
use tower_http::cors::CorsLayer;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::error::{ApiError, Code};

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The header carrying the request id.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The current request's id (`req_…`), or an empty string outside a request.
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// `meta` of every envelope.
#[derive(Serialize, ToSchema)]
pub struct Meta {
    /// This request's id (`req_…`), also in `X-Request-Id`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    request_id: String,
    /// When the answer was made (RFC 3339, UTC).
    #[schema(format = DateTime)]
    ts: String,
}

fn meta() -> Meta {
    Meta {
        request_id: request_id(),
        ts: now_rfc3339(),
    }
}

/// The current time as `meta.ts` shows it. Formatting RFC 3339 costs more than the rest of
/// the envelope, and under load many answers share a millisecond, so each thread keeps the
/// last one it formatted.
fn now_rfc3339() -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let ms = crate::clock::Clock::System.now_ms();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != ms {
            *last = (ms, crate::clock::rfc3339(ms));
        }
        last.1.clone()
    })
}

/// A fresh request id: `req_` and a random UUID's 32 hex digits.
fn new_request_id() -> String {
    let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
    let hex = uuid::Uuid::new_v4().simple().encode_lower(&mut hex);
    let mut id = String::with_capacity(4 + hex.len());
    id.push_str("req_");
    id.push_str(hex);
    id
}

/// A success envelope, serialised straight from the handler's type (no JSON tree in between:
/// this is on the hot path of every `/v1` call). In `/openapi.json` a route's answer is
/// `Envelope<ItsType>`.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    success: bool,
    /// The answer.
    data: T,
    /// Request id and time.
    meta: Meta,
}

/// The error of an [`ErrorEnvelope`].
#[derive(Serialize, ToSchema)]
pub struct ErrorObject {
    /// The stable code; the HTTP status follows from it.
    code: Code,
    /// For the developer reading the response; may change.
    message: String,
    /// Structured details: `reason`, `required`, `fields`, `retry_after`… or `null`.
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
}

/// Every `/v1` error: `{"success": false, "error": {code, message, details}, "meta": …}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    success: bool,
    /// What went wrong.
    error: ErrorObject,
    /// Request id and time.
    meta: Meta,
}

/// Declares the error answers of a route in `/openapi.json`, each an [`ErrorEnvelope`]:
/// `responses((status = 200, body = Envelope<X>), Errors<{ E400 | E401 | E404 }>)` is not Rust,
/// so routes list the statuses they answer with a const bit set:
/// `responses((status = 200, …), errors::Auth, errors::Body)`. See [`errors`].
pub mod errors {
    use std::collections::BTreeMap;

    use utoipa::openapi::{RefOr, Response, ResponseBuilder};

    use super::ErrorEnvelope;

    fn answer(description: &str) -> RefOr<Response> {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(<ErrorEnvelope as utoipa::PartialSchema>::schema()))
                    .build(),
            )
            .into()
    }

    macro_rules! sets {
        ($( $(#[$doc:meta])* $name:ident: [$( $status:literal => $desc:literal ),* $(,)?]; )*) => {
            $(
                $(#[$doc])*
                pub struct $name;
                impl utoipa::IntoResponses for $name {
                    fn responses() -> BTreeMap<String, RefOr<Response>> {
                        BTreeMap::from([$( ($status.to_string(), answer($desc)) ),*])
                    }
                }
            )*
        };
    }

    sets! {
        /// A route that needs a credential: 401 without a valid one, 429 over a limit or
        /// the failure budget, 503 when storage or the limiter cannot decide.
        Auth: [
            "401" => "`unauthorized`: no valid credential (`details.reason`)",
            "402" => "`credits_exhausted`: the API key's credits are spent (`details.remaining`)",
            "429" => "`rate_limited`: a rate limit refused the request (`Retry-After`)",
            "503" => "`service_unavailable`: storage or the limiter is unavailable (`Retry-After`)",
        ];
        /// The chat routes: as [`Auth`], and 429 also when too many answers are under way or a
        /// token window is exhausted.
        ChatAuth: [
            "401" => "`unauthorized`: no valid credential (`details.reason`)",
            "429" => "`rate_limited`: a request or token window refused the request (`Retry-After`); `concurrency_limited`: `max_parallel` answers are under way (`details.scope`, `details.max_parallel`)",
            "503" => "`service_unavailable`: storage or the limiter is unavailable, or Redis holds the budgets, leases or credits that apply and does not answer (`Retry-After`; money fails closed)",
        ];
        /// A route inside an organization: 403 without the permission or membership, 404 when
        /// the organization or object is not visible, 400 for a malformed id in the path.
        Org: [
            "400" => "`invalid_request`: a malformed id in the path (`details.reason`: `malformed_id`)",
            "403" => "`forbidden`: not a member, or lacking a permission (`details.required`)",
            "404" => "`not_found`",
        ];
        /// A route with a JSON body: 400 unparseable, 413 too large, 415 not JSON, 422 invalid
        /// values (`details.fields`).
        Body: [
            "400" => "`invalid_request`: the body is not valid JSON or has the wrong shape",
            "413" => "`payload_too_large`",
            "415" => "`unsupported_media_type`: the body must be JSON",
            "422" => "`validation_failed`: `details.fields` names each invalid field",
        ];
        /// A request signed with a widget session (`/v1/widgets/{id}/…` after the session is
        /// open): the session, signature, origin and limits can refuse it.
        WidgetSession: [
            "401" => "`unauthorized` (`details.reason`: `missing`, `bad_session`, `session_expired`, `bad_signature`, `stale_timestamp` or `replayed`)",
            "403" => "`forbidden`: the origin is not allowed, or not the session's (`details.reason`: `origin_not_allowed`)",
            "413" => "`payload_too_large`",
            "429" => "`rate_limited`: a rate limit or the failure budget refused the request (`Retry-After`)",
            "503" => "`service_unavailable`: storage or the limiter is unavailable (`Retry-After`)",
        ];
        /// A widget's chat: as [`WidgetSession`], and the chat's own refusals.
        WidgetChat: [
            "401" => "`unauthorized` (`details.reason`: `missing`, `bad_session`, `session_expired`, `bad_signature`, `stale_timestamp` or `replayed`)",
            "403" => "`forbidden`: the origin is not allowed, or not the session's (`details.reason`: `origin_not_allowed`); `model_not_allowed`: the body names another model than the widget's, or the organization's `allowed_models` does not match the widget's; `model_unpriced`: a budget applies and the model has no price (`details.model`)",
            "413" => "`payload_too_large`",
            "429" => "`rate_limited`: a rate limit, the failure budget, or the widget's or visitor's daily tokens refused the request (`Retry-After`)",
            "503" => "`service_unavailable`: storage or the limiter is unavailable (`Retry-After`)",
        ];
        /// Accepting or declining an invitation by id, as the person invited.
        Invitee: [
            "400" => "`invalid_request`: a malformed id (`details.reason`: `malformed_id`)",
            "403" => "`forbidden`: an API key, an unconfirmed address, or addressed to another (`details.reason`: `wrong_email`)",
            "404" => "`not_found`",
            "409" => "`conflict`: no longer pending, or (accepting) already a member",
        ];
        /// A change that can conflict with existing state.
        Conflict: [
            "409" => "`conflict`",
        ];
    }
}

/// A successful `/v1` answer: `{"success": true, "data": …, "meta": …}`.
pub struct Success<T>(pub StatusCode, pub T);

/// 200 with `data`.
pub fn ok<T: Serialize>(data: T) -> Success<T> {
    Success(StatusCode::OK, data)
}

/// 201 with `data`.
pub fn created<T: Serialize>(data: T) -> Success<T> {
    Success(StatusCode::CREATED, data)
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        let body = Envelope {
            success: true,
            data: self.1,
            meta: meta(),
        };
        // Sized for a typical answer up front (`Json` starts at 128 bytes and grows).
        let mut buf = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut buf, &body) {
            Ok(()) => (
                self.0,
                [(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                buf,
            )
                .into_response(),
            Err(e) => ApiError::internal(format!("cannot encode the answer: {e}")).into_response(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({
            "success": false,
            "error": { "code": self.code.as_str(), "message": self.message, "details": self.details.unwrap_or(Value::Null) },
            "meta": meta(),
        });
        let mut res = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        res
    }
}

/// The fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::msg(Code::NotFound, "No such route.")
}

fn incoming_id(req: &Request) -> Option<String> {
    let v = req.headers().get(&X_REQUEST_ID)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| v.to_string())
}

/// The longest method token accepted, in bytes (the longest registered method,
/// `UPDATEREDIRECTREF`, has 17).
pub const MAX_METHOD_LEN: usize = 32;

/// The answer to a method token over [`MAX_METHOD_LEN`], in the format of the path's API.
fn method_too_long(path: &str) -> Response {
    let message = format!("The request method is longer than {MAX_METHOD_LEN} bytes.");
    if path == "/auth/v1" || path.starts_with("/auth/v1/") {
        crate::http::gotrue::GoTrueError::validation(message).into_response()
    } else {
        ApiError::msg(Code::InvalidRequest, message).into_response()
    }
}

/// The layer every route has (`http::router`): [`request_context`] around the route, with
/// the CORS rules of the route's group and the body limit. Written as a tower layer rather
/// than `middleware::from_fn`, which boxes the rest of the stack again on every request.
#[derive(Clone)]
pub struct Edge(Arc<EdgeParts>);

struct EdgeParts {
    state: crate::app::AppState,
    cors: Option<CorsLayer>,
    limit: DefaultBodyLimit,
}

impl Edge {
    /// The edge of a group of routes whose requests get `cors` (`None`: no CORS).
    pub fn new(
        state: crate::app::AppState,
        cors: Option<CorsLayer>,
        limit: DefaultBodyLimit,
    ) -> Self {
        Self(Arc::new(EdgeParts { state, cors, limit }))
    }
}

impl<S> tower::Layer<S> for Edge {
    type Service = EdgeService<<DefaultBodyLimit as tower::Layer<S>>::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            edge: self.clone(),
            inner: self.0.limit.layer(inner),
        }
    }
}

/// A route behind its [`Edge`].
#[derive(Clone)]
pub struct EdgeService<S> {
    edge: Edge,
    inner: S,
}

impl<S> tower::Service<Request> for EdgeService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is polled when it is called (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let edge = self.edge.clone();
        let inner = self.inner.clone();
        Box::pin(async move { Ok(request_context(&edge.0, req, inner).await) })
    }
}

/// `Vary` as tower-http's CORS writes it, on the answers of a CORS route to requests without
/// `Origin` (see [`request_context`]).
const CORS_VARY: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

/// Gives every request an id, a span with its method and route pattern (continuing the
/// caller's `traceparent`), one log line with its outcome, and an `X-Request-Id` on the
/// response. Logs carry no headers, bodies or query strings, so no credential can reach
/// them. Also adds the Bearer challenge to a protected resource's 401 ([`challenge`]), and
/// answers CORS for the routes that have it.
///
/// CORS runs only for a request with an `Origin` (every cross-origin request a browser makes
/// has one) or a preflight: what it adds to other answers (`Access-Control-Allow-Origin: *`
/// and the exposed headers' list, about 250 bytes) is read by no one. Their `Vary` stays, so
/// a cache never serves one of them to a browser's request.
///
/// [`challenge`]: crate::http::challenge
async fn request_context<S>(edge: &EdgeParts, req: Request, inner: S) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    use tower::ServiceExt;
    let state = &edge.state;
    let id = incoming_id(&req).unwrap_or_else(new_request_id);
    // The route pattern, never the path: ids and tokens in paths stay out of metrics.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| crate::metrics::route_label(m.as_str()));
    let method = req.method().clone();
    // A method token is the client's choice: an over-long one is refused, and never logged.
    let method_ok = method.as_str().len() <= MAX_METHOD_LEN;
    let shown = if method_ok { method.as_str() } else { "other" };
    let span = if crate::telemetry::is_probe(route) {
        // Health checks and metric scrapes come every few seconds from every prober: logged
        // as any request, never exported as spans (see telemetry::PROBE_SPAN).
        tracing::info_span!("probe", method = %shown, route = %route, request_id = %id, trace_id = tracing::field::Empty)
    } else if crate::telemetry::enabled() {
        // The exported span is named as OpenTelemetry's HTTP conventions say: method and
        // route pattern.
        let span = tracing::info_span!("request", otel.name = %format_args!("{shown} {route}"), otel.kind = "server", method = %shown, route = %route, request_id = %id, trace_id = tracing::field::Empty);
        crate::telemetry::attribute(&span, "http.request.method", shown.to_string());
        crate::telemetry::attribute(&span, "http.route", route.to_string());
        span
    } else {
        tracing::info_span!("request", method = %shown, route = %route, request_id = %id, trace_id = tracing::field::Empty)
    };
    crate::telemetry::continue_trace(&span, req.headers());
    let started = std::time::Instant::now();
    let cors = edge.cors.as_ref().filter(|_| {
        method == Method::OPTIONS || req.headers().contains_key(axum::http::header::ORIGIN)
    });
    let vary = edge.cors.is_some() && cors.is_none();
    let challenge = crate::http::challenge::pending(&req);
    let (mut res, decision) = REQUEST_ID
        .scope(
            id.clone(),
            crate::http::limits::scope(async {
                if !method_ok {
                    return (method_too_long(req.uri().path()), None);
                }
                let res = match cors {
                    Some(cors) => match cors.layer(inner).oneshot(req).await {
                        Ok(res) => res,
                        Err(never) => match never {},
                    },
                    None => match inner.oneshot(req).await {
                        Ok(res) => res,
                        Err(never) => match never {},
                    },
                };
                (res, crate::http::limits::noted())
            })
            .instrument(span.clone()),
        )
        .await;
    if method_ok {
        crate::http::challenge::add(state, challenge, &mut res);
    }
    if vary {
        res.headers_mut()
            .insert(axum::http::header::VARY, CORS_VARY);
    }
    let status = res.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    state
        .edge
        .metrics
        .request(route, method.as_str(), status, elapsed);
    crate::telemetry::attribute(&span, "http.response.status_code", i64::from(status));
    if status >= 500 {
        crate::telemetry::failed(&span, "server error");
    }
    let _enter = span.enter();
    let ms = elapsed * 1000.0;
    if status >= 500 {
        tracing::error!(status, latency_ms = ms, "request failed");
    } else {
        tracing::info!(status, latency_ms = ms, "request");
    }
    if let Some(d) = decision {
        crate::http::limits::write_headers(res.headers_mut(), &d, state.edge.clock.now_secs());
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    res
}

/// Storage errors at the HTTP boundary: a missing row is `not_found`, a unique violation
/// `conflict`, a busy store a 503. Here rather than in `error.rs`, so the catalogue does not
/// depend on storage.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound => ApiError::new(crate::error::Code::NotFound),
            StoreError::Conflict(what) => ApiError::msg(crate::error::Code::Conflict, what),
            StoreError::Busy => ApiError::unavailable(1, "Storage is busy; retry shortly."),
            StoreError::Other(cause) => ApiError::internal(cause),
        }
    }
}
