//! Gateway mode: every other request under `/api/` goes to the customer's own backend after
//! authentication and rate limits, with the verified identity in `X-Gatehouse-*` headers.
//! Paths never leave `proxy_target`'s base path, and the backend gets the real forwarding
//! chain in `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::TryStreamExt;
use tracing::Instrument;

use crate::app::AppState;
use crate::error::{ApiError, Code, Reason};
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

/// Headers that describe the client's address. They are believed only from a trusted proxy;
/// the chain sent on is built in [`forwarding`].
fn client_address_header(name: &HeaderName) -> bool {
    matches!(name.as_str(), "x-forwarded-for" | "forwarded" | "x-real-ip")
}

/// Why a request path may not be forwarded: a decoded segment that is `.` or `..`, or that
/// holds a slash or backslash (encoded, or a literal backslash, which URL parsers read as a
/// slash). Either could make the backend, or the URL parser on the way, resolve a path
/// outside `proxy_target`'s base path.
pub fn unsafe_path(path: &str) -> Option<Reason> {
    for segment in path.split('/') {
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        if decoded == b"." || decoded == b".." {
            return Some(Reason::DotSegment);
        }
        if decoded.iter().any(|b| *b == b'/' || *b == b'\\') {
            return Some(Reason::EncodedSeparator);
        }
    }
    None
}

fn bad_path(reason: Reason) -> ApiError {
    ApiError::msg(
        Code::InvalidRequest,
        "The path may not contain dot segments (. or ..), encoded slashes or backslashes.",
    )
    .reason(reason)
}

/// The request's path, checked by [`unsafe_path`]; taken before the credential, so a
/// malformed path is refused (400) without authentication.
pub struct ProxyPath;

impl FromRequestParts<AppState> for ProxyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        match unsafe_path(parts.uri.path()) {
            Some(reason) => Err(bad_path(reason)),
            None => Ok(ProxyPath),
        }
    }
}

/// The URL a request for `path_and_query` goes to: `target` followed by the path, which must
/// stay on the target's origin and under its base path (`{base}/api/…`) once parsed.
pub fn target_url(target: &str, path_and_query: &str) -> Result<reqwest::Url, ApiError> {
    let base = reqwest::Url::parse(target).map_err(ApiError::internal)?;
    let url = reqwest::Url::parse(&format!(
        "{}{}",
        target.trim_end_matches('/'),
        path_and_query
    ))
    .map_err(|_| bad_path(Reason::OutsideBase))?;
    let prefix = format!("{}/api/", base.path().trim_end_matches('/'));
    if url.origin() != base.origin() || !url.path().starts_with(&prefix) {
        return Err(bad_path(Reason::OutsideBase));
    }
    Ok(url)
}

/// An address as `X-Forwarded-For` writes it (IPv4-mapped IPv6 as IPv4).
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The forwarding headers sent to the backend. From an untrusted peer, the client's own
/// `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are dropped and `X-Forwarded-For` is the
/// peer alone; from a trusted proxy, its `X-Forwarded-For` and `Forwarded` chains go on with
/// the peer appended, and its `X-Real-IP` as sent.
pub fn forwarding(
    peer: Option<IpAddr>,
    incoming: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Vec<(HeaderName, String)> {
    let Some(peer) = peer else {
        return Vec::new();
    };
    let hop = plain(peer);
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return vec![(HeaderName::from_static("x-forwarded-for"), hop.to_string())];
    }
    let joined = |name: &str| -> Option<String> {
        let parts: Vec<&str> = incoming
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    };
    let mut out = Vec::with_capacity(3);
    let xff = match joined("x-forwarded-for") {
        Some(chain) => format!("{chain}, {hop}"),
        None => hop.to_string(),
    };
    out.push((HeaderName::from_static("x-forwarded-for"), xff));
    if let Some(chain) = joined("forwarded") {
        // RFC 7239: IPv6 nodes are bracketed and quoted.
        let node = match hop {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        out.push((
            HeaderName::from_static("forwarded"),
            format!("{chain}, for={node}"),
        ));
    }
    if let Some(real) = joined("x-real-ip") {
        out.push((HeaderName::from_static("x-real-ip"), real));
    }
    out
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
        ChatPrincipal::OAuth {
            user_id,
            org_id,
            client_id,
            scopes,
        } => vec![
            ("x-gatehouse-user", user_id.clone()),
            ("x-gatehouse-org", org_id.clone()),
            ("x-gatehouse-client-id", client_id.clone()),
            ("x-gatehouse-scopes", scopes.join(",")),
        ],
    }
}

/// Forwards the request, streaming both bodies.
pub async fn forward(
    State(state): State<AppState>,
    _checked: ProxyPath,
    principal: ChatPrincipal,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(target) = state.config.proxy_target.as_deref() else {
        return Err(ApiError::not_found("Route"));
    };
    let url = target_url(
        target,
        req.uri().path_and_query().map_or("/", |p| p.as_str()),
    )?;
    let mut headers = HeaderMap::new();
    for (name, value) in req.headers() {
        if !dropped(name) && !client_address_header(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip());
    for (name, value) in forwarding(peer, req.headers(), &state.edge.trusted_proxies) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    for (name, value) in identity(&principal) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let method = req.method().clone();
    // Until the answer's headers; the backend continues this trace (the caller's
    // `traceparent`, when tracing is off).
    let span = tracing::debug_span!("proxy", otel.name = %format_args!("{method} /api"), otel.kind = "client");
    for (name, value) in span.in_scope(crate::telemetry::outgoing) {
        if let Some(name) = name {
            headers.insert(name, value);
        }
    }
    let body = reqwest::Body::wrap_stream(req.into_body().into_data_stream());
    let res = state
        .edge
        .proxy_client
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .instrument(span.clone())
        .await
        .map_err(|e| {
            tracing::warn!(timeout = e.is_timeout(), "the proxied backend failed");
            if e.is_timeout() {
                ApiError::msg(Code::UpstreamTimeout, "The backend did not answer in time.")
            } else {
                ApiError::msg(Code::UpstreamError, "The backend could not be reached.")
            }
        })?;
    crate::telemetry::attribute(
        &span,
        "http.response.status_code",
        i64::from(res.status().as_u16()),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_dot_segments_or_separators_are_unsafe() {
        for ok in [
            "/api/x",
            "/api/a..b/c.",
            "/api/%41/x%20y",
            "/api/...",
            "/api/%252e%252e",
        ] {
            assert_eq!(unsafe_path(ok), None, "{ok}");
        }
        for bad in [
            "/api/..",
            "/api/./x",
            "/api/%2E%2e/x",
            "/api/.%2e",
            "/api/a%2Fb",
            "/api/a%5cb",
            "/api/a\\b",
        ] {
            assert!(unsafe_path(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn target_urls_stay_under_the_base_path() {
        let url = target_url("http://backend:3000/base/", "/api/x?y=1").map(|u| u.to_string());
        assert_eq!(
            url.ok().as_deref(),
            Some("http://backend:3000/base/api/x?y=1")
        );
        assert!(target_url("http://backend/base", "/api/../admin").is_err());
    }

    #[test]
    fn the_forwarding_chain_believes_only_trusted_peers() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.append("forwarded", HeaderValue::from_static("for=203.0.113.9"));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]));
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0; 4]));
        let trusted: Vec<ipnet::IpNet> = ["::ffff:10.0.0.0/104", "2001:db8::/32"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let show = |v: Vec<(HeaderName, String)>| {
            v.into_iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            show(forwarding(Some(mapped), &h, &[])),
            ["x-forwarded-for: 10.0.0.1"]
        );
        assert_eq!(
            show(forwarding(Some(mapped), &h, &trusted)),
            [
                "x-forwarded-for: 203.0.113.9, 10.0.0.1",
                "forwarded: for=203.0.113.9, for=10.0.0.1"
            ]
        );
        assert_eq!(
            show(forwarding(Some(v6), &h, &trusted)),
            [
                "x-forwarded-for: 203.0.113.9, 2001:db8::1",
                "forwarded: for=203.0.113.9, for=\"[2001:db8::1]\""
            ]
        );
        assert!(forwarding(None, &h, &trusted).is_empty());
    }
}
