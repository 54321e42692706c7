//! Gateway mode: every other request under `/api/` goes to the customer's own backend after
//! authentication and rate limits, with the verified identity in `X-Gatehouse-*` headers.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::TryStreamExt;

use crate::app::AppState;
use crate::error::{ApiError, Code};
use crate::http::chat::ChatPrincipal;

/// `/api/{*rest}` when `proxy_target` is set.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/{*rest}", any(forward))
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// credentials Gatehouse consumed and the identity headers only Gatehouse may set.
fn dropped(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "authorization"
            | "x-api-key"
            | "cookie"
    ) || n.starts_with("x-gatehouse-")
}

fn identity(p: &ChatPrincipal) -> Vec<(&'static str, String)> {
    match p {
        ChatPrincipal::Person(user) => vec![("x-gatehouse-user", user.clone())],
        ChatPrincipal::Key { key, user_id } => {
            let mut h = vec![
                ("x-gatehouse-org", key.org_id.clone()),
                ("x-gatehouse-key-id", key.id.clone()),
                ("x-gatehouse-scopes", key.scopes.join(",")),
            ];
            if let Some(u) = user_id {
                h.push(("x-gatehouse-user", u.clone()));
            }
            h
        }
    }
}

/// Forwards the request, streaming both bodies.
pub async fn forward(
    State(state): State<AppState>,
    principal: ChatPrincipal,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(target) = state.config.proxy_target.as_deref() else {
        return Err(ApiError::not_found("Route"));
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let url = format!("{}{}", target.trim_end_matches('/'), path_and_query);
    let mut headers = HeaderMap::new();
    for (name, value) in req.headers() {
        if !dropped(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in identity(&principal) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let method = req.method().clone();
    let body = reqwest::Body::wrap_stream(req.into_body().into_data_stream());
    let res = state
        .proxy_client
        .request(method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(timeout = e.is_timeout(), "the proxied backend failed");
            if e.is_timeout() {
                ApiError::msg(Code::UpstreamTimeout, "The backend did not answer in time.")
            } else {
                ApiError::msg(Code::UpstreamError, "The backend could not be reached.")
            }
        })?;
    let mut out = Response::builder().status(res.status());
    for (name, value) in res.headers() {
        if !dropped(name) || name.as_str() == "content-length" {
            out = out.header(name, value);
        }
    }
    let stream = res.bytes_stream().map_err(std::io::Error::other);
    out.body(Body::from_stream(stream))
        .map_err(ApiError::internal)
        .map(IntoResponse::into_response)
}
