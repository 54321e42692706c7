//! The OAuth 2.1 authorization server's HTTP side (docs/oauth.md): discovery (RFC 8414,
//! OpenID Connect, RFC 9728), registration (RFC 7591), `/oauth/authorize`, the consent API the
//! dashboard calls, `/oauth/token`, revocation (RFC 7009), introspection (RFC 7662) and
//! userinfo, over [`crate::oauth::OAuth`]; and the `/v1` routes for connected apps and an
//! organization's clients.
//!
//! The OAuth endpoints answer errors in the RFC 6749 format (`{"error", "error_description"}`),
//! not the `/v1` envelope: OAuth clients read that format. The consent API and the `/v1`
//! routes use the envelope.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::auth::tokens::ct_eq;
use crate::config::{OAuthRegistration, Policy};
use crate::error::{ApiError, Code};
use crate::http::envelope::{created, errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{ApiJson, ClientIp, Ids, Principal, Via};
use crate::http::orgs::actor;
use crate::ids::{OAuthClientId, OAuthGrantId, OAuthRequestId, OrgId};
use crate::oauth::{
    scopes, AuthorizeParams, Authorized, ClientAuth, ClientInfo, ConsentView, Decision, GrantView,
    IntrospectionCaller, NewAdminClient, OAuthError, Protocol, SignedIn, TokenRequest,
    TokenResponse,
};
use crate::store::Audit;

/// The public OAuth endpoints (any origin may call them, without cookies) and the consent
/// API (the dashboard's own origin, with its cookie).
pub fn router() -> OpenApiRouter<AppState> {
    let public_cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::WWW_AUTHENTICATE]);
    let public = OpenApiRouter::new()
        .routes(routes!(authorization_server_metadata))
        .routes(routes!(openid_configuration))
        .routes(routes!(protected_resource_root))
        .routes(routes!(protected_resource_v1))
        .routes(routes!(protected_resource_api))
        .routes(routes!(register))
        .routes(routes!(token))
        .routes(routes!(revoke))
        .routes(routes!(introspect))
        .routes(routes!(userinfo, userinfo_post))
        .layer(public_cors);
    OpenApiRouter::new()
        .merge(public)
        .routes(routes!(authorize))
        .routes(routes!(consent_request, consent_decision))
}

/// The `/v1` routes: a person's connected apps and an organization's clients.
pub fn v1_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_grants))
        .routes(routes!(revoke_grant))
        .routes(routes!(list_clients, create_client))
        .routes(routes!(delete_client))
}

// ---------------------------------------------------------------------------------------
// Errors in the RFC 6749 format.

/// An error answered as `{"error", "error_description"}`.
pub struct OAuthReply {
    error: Protocol,
    description: String,
    /// The client tried `Authorization: Basic` (an `invalid_client` then names the scheme).
    basic: bool,
}

impl OAuthReply {
    fn new(error: Protocol, description: impl Into<String>) -> Self {
        OAuthReply {
            error,
            description: description.into(),
            basic: false,
        }
    }
}

/// The HTTP status of an OAuth error code.
fn status_of(p: Protocol) -> StatusCode {
    match p {
        Protocol::InvalidClient | Protocol::InvalidToken => StatusCode::UNAUTHORIZED,
        Protocol::AccessDenied => StatusCode::FORBIDDEN,
        Protocol::SlowDown => StatusCode::TOO_MANY_REQUESTS,
        Protocol::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn no_store(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl IntoResponse for OAuthReply {
    fn into_response(self) -> Response {
        let status = status_of(self.error);
        let mut res = (
            status,
            Json(json!({ "error": self.error.as_str(), "error_description": self.description })),
        )
            .into_response();
        no_store(&mut res);
        let challenge = match self.error {
            Protocol::InvalidClient if self.basic => Some("Basic realm=\"gatehouse\"".to_string()),
            Protocol::InvalidToken => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.description.replace(['"', '\\'], "")
            )),
            Protocol::SlowDown => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                None
            }
            Protocol::TemporarilyUnavailable => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                None
            }
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        res
    }
}

impl From<OAuthError> for OAuthReply {
    fn from(e: OAuthError) -> Self {
        match e {
            OAuthError::Protocol(p, d) => OAuthReply::new(p, d),
            OAuthError::NotFound(what) => {
                OAuthReply::new(Protocol::InvalidRequest, format!("{what} not found"))
            }
            OAuthError::Invalid(field, problem) => {
                OAuthReply::new(Protocol::InvalidRequest, format!("{field}: {problem}"))
            }
            OAuthError::Forbidden(m) => OAuthReply::new(Protocol::AccessDenied, m),
            OAuthError::Store(s) => {
                tracing::error!(error = %s, "oauth: storage failed");
                OAuthReply::new(
                    Protocol::TemporarilyUnavailable,
                    "storage is unavailable; retry shortly",
                )
            }
            OAuthError::Signing(s) => {
                tracing::error!(error = %s, "oauth: signing failed");
                OAuthReply::new(
                    Protocol::TemporarilyUnavailable,
                    "tokens cannot be signed; retry shortly",
                )
            }
        }
    }
}

impl From<OAuthError> for ApiError {
    fn from(e: OAuthError) -> Self {
        match e {
            OAuthError::NotFound(what) => ApiError::not_found(what),
            OAuthError::Invalid(field, problem) => ApiError::field(field, &problem),
            OAuthError::Forbidden(m) => ApiError::msg(Code::Forbidden, m),
            OAuthError::Store(s) => s.into(),
            OAuthError::Protocol(_, d) => ApiError::msg(Code::InvalidRequest, d),
            OAuthError::Signing(s) => ApiError::internal(s),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Forms and client authentication.

/// A form or query: its pairs, with `resource` allowed to repeat and nothing else.
struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    fn parse(raw: &[u8]) -> Result<Self, OAuthReply> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if k != "resource" && pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(OAuthReply::new(
                    Protocol::InvalidRequest,
                    format!("{k} is given more than once"),
                ));
            }
        }
        Ok(Form { pairs })
    }

    fn get(&self, name: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A form body: `application/x-www-form-urlencoded` only (RFC 6749 section 3.2).
fn form_body(headers: &HeaderMap, body: &Bytes) -> Result<Form, OAuthReply> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthReply::new(
            Protocol::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    Form::parse(body)
}

/// How the client authenticates: `Authorization: Basic` (RFC 6749 section 2.3.1, both parts
/// form-urlencoded), `client_secret` in the form, or its `client_id` alone. Two methods at
/// once are refused.
fn client_auth(headers: &HeaderMap, form: &Form) -> Result<ClientAuth, OAuthReply> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, b)| b.trim().to_string());
    let form_id = form.get("client_id");
    let form_secret = form.get("client_secret");
    if let Some(b) = basic {
        let bad = || OAuthReply {
            basic: true,
            ..OAuthReply::new(Protocol::InvalidClient, "malformed Basic credentials")
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(bad)?;
        let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        let (Some(id), Some(secret)) = (decode(id), decode(secret)) else {
            return Err(bad());
        };
        if form_secret.is_some() || form_id.as_deref().is_some_and(|f| f != id) {
            return Err(OAuthReply::new(
                Protocol::InvalidRequest,
                "use one client authentication method",
            ));
        }
        return Ok(ClientAuth::Secret {
            client_id: id,
            secret,
            basic: true,
        });
    }
    Ok(match (form_id, form_secret) {
        (Some(client_id), Some(secret)) => ClientAuth::Secret {
            client_id,
            secret,
            basic: false,
        },
        (Some(id), None) => ClientAuth::Public(id),
        (None, Some(_)) => {
            return Err(OAuthReply::new(
                Protocol::InvalidRequest,
                "client_secret without client_id",
            ))
        }
        (None, None) => ClientAuth::Nothing,
    })
}

/// The token of `Authorization: Bearer …`.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn with_basic(e: OAuthError, auth: &ClientAuth) -> OAuthReply {
    let mut r = OAuthReply::from(e);
    r.basic = matches!(auth, ClientAuth::Secret { basic: true, .. });
    r
}

fn json_no_store(status: StatusCode, body: Value) -> Response {
    let mut res = (status, Json(body)).into_response();
    no_store(&mut res);
    res
}

// ---------------------------------------------------------------------------------------
// Discovery.

fn as_metadata(state: &AppState) -> Value {
    let iss = state.oauth.issuer();
    json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oauth/authorize"),
        "token_endpoint": format!("{iss}/oauth/token"),
        "registration_endpoint": format!("{iss}/oauth/register"),
        "revocation_endpoint": format!("{iss}/oauth/revoke"),
        "introspection_endpoint": format!("{iss}/oauth/introspect"),
        "userinfo_endpoint": format!("{iss}/oauth/userinfo"),
        "jwks_uri": format!("{iss}/auth/v1/.well-known/jwks.json"),
        "scopes_supported": scopes::supported(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "bearer"],
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["sub", "email", "email_verified", "name"],
        "prompt_values_supported": ["none", "consent", "login"],
        "resource_indicators_supported": true,
    })
}

fn metadata_response(body: Value) -> Response {
    let mut res = Json(body).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

/// The authorization server's metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "RFC 8414 metadata", body = Object)))]
pub async fn authorization_server_metadata(State(state): State<AppState>) -> Response {
    metadata_response(as_metadata(&state))
}

/// The same metadata as an OpenID Connect discovery document.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oauth",
    responses((status = 200, description = "OpenID Connect discovery", body = Object)))]
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    metadata_response(as_metadata(&state))
}

fn resource_metadata(state: &AppState, which: usize) -> Response {
    let iss = state.oauth.issuer();
    let resource = state.oauth.resources()[which].clone();
    // `offline_access` in both: the MCP SDK asks for exactly these scopes, so a client gets
    // its refresh token in the first authorization.
    let mut supported: Vec<&str> = if which == 0 {
        scopes::permission_scopes()
    } else {
        vec!["chat:write"]
    };
    supported.push("offline_access");
    metadata_response(json!({
        "resource": resource,
        "authorization_servers": [iss],
        "scopes_supported": supported,
        "bearer_methods_supported": ["header"],
        "jwks_uri": format!("{iss}/auth/v1/.well-known/jwks.json"),
        "resource_name": if which == 0 { "Gatehouse API" } else { "Gatehouse gateway (/api)" },
        "resource_documentation": format!("{iss}/openapi.json"),
    }))
}

/// Protected-resource metadata (RFC 9728) of `/v1` (the root form answers the same).
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource", tag = "oauth",
    responses((status = 200, description = "RFC 9728 metadata of `{public_url}/v1`", body = Object)))]
pub async fn protected_resource_root(State(state): State<AppState>) -> Response {
    resource_metadata(&state, 0)
}

/// Protected-resource metadata (RFC 9728) of `{public_url}/v1`.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/v1", tag = "oauth",
    responses((status = 200, description = "RFC 9728 metadata of `{public_url}/v1`", body = Object)))]
pub async fn protected_resource_v1(State(state): State<AppState>) -> Response {
    resource_metadata(&state, 0)
}

/// Protected-resource metadata (RFC 9728) of `{public_url}/api`, the gateway.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/api", tag = "oauth",
    responses((status = 200, description = "RFC 9728 metadata of `{public_url}/api`", body = Object)))]
pub async fn protected_resource_api(State(state): State<AppState>) -> Response {
    resource_metadata(&state, 1)
}

// ---------------------------------------------------------------------------------------
// Registration.

/// Registers a client (RFC 7591): open, with an initial access token, or off, per
/// `oauth_registration`; limited per client IP (`rate_limit_oauth_register`).
#[utoipa::path(post, path = "/oauth/register", tag = "oauth", request_body = Object,
    security((), ("bearer" = [])),
    responses((status = 201, description = "The client: `client_id`, `client_secret` for a confidential client, and the accepted metadata", body = Object),
        (status = 400, description = "`invalid_client_metadata` or `invalid_redirect_uri` (RFC 7591), `invalid_request`", body = Object),
        (status = 401, description = "`invalid_token`: the initial access token is missing or wrong (`oauth_registration = \"token\"`)", body = Object),
        (status = 403, description = "`access_denied`: registration is off", body = Object),
        (status = 429, description = "`slow_down`: too many registrations from this address (`Retry-After`)", body = Object),
        (status = 503, description = "`temporarily_unavailable`", body = Object)))]
pub async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthReply> {
    match state.config.oauth_registration {
        OAuthRegistration::Off => {
            return Err(OAuthReply::new(
                Protocol::AccessDenied,
                "dynamic client registration is off on this server",
            ))
        }
        OAuthRegistration::Token => {
            let presented = bearer_token(&headers).unwrap_or_default();
            let expected = state
                .config
                .oauth_registration_token
                .as_ref()
                .map(|t| t.expose_secret().to_string())
                .unwrap_or_default();
            if expected.is_empty() || !ct_eq(presented, &expected) {
                return Err(OAuthReply::new(
                    Protocol::InvalidToken,
                    "registration needs the initial access token",
                ));
            }
        }
        OAuthRegistration::Open => {}
    }
    per_ip(
        &state,
        Policy::OAuthRegister,
        &ip,
        "too many client registrations from this address",
    )
    .await?;
    let body: Value = serde_json::from_slice(&body).map_err(|_| {
        OAuthReply::new(
            Protocol::InvalidClientMetadata,
            "the body must be a JSON object",
        )
    })?;
    let registered = state.oauth.register(&body).await?;
    Ok(json_no_store(StatusCode::CREATED, registered.body()))
}

// ---------------------------------------------------------------------------------------
// Authorization.

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page shown when the request cannot be sent back to the client.
fn error_page(e: OAuthError) -> Response {
    let reply = OAuthReply::from(e);
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Authorization error</title></head>\
         <body><h1>This authorization request cannot be completed</h1>\
         <p><code>{}</code>: {}</p><p>The application that sent you here is misconfigured. \
         Nothing was shared with it.</p></body></html>",
        escape(reply.error.as_str()),
        escape(&reply.description)
    );
    let mut res = (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::http::dashboard::CSP),
    );
    no_store(&mut res);
    res
}

fn found(location: &str) -> Response {
    let mut res = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    no_store(&mut res);
    res
}

/// The signed-in person behind the dashboard cookie, if any: their id and whether the
/// session is at aal2.
async fn cookie_user(state: &AppState, headers: &HeaderMap) -> Option<(String, bool)> {
    let jar = axum_extra::extract::CookieJar::from_headers(headers);
    let cookie = jar.get(crate::http::extract::SESSION_COOKIE)?;
    match state
        .credentials
        .principal_from_cookie(cookie.value())
        .await
    {
        Ok(Principal::User { user_id, aal2, .. }) => Some((user_id, aal2)),
        _ => None,
    }
}

/// The 429 page of `/oauth/authorize`: a person's browser is on the other end, so HTML with
/// `Retry-After` and the rate-limit headers, not a redirect to a client not yet trusted.
fn too_many_page(state: &AppState, d: &crate::ratelimit::Decision) -> Response {
    let retry = d.retry_after();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Too many requests</title></head>\
         <body><h1>Too many authorization requests</h1>\
         <p>Too many authorization requests came from your address. Try again in {retry} \
         second{}.</p></body></html>",
        if retry == 1 { "" } else { "s" }
    );
    let mut res = (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    crate::http::limits::write_headers(res.headers_mut(), d, state.edge.clock.now_secs());
    if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::http::dashboard::CSP),
    );
    no_store(&mut res);
    res
}

/// Starts the authorization-code flow (PKCE S256 required), limited per client IP
/// (`rate_limit_oauth_authorize`, a 429 page). An unknown client or a redirect URI it did not
/// register gets a 400 page; any other problem is sent to the redirect URI as `error=` when
/// an organization admin registered the client or someone has a live grant to it, and is a
/// 400 page otherwise. Otherwise the person goes to the dashboard's consent page
/// (signing in first), or straight back with a `code` when they consented before.
#[utoipa::path(get, path = "/oauth/authorize", tag = "oauth",
    params(
        ("response_type" = String, Query, description = "`code`"),
        ("client_id" = String, Query, description = "A registered client id, or a metadata document's https URL"),
        ("redirect_uri" = Option<String>, Query, description = "Exactly as registered (loopback: any port)"),
        ("scope" = Option<String>, Query, description = "Space-separated scopes"),
        ("state" = Option<String>, Query, description = "Returned as is"),
        ("code_challenge" = String, Query, description = "base64url SHA-256 of the verifier"),
        ("code_challenge_method" = String, Query, description = "`S256`"),
        ("resource" = Option<String>, Query, description = "`{public_url}/v1` (default) or `{public_url}/api`"),
        ("nonce" = Option<String>, Query, description = "Put in the ID token"),
        ("prompt" = Option<String>, Query, description = "`none`, `consent` or `login`")),
    responses((status = 302, description = "To the consent page, or to the client with `code` or `error`",
               headers(("Location" = String, description = "The consent page, or the client's redirect URI with `code`, `state` and `iss` (or `error`)"))),
        (status = 400, description = "An HTML page: unknown client, unregistered redirect URI, or any error for a client nobody has granted and no admin registered"),
        (status = 429, description = "An HTML page: too many authorization requests from this address (`Retry-After`)"),
        (status = 503, description = "`temporarily_unavailable`: storage or the limiter cannot answer", body = Object)))]
pub async fn authorize(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match state.limits.ip(Policy::OAuthAuthorize, &ip.key()).await {
        Ok(d) if d.allowed => {}
        Ok(d) => return too_many_page(&state, &d),
        Err(_) => {
            return OAuthReply::new(
                Protocol::TemporarilyUnavailable,
                "rate limiting is unavailable; retry shortly",
            )
            .into_response()
        }
    }
    let form = match Form::parse(query.unwrap_or_default().as_bytes()) {
        Ok(f) => f,
        Err(e) => return error_page(OAuthError::Protocol(e.error, e.description)),
    };
    let params = AuthorizeParams {
        response_type: form.get("response_type"),
        client_id: form.get("client_id"),
        redirect_uri: form.get("redirect_uri"),
        scope: form.get("scope"),
        state: form.get("state"),
        code_challenge: form.get("code_challenge"),
        code_challenge_method: form.get("code_challenge_method"),
        resource: form.all("resource"),
        nonce: form.get("nonce"),
        prompt: form.get("prompt"),
    };
    let user = cookie_user(&state, &headers).await;
    let signed_in = user.as_ref().map(|(user_id, aal2)| SignedIn {
        user_id,
        aal2: *aal2,
    });
    match state.oauth.authorize(params, signed_in).await {
        Ok(Authorized::Redirect(to)) => found(&to),
        Ok(Authorized::Page(e)) => error_page(e),
        Err(e) => OAuthReply::from(e).into_response(),
    }
}

/// The signed-in person on the consent API: the dashboard cookie only.
fn consenting(principal: &Principal) -> Result<SignedIn<'_>, ApiError> {
    match principal {
        Principal::User {
            user_id,
            aal2,
            via: Via::Cookie,
            ..
        } => Ok(SignedIn {
            user_id,
            aal2: *aal2,
        }),
        _ => Err(ApiError::msg(
            Code::Forbidden,
            "Consent is given in the dashboard, signed in with its session.",
        )),
    }
}

/// A pending authorization request, for the dashboard's consent page.
#[utoipa::path(get, path = "/oauth/requests/{id}", tag = "oauth",
    params(("id" = inline(OAuthRequestId), Path, description = "The request")),
    security(("cookie" = [])),
    responses((status = 200, description = "The client, scopes, resource and the organizations to choose from", body = Envelope<ConsentView>),
        (status = 403, description = "`forbidden`: not the dashboard session", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: unknown, decided or expired", body = ErrorEnvelope),
        errors::Auth))]
pub async fn consent_request(
    State(state): State<AppState>,
    principal: Principal,
    Ids(id): Ids<OAuthRequestId>,
) -> Result<Success<ConsentView>, ApiError> {
    let user = consenting(&principal)?;
    Ok(ok(state
        .oauth
        .consent_view(id.as_str(), user.user_id)
        .await?))
}

/// The person's decision on the consent page.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `approve` or `deny`.
    pub decision: String,
    /// The organization the grant applies to (approve).
    pub org_id: Option<String>,
}

/// Where the browser goes next.
#[derive(serde::Serialize, ToSchema)]
pub struct RedirectTo {
    /// The client's redirect URI with `code` (or `error=access_denied`), `state` and `iss`.
    pub redirect_to: String,
}

/// Approves (in one of the person's organizations) or denies a pending request.
#[utoipa::path(post, path = "/oauth/requests/{id}", tag = "oauth", request_body = DecisionBody,
    params(("id" = inline(OAuthRequestId), Path, description = "The request")),
    security(("cookie" = [])),
    responses((status = 200, description = "Where the browser goes next", body = Envelope<RedirectTo>),
        (status = 403, description = "`forbidden`: not the dashboard session, or not a member of the organization", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: unknown, decided or expired", body = ErrorEnvelope),
        errors::Auth, errors::Body))]
pub async fn consent_decision(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(id): Ids<OAuthRequestId>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Success<RedirectTo>, ApiError> {
    let user = consenting(&principal)?;
    let decision = match body.decision.as_str() {
        "approve" => Decision::Approve {
            org_id: body
                .org_id
                .ok_or_else(|| ApiError::field("org_id", "is required to approve"))?,
        },
        "deny" => Decision::Deny,
        _ => return Err(ApiError::field("decision", "must be approve or deny")),
    };
    let redirect_to = state
        .oauth
        .decide(id.as_str(), user, decision, Some(ip.0.to_string()))
        .await?;
    Ok(ok(RedirectTo { redirect_to }))
}

// ---------------------------------------------------------------------------------------
// Tokens.

/// The form of `POST /oauth/token` (RFC 6749 sections 4.1.3 and 6, RFC 8707), for the
/// description only: the handler reads the form itself, a field at a time, so that a repeated
/// field (`resource`) or a client in the `Authorization` header is seen as such.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct TokenForm {
    /// `authorization_code` or `refresh_token`.
    #[schema(required = true)]
    grant_type: String,
    /// The code (authorization_code).
    code: Option<String>,
    /// The PKCE verifier the code's challenge was made from (authorization_code).
    code_verifier: Option<String>,
    /// The redirect URI of the authorization request (authorization_code).
    redirect_uri: Option<String>,
    /// The refresh token (refresh_token).
    refresh_token: Option<String>,
    /// A narrower scope than granted (refresh_token).
    scope: Option<String>,
    /// The resource the grant is for (RFC 8707).
    resource: Option<String>,
    /// The client, unless it authenticates with HTTP Basic.
    client_id: Option<String>,
    /// A confidential client's secret (client_secret_post).
    client_secret: Option<String>,
}

/// The form of `POST /oauth/revoke` (RFC 7009), for the description only.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct RevokeForm {
    /// The refresh or access token.
    #[schema(required = true)]
    token: String,
    /// `refresh_token` or `access_token` (a hint only).
    token_type_hint: Option<String>,
    /// The client, unless it authenticates with HTTP Basic.
    client_id: Option<String>,
    /// A confidential client's secret (client_secret_post).
    client_secret: Option<String>,
}

/// Exchanges a code (with its PKCE verifier) or a refresh token (rotated; a reused one ends
/// the grant) for an access token in the RFC 9068 profile, `aud` the `resource`.
#[utoipa::path(post, path = "/oauth/token", tag = "oauth", operation_id = "oauth_token",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_secret_basic" = [])),
    responses((status = 200, description = "The tokens", body = TokenResponse),
        (status = 400, description = "`invalid_request`, `invalid_grant`, `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, `invalid_target`", body = Object),
        (status = 401, description = "`invalid_client`", body = Object),
        (status = 429, description = "`slow_down`: too many refreshes from this address", body = Object),
        (status = 503, description = "`temporarily_unavailable`", body = Object)))]
pub async fn token(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthReply> {
    let form = form_body(&headers, &body)?;
    let auth = client_auth(&headers, &form)?;
    if form.get("grant_type").as_deref() == Some("refresh_token") {
        per_ip(
            &state,
            Policy::TokenRefresh,
            &ip,
            "too many refreshes from this address",
        )
        .await?;
    }
    let req = TokenRequest {
        grant_type: form.get("grant_type"),
        code: form.get("code"),
        redirect_uri: form.get("redirect_uri"),
        code_verifier: form.get("code_verifier"),
        refresh_token: form.get("refresh_token"),
        scope: form.get("scope"),
        resource: form.all("resource"),
    };
    match state.oauth.token(&auth, req).await {
        Ok(t) => Ok(json_no_store(
            StatusCode::OK,
            serde_json::to_value(t).unwrap_or_default(),
        )),
        Err(e) => Err(with_basic(e, &auth)),
    }
}

/// Revokes a refresh or access token (RFC 7009): the grant it belongs to ends. An unknown
/// token, or another client's, is answered 200 all the same.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = RevokeForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_secret_basic" = [])),
    responses((status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, description = "`invalid_request`", body = Object),
        (status = 401, description = "`invalid_client`", body = Object)))]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthReply> {
    let form = form_body(&headers, &body)?;
    let auth = client_auth(&headers, &form)?;
    let Some(token) = form.get("token") else {
        return Err(OAuthReply::new(
            Protocol::InvalidRequest,
            "token is required",
        ));
    };
    state
        .oauth
        .revoke_token(&auth, &token)
        .await
        .map_err(|e| with_basic(e, &auth))?;
    Ok(json_no_store(StatusCode::OK, json!({})))
}

/// Introspects a token (RFC 7662) for a resource server: an organization API key with
/// `keys:verify` (its organization's tokens) or a confidential client (its own tokens).
/// Anything not live, or not the caller's to see, is `{"active": false}`.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "`token`, `token_type_hint`"),
    security(("bearer" = []), ("api_key" = []), ("client_secret_basic" = [])),
    responses((status = 200, description = "`active`, and for a live token `scope`, `client_id`, `sub`, `org_id`, `aud`, `exp`, …", body = Object),
        (status = 400, description = "`invalid_request`", body = Object),
        (status = 401, description = "`invalid_client`: no acceptable credential", body = Object),
        (status = 403, description = "`access_denied`: the API key lacks `keys:verify`", body = Object)))]
pub async fn introspect(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthReply> {
    let form = form_body(&headers, &body)?;
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            bearer_token(&headers)
                .filter(|t| state.keys.looks_like_key(t))
                .map(str::to_string)
        });
    let caller = if let Some(key) = key {
        let principal = crate::http::extract::key_principal(&state, key.trim(), &ip)
            .await
            .map_err(|_| OAuthReply::new(Protocol::InvalidClient, "the API key is not valid"))?;
        let Principal::ApiKey { key } = principal else {
            return Err(OAuthReply::new(
                Protocol::InvalidClient,
                "the API key is not valid",
            ));
        };
        if !key.scopes.iter().any(|s| s == "keys:verify") {
            return Err(OAuthReply::new(
                Protocol::AccessDenied,
                "the API key needs the keys:verify scope",
            ));
        }
        IntrospectionCaller::Key {
            org_id: key.org_id.clone(),
        }
    } else {
        let auth = client_auth(&headers, &form)?;
        if !matches!(auth, ClientAuth::Secret { .. }) {
            return Err(OAuthReply::new(
                Protocol::InvalidClient,
                "introspection needs an API key with keys:verify or a confidential client",
            ));
        }
        let client = state
            .oauth
            .authenticate_client(&auth)
            .await
            .map_err(|e| with_basic(e, &auth))?;
        IntrospectionCaller::Client {
            client_id: client.client_id,
        }
    };
    let token = form.get("token").unwrap_or_default();
    let answer = state.oauth.introspect(&caller, &token).await?;
    Ok(json_no_store(StatusCode::OK, answer))
}

async fn userinfo_of(state: &AppState, headers: &HeaderMap) -> Result<Response, OAuthReply> {
    let Some(token) = bearer_token(headers) else {
        return Err(OAuthReply::new(
            Protocol::InvalidToken,
            "send the access token as Authorization: Bearer",
        ));
    };
    let info = state.oauth.userinfo(token).await?;
    Ok(json_no_store(StatusCode::OK, info))
}

/// The person behind an OAuth access token (OpenID Connect): `sub`, `email` with the
/// `email` scope, `name` with `profile`.
#[utoipa::path(get, path = "/oauth/userinfo", tag = "oauth",
    security(("bearer" = [])),
    responses((status = 200, description = "`sub`, `email`, `email_verified`, `name`", body = Object),
        (status = 401, description = "`invalid_token`", body = Object)))]
pub async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, OAuthReply> {
    userinfo_of(&state, &headers).await
}

/// As `GET /oauth/userinfo`.
#[utoipa::path(post, path = "/oauth/userinfo", tag = "oauth",
    security(("bearer" = [])),
    responses((status = 200, description = "`sub`, `email`, `email_verified`, `name`", body = Object),
        (status = 401, description = "`invalid_token`", body = Object)))]
pub async fn userinfo_post(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, OAuthReply> {
    userinfo_of(&state, &headers).await
}

// ---------------------------------------------------------------------------------------
// /v1: connected apps and an organization's clients.

/// A person on `/v1`, never a key or an OAuth client: connected apps are the person's own.
fn person(principal: &Principal) -> Result<&str, ApiError> {
    match principal {
        Principal::User { user_id, .. } => Ok(user_id),
        #[allow(unreachable_patterns)]
        _ => Err(crate::orgs::Denied::NotAPerson.into()),
    }
}

/// The caller's connected apps: the live grants they gave OAuth clients.
#[utoipa::path(get, path = "/v1/me/oauth/grants", tag = "oauth",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "The grants, newest first", body = Envelope<Vec<GrantView>>),
        (status = 403, description = "`forbidden`: not a person (`details.required`: `user`)", body = ErrorEnvelope),
        errors::Auth))]
pub async fn list_grants(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Success<Vec<GrantView>>, ApiError> {
    let user = person(&principal)?;
    Ok(ok(state.oauth.grants_of(user).await?))
}

/// Revokes one of the caller's grants: its refresh tokens die at once, its access tokens at
/// their next use.
#[utoipa::path(delete, path = "/v1/me/oauth/grants/{id}", tag = "oauth",
    params(("id" = inline(OAuthGrantId), Path, description = "The grant")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "Revoked"),
        (status = 400, description = "`invalid_request`: a malformed id (`details.reason`: `malformed_id`)", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: not a person (`details.required`: `user`)", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: not the caller's, or already revoked", body = ErrorEnvelope),
        errors::Auth))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(id): Ids<OAuthGrantId>,
) -> Result<StatusCode, ApiError> {
    let user = person(&principal)?;
    state
        .oauth
        .revoke_grant_of(user, id.as_str(), Some(ip.0.to_string()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A client an organization registers.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    /// Shown on the consent page (1-100 characters).
    pub name: String,
    /// Where codes may go: https, loopback http, or a native app's own scheme.
    pub redirect_uris: Vec<String>,
    /// Whether the client gets a secret (a server-side application); default false.
    #[serde(default)]
    pub confidential: bool,
}

/// A new client: the secret is shown once.
#[derive(serde::Serialize, ToSchema)]
pub struct CreatedClient {
    /// The client.
    #[serde(flatten)]
    pub client: ClientInfo,
    /// The secret of a confidential client (shown once; stored as SHA-256 only).
    pub client_secret: Option<String>,
}

async fn admin_audit(
    state: &AppState,
    principal: &Principal,
    org: &OrgId,
    ip: &ClientIp,
) -> Result<Audit, ApiError> {
    let a = state.orgs.access(&actor(principal), org).await?;
    a.require_admin()?;
    let by = a.by(Some(ip.0.to_string()));
    Ok(Audit {
        actor: by.actor,
        ip: by.ip,
        now: state.edge.clock.now_ms(),
    })
}

/// The organization's own OAuth clients (owners and admins).
#[utoipa::path(get, path = "/v1/orgs/{org}/oauth/clients", tag = "oauth",
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "The clients, newest first", body = Envelope<Vec<ClientInfo>>),
        errors::Auth, errors::Org))]
pub async fn list_clients(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
) -> Result<Success<Vec<ClientInfo>>, ApiError> {
    admin_audit(&state, &principal, &org, &ip).await?;
    Ok(ok(state.oauth.admin_clients(org.as_str()).await?))
}

/// Registers a client for the organization (owners and admins); its grants can apply to
/// this organization only.
#[utoipa::path(post, path = "/v1/orgs/{org}/oauth/clients", tag = "oauth", request_body = NewClientBody,
    params(("org" = inline(OrgId), Path, description = "The organization")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 201, description = "The client, with its secret shown once", body = Envelope<CreatedClient>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn create_client(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<NewClientBody>,
) -> Result<Success<CreatedClient>, ApiError> {
    let audit = admin_audit(&state, &principal, &org, &ip).await?;
    let input = NewAdminClient {
        name: body.name,
        redirect_uris: body.redirect_uris,
        confidential: body.confidential,
    };
    let made = state
        .oauth
        .create_admin_client(org.as_str(), input, &audit)
        .await?;
    let list = state.oauth.admin_clients(org.as_str()).await?;
    let client = list
        .into_iter()
        .find(|c| c.client_id == made.client_id)
        .ok_or_else(|| ApiError::not_found("OAuth client"))?;
    Ok(created(CreatedClient {
        client,
        client_secret: made.client_secret,
    }))
}

/// Deletes one of the organization's clients; every grant to it ends.
#[utoipa::path(delete, path = "/v1/orgs/{org}/oauth/clients/{client_id}", tag = "oauth",
    params(("org" = inline(OrgId), Path, description = "The organization"),
        ("client_id" = inline(OAuthClientId), Path, description = "The client")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "Deleted"), errors::Auth, errors::Org))]
pub async fn delete_client(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, client)): Ids<(OrgId, OAuthClientId)>,
) -> Result<StatusCode, ApiError> {
    let audit = admin_audit(&state, &principal, &org, &ip).await?;
    state
        .oauth
        .delete_admin_client(org.as_str(), client.as_str(), &audit)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A per-IP limit of a JSON OAuth endpoint: over it `slow_down`, the limiter unavailable
/// `temporarily_unavailable` (the authorization endpoint answers a page instead).
async fn per_ip(
    state: &AppState,
    policy: Policy,
    ip: &ClientIp,
    over: &'static str,
) -> Result<(), OAuthReply> {
    match state.limits.ip(policy, &ip.key()).await {
        Ok(d) if d.allowed => Ok(()),
        Ok(_) => Err(OAuthReply::new(Protocol::SlowDown, over)),
        Err(_) => Err(OAuthReply::new(
            Protocol::TemporarilyUnavailable,
            "rate limiting is unavailable; retry shortly",
        )),
    }
}
