//! Extractors: validated JSON bodies, the client address and the caller's `Principal`.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::{ApiError, Code, Reason};
use crate::http::failures;
use crate::keys::KeyUse;

/// Why a JSON body was refused.
#[derive(Debug)]
pub enum BodyProblem {
    /// Over the configured limit.
    TooLarge,
    /// Not `application/json`.
    NotJson,
    /// Unparseable, or the wrong shape; the message names the problem.
    Malformed(String),
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Reads the body within the configured limit.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, BodyProblem> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            BodyProblem::TooLarge
        } else {
            BodyProblem::Malformed("the request body could not be read".into())
        }
    })
}

/// Deserialises a body already read.
pub fn parse_json<T: DeserializeOwned>(is_json: bool, bytes: &[u8]) -> Result<T, BodyProblem> {
    if !is_json {
        return Err(BodyProblem::NotJson);
    }
    serde_json::from_slice(bytes).map_err(|e| BodyProblem::Malformed(describe_json_error(&e)))
}

/// Reads a JSON body within the body limit and deserialises it.
pub async fn read_json<T: DeserializeOwned, S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<T, BodyProblem> {
    let json = is_json(req.headers());
    let bytes = read_body(req, state).await?;
    parse_json(json, &bytes)
}

impl From<BodyProblem> for ApiError {
    fn from(p: BodyProblem) -> Self {
        match p {
            BodyProblem::TooLarge => ApiError::new(Code::PayloadTooLarge),
            BodyProblem::NotJson => ApiError::new(Code::UnsupportedMediaType),
            BodyProblem::Malformed(m) => ApiError::msg(Code::InvalidRequest, m),
        }
    }
}

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
        // serde's data errors name the field and the expected type, never the value.
        Category::Data => format!("the body has the wrong shape: {e}"),
        Category::Io => "the body could not be read".into(),
    }
}

/// A JSON body for `/v1` routes; refusals are answered in the envelope.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = read_body(req, state).await?;
        // Every `/v1` body is an object; serde would also fill a struct from an array.
        if json && bytes.trim_ascii_start().starts_with(b"[") {
            return Err(BodyProblem::Malformed(NOT_AN_OBJECT.into()).into());
        }
        parse_json(json, &bytes)
            .map(ApiJson)
            .map_err(ApiError::from)
    }
}

/// The refusal of a JSON body that is an array where an object is expected.
pub const NOT_AN_OBJECT: &str = "the body has the wrong shape: expected a JSON object";

/// Path parameters, typed ids among them ([`crate::ids::Id`]), parsed before the handler runs:
/// `Ids((org, id)): Ids<(OrgId, WidgetId)>`. A malformed id is answered 400
/// `invalid_request` with `details.reason` `malformed_id`, naming the expected prefix. Put it
/// after the `Principal` so an unauthenticated caller learns nothing about ids.
pub struct Ids<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Ids<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::{ErrorKind, Path};
        use axum::extract::rejection::PathRejection;
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Ids(t)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let message = match e.kind() {
                    ErrorKind::Message(m) => m.clone(),
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key } => {
                        format!("The path parameter {key} is malformed.")
                    }
                    _ => "A path parameter is malformed.".to_string(),
                };
                let e = ApiError::msg(Code::InvalidRequest, message.clone());
                Err(if message.starts_with("Malformed id") {
                    e.reason(Reason::MalformedId)
                } else {
                    e
                })
            }
            Err(other) => Err(ApiError::internal(other)),
        }
    }
}

/// For `Option<Option<T>>` fields: absent is `None`, `null` is `Some(None)`.
pub fn absent_or_null<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// The client's address as the rate limiter keys it: IPv6 clients by their /64.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The address as limits group it: IPv4 as is (IPv4-mapped IPv6 too), IPv6 cut to its /64.
    pub fn bucket(&self) -> IpAddr {
        match self.0 {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }

    /// The limiter key.
    pub fn key(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        }
    }
}

impl ClientIp {
    /// The client behind `peer`: the peer itself, unless it is a trusted proxy; then the
    /// `X-Forwarded-For` chain read right to left, skipping trusted proxies (the entries to
    /// their left are whatever the client chose to send, so they are never believed).
    pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> Self {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        if !is_trusted(&peer) {
            return ClientIp(peer);
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(&ip) {
                        break;
                    }
                }
                // A garbled entry: the last address a trusted proxy vouched for stands.
                Err(_) => break,
            }
        }
        ClientIp(client)
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(client_ip(parts, state))
    }
}

pub use crate::credentials::{Principal, Via};

impl From<crate::credentials::CredentialError> for ApiError {
    fn from(e: crate::credentials::CredentialError) -> Self {
        match e {
            crate::credentials::CredentialError::Refused { reason, message } => {
                ApiError::unauthorized(reason, message)
            }
            crate::credentials::CredentialError::Unavailable => {
                ApiError::unavailable(1, "Storage is unavailable; retry shortly.")
            }
        }
    }
}

/// The dashboard session cookie's name.
pub const SESSION_COOKIE: &str = "gatehouse_session";

pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A state-changing cookie request must come from our own origin (Origin, else the
/// Referer's origin); the refusal names the expected and the arrived origin.
pub fn check_origin(headers: &HeaderMap, config: &crate::config::Config) -> Result<(), ApiError> {
    let arrived = match headers.get(header::ORIGIN) {
        Some(o) => o.to_str().ok().map(str::to_string),
        None => headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| url::Url::parse(r).ok())
            .map(|u| u.origin().ascii_serialization()),
    };
    match arrived {
        Some(origin) if config.accepts_origin(&origin) => Ok(()),
        other => Err(ApiError::csrf(&config.public_origin(), other.as_deref())),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = client_ip(parts, state);
        if let Some(key) = parts.headers.get("x-api-key") {
            let key = key.to_str().map_err(|_| {
                ApiError::unauthorized(Reason::Malformed, "The API key is malformed.")
            })?;
            return key_principal(state, key.trim(), &ip).await;
        }
        if let Some(token) = bearer(parts) {
            if token.is_empty() {
                return Err(ApiError::unauthorized(
                    Reason::Malformed,
                    "The Authorization header has no token.",
                ));
            }
            if state.keys.looks_like_key(token) {
                return key_principal(state, token, &ip).await;
            }
            if crate::credentials::looks_like_at_jwt(token) {
                return oauth_principal(state, token, request_path(parts), &ip).await;
            }
            failures::admit(state, &ip).await?;
            let result = state
                .credentials
                .principal_from_jwt(token)
                .await
                .map_err(ApiError::from);
            if let Err(e) = &result {
                count_failure(state, e);
                if failures::counts(e, false) {
                    failures::spend(state, &ip).await;
                }
            }
            return result;
        }
        let jar = axum_extra::extract::CookieJar::from_headers(&parts.headers);
        if let Some(cookie) = jar.get(SESSION_COOKIE) {
            failures::admit(state, &ip).await?;
            let result = state
                .credentials
                .principal_from_cookie(cookie.value())
                .await
                .map_err(ApiError::from);
            if let Err(e) = &result {
                count_failure(state, e);
                if failures::counts(e, false) {
                    failures::spend(state, &ip).await;
                }
            }
            let principal = result?;
            if !is_safe(&parts.method) {
                check_origin(&parts.headers, &state.config)?;
            }
            return Ok(principal);
        }
        let e = ApiError::unauthorized(
            Reason::Missing,
            "No credential: send Authorization: Bearer <token>, X-API-Key, or sign in.",
        );
        count_failure(state, &e);
        Err(e)
    }
}

/// The path as the client sent it (before any router nesting).
pub(crate) fn request_path(parts: &Parts) -> &str {
    parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(parts.uri.path(), |u| u.0.path())
}

/// An OAuth client's principal from an RFC 9068 access token presented at `path`'s resource,
/// admitted by the client's failure budget first, then by the windows of the client and of
/// the person in the grant's organization.
pub(crate) async fn oauth_principal(
    state: &AppState,
    token: &str,
    path: &str,
    ip: &ClientIp,
) -> Result<Principal, ApiError> {
    failures::admit(state, ip).await?;
    let resource = crate::credentials::Resource::of_path(path);
    let principal = match state
        .credentials
        .principal_from_oauth(token, resource)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            let e = ApiError::from(e);
            count_failure(state, &e);
            if failures::counts(&e, false) {
                failures::spend(state, ip).await;
            }
            return Err(e);
        }
    };
    if let Principal::OAuthClient {
        user_id,
        client_id,
        org_id,
        ..
    } = &principal
    {
        let req = state
            .limits
            .oauth_request(org_id, client_id, user_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "credential check could not reach storage");
                ApiError::unavailable(1, "Storage is unavailable; retry shortly.")
            })?;
        let d = state
            .limits
            .check(&req)
            .await
            .map_err(|_| crate::http::limits::unavailable())?;
        if !d.allowed {
            return Err(crate::http::limits::refused(&d));
        }
    }
    Ok(principal)
}

/// The client address of a request, as [`ClientIp`] extracts it.
pub(crate) fn client_ip(parts: &Parts, state: &AppState) -> ClientIp {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    ClientIp::resolve(peer, &parts.headers, &state.edge.trusted_proxies)
}

/// An API key's principal, admitted by the client's failure budget first, then by the key's
/// own and its organization's rate limits.
pub(crate) async fn key_principal(
    state: &AppState,
    key: &str,
    ip: &ClientIp,
) -> Result<Principal, ApiError> {
    failures::admit(state, ip).await?;
    let principal = match state.credentials.principal_from_key(key).await {
        Ok(p) => p,
        Err(e) => {
            let e = ApiError::from(e);
            count_failure(state, &e);
            if failures::counts(&e, true) {
                failures::spend(state, ip).await;
            }
            return Err(e);
        }
    };
    if let Principal::ApiKey { key } = &principal {
        let req = state.limits.key_request(key, true).await.map_err(|e| {
            // A storage failure while checking a credential: 503, never a 500 or a 401.
            tracing::error!(error = %e, "credential check could not reach storage");
            ApiError::unavailable(1, "Storage is unavailable; retry shortly.")
        })?;
        // Every admitted use of a key with credits spends one; a refused one spends nothing.
        // With Redis, the windows and the credits are decided in one call.
        let (d, spent) = match state
            .keys
            .spend_with_windows(state.limits.limiter(), &req, key, 1)
            .await
        {
            KeyUse::Decided(d, spent) => {
                state.limits.announce(&req, &d);
                (d, Some(spent))
            }
            KeyUse::Unavailable => {
                return Err(credit_refusal(crate::keys::CreditError::Unavailable))
            }
            KeyUse::Apart => (
                state
                    .limits
                    .check(&req)
                    .await
                    .map_err(|_| crate::http::limits::unavailable())?,
                None,
            ),
        };
        state
            .chat
            .usage
            .count_key_request(&key.org_id, &key.id, !d.allowed);
        if !d.allowed {
            return Err(crate::http::limits::refused(&d));
        }
        match spent {
            Some(spent) => spent,
            None => state.keys.spend(key, 1).await,
        }
        .map_err(credit_refusal)?;
    }
    Ok(principal)
}

/// The answer to a use the credit meter did not admit: 402 `credits_exhausted`, or 503
/// when the meter cannot decide (a key with credits is never served unmetered).
pub(crate) fn credit_refusal(e: crate::keys::CreditError) -> ApiError {
    match e {
        crate::keys::CreditError::Exhausted { remaining } => ApiError::msg(
            Code::CreditsExhausted,
            "The API key has no credits left for this use; they refill as its settings say.",
        )
        .details(serde_json::json!({ "remaining": remaining })),
        crate::keys::CreditError::Unavailable => {
            ApiError::unavailable(1, "The credit meter is unavailable; retry shortly.")
        }
    }
}

/// Counts a refused credential by its `details.reason`.
fn count_failure(state: &AppState, e: &ApiError) {
    const REASONS: [&str; 6] = [
        "missing",
        "malformed",
        "not_found",
        "expired",
        "revoked",
        "unavailable",
    ];
    let reason = e
        .details
        .as_ref()
        .and_then(|d| d.get("reason"))
        .and_then(|r| r.as_str())
        .and_then(|r| REASONS.iter().find(|k| **k == r).copied())
        .unwrap_or("other");
    state.edge.metrics.auth_failure(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_group_ipv6_clients_by_their_64_and_mapped_ipv4_as_ipv4() {
        let ip = |s: &str| ClientIp(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(
            ip("2001:db8:1:2::1").bucket(),
            ip("2001:db8:1:2:ffff::9").bucket()
        );
        assert_ne!(
            ip("2001:db8:1:2::1").bucket(),
            ip("2001:db8:1:3::1").bucket()
        );
        assert_eq!(
            ip("::ffff:203.0.113.9").bucket(),
            ip("203.0.113.9").bucket()
        );
        assert_eq!(ip("203.0.113.9").bucket().to_string(), "203.0.113.9");
    }
}
