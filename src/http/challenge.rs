//! The Bearer challenge (RFC 6750 §3, RFC 9728 §5.1): every 401 from a protected resource
//! (`/v1` with the chat gateway, and the `/api` proxy) says where the resource's metadata is,
//! so an OAuth client discovers the authorization server from one failed call.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use crate::app::AppState;
use crate::credentials::Resource;

/// The resource a path belongs to, if it is a protected one.
fn protected(path: &str) -> Option<Resource> {
    let v1 = path == "/v1" || path.starts_with("/v1/");
    let api = path == "/api" || path.starts_with("/api/");
    (v1 || api).then(|| Resource::of_path(path))
}

/// `Bearer resource_metadata="…"`, with `error="invalid_token"` when a bearer token was
/// presented and refused (RFC 6750 §3.1: a request without one gets no error code).
pub fn challenge(public_base: &str, resource: Resource, token_sent: bool) -> String {
    let mut v = format!(
        "Bearer resource_metadata=\"{}\"",
        resource.metadata_url(public_base)
    );
    if token_sent {
        v.push_str(", error=\"invalid_token\"");
    }
    v
}

/// What the challenge of a request's answer needs, taken before the request is handed on:
/// the protected resource its path belongs to, and whether a bearer token was sent. `None`
/// for a path outside the protected resources.
pub struct Pending {
    resource: Resource,
    token_sent: bool,
}

/// Notes what the challenge needs from `req` (cheap: a prefix and one header).
pub fn pending(req: &Request) -> Option<Pending> {
    let resource = protected(req.uri().path())?;
    let token_sent = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty());
    Some(Pending {
        resource,
        token_sent,
    })
}

/// Adds the challenge to a protected resource's 401 that has none (run by
/// `envelope::request_context` on every answer).
pub fn add(state: &AppState, pending: Option<Pending>, res: &mut Response) {
    let Some(p) = pending else { return };
    if res.status() == StatusCode::UNAUTHORIZED
        && !res.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        let value = challenge(state.config.public_base(), p.resource, p.token_sent);
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_protected_resources_are_challenged() {
        assert_eq!(protected("/v1/me"), Some(Resource::V1));
        assert_eq!(protected("/api/chat"), Some(Resource::V1));
        assert_eq!(protected("/api/mcp"), Some(Resource::Api));
        assert_eq!(protected("/auth/v1/user"), None);
        assert_eq!(protected("/v10"), None);
        assert_eq!(
            challenge("https://g.example", Resource::Api, true),
            "Bearer resource_metadata=\"https://g.example/.well-known/oauth-protected-resource/api\", error=\"invalid_token\""
        );
    }
}
