//! Clients: dynamic registration (RFC 7591), Client ID Metadata Documents (an https
//! `client_id` whose JSON document is fetched through the webhooks' SSRF guard and cached by
//! its HTTP caching headers), organization admins' clients, and client authentication at the
//! token, revocation and introspection endpoints.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{redirect, scopes, OAuth, OAuthError, Protocol};
use crate::auth::tokens::{ct_eq, random_token, sha256_hex};
use crate::config::Config;
use crate::ids::OAuthClientId;
use crate::store::{Audit, OAuthClientRow, StoreError};
use crate::webhooks::ssrf;

/// Most redirect URIs one client registers.
const MAX_REDIRECT_URIS: usize = 10;
/// The largest metadata document read.
const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// A metadata document is fetched again after at least this long, at most this long.
const DOCUMENT_MIN_SECONDS: i64 = 300;
const DOCUMENT_MAX_SECONDS: i64 = 86_400;
/// Without caching headers, a metadata document is kept this long.
const DOCUMENT_DEFAULT_SECONDS: i64 = 3_600;

/// What a client presented to authenticate itself at the token, revocation or
/// introspection endpoint.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// Nothing: no client was named.
    Nothing,
    /// A public client naming itself (`client_id` in the form).
    Public(String),
    /// `client_secret_basic` or `client_secret_post`.
    Secret {
        /// The client id.
        client_id: String,
        /// The secret as sent.
        secret: String,
        /// Whether it came in `Authorization: Basic` (the 401 then names the scheme).
        basic: bool,
    },
}

/// What a registration answers (RFC 7591 section 3.2.1) and what an admin sees once.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The new client id.
    pub client_id: String,
    /// The secret, shown once; `None` for a public client.
    pub client_secret: Option<String>,
    /// Unix seconds.
    pub issued_at: i64,
    /// The accepted metadata, echoed.
    pub metadata: Value,
}

impl Registered {
    /// The RFC 7591 response body.
    pub fn body(&self) -> Value {
        let mut body = match &self.metadata {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        body.insert("client_id".into(), json!(self.client_id));
        body.insert("client_id_issued_at".into(), json!(self.issued_at));
        if let Some(secret) = &self.client_secret {
            body.insert("client_secret".into(), json!(secret));
            body.insert("client_secret_expires_at".into(), json!(0));
        }
        Value::Object(body)
    }
}

/// A client as the consent page and the admin list show it (never its secret).
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ClientInfo {
    /// `oac_…`, or the metadata document's URL.
    pub client_id: String,
    /// Its name.
    pub name: String,
    /// `dynamic`, `metadata_document` or `admin`.
    pub kind: String,
    /// The registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Whether it authenticates with a secret.
    pub confidential: bool,
    /// The organization of an admin-registered client.
    pub org_id: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

impl From<&OAuthClientRow> for ClientInfo {
    fn from(c: &OAuthClientRow) -> Self {
        ClientInfo {
            client_id: c.client_id.clone(),
            name: c.name.clone(),
            kind: c.kind.clone(),
            redirect_uris: redirect_list(c),
            confidential: c.secret_hash.is_some(),
            org_id: c.org_id.clone(),
            created_at: c.created_at,
        }
    }
}

/// What an organization admin registers.
#[derive(Clone, Debug)]
pub struct NewAdminClient {
    /// Shown on the consent page.
    pub name: String,
    /// Where codes may go.
    pub redirect_uris: Vec<String>,
    /// Whether it gets a secret.
    pub confidential: bool,
}

/// The registered redirect URIs of a client.
pub(super) fn redirect_list(c: &OAuthClientRow) -> Vec<String> {
    serde_json::from_str(&c.redirect_uris).unwrap_or_default()
}

/// The grant types a client registered (`authorization_code` when it said nothing).
pub(super) fn grant_types(c: &OAuthClientRow) -> Vec<String> {
    if c.kind == "admin" {
        return vec!["authorization_code".into(), "refresh_token".into()];
    }
    serde_json::from_str::<Value>(&c.metadata)
        .ok()
        .and_then(|m| m.get("grant_types").cloned())
        .and_then(|g| serde_json::from_value::<Vec<String>>(g).ok())
        .unwrap_or_else(|| vec!["authorization_code".into()])
}

/// The scope a client registered, if any.
pub(super) fn registered_scope(c: &OAuthClientRow) -> Option<String> {
    serde_json::from_str::<Value>(&c.metadata)
        .ok()
        .and_then(|m| m.get("scope").and_then(Value::as_str).map(str::to_string))
}

fn invalid_metadata(why: impl Into<String>) -> OAuthError {
    OAuthError::protocol(Protocol::InvalidClientMetadata, why)
}

/// Reads an optional string field of at most `max` characters without control characters.
fn text_field(m: &Map<String, Value>, name: &str, max: usize) -> Result<Option<String>, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max || s.chars().any(char::is_control) {
                Err(format!(
                    "{name} must be at most {max} characters, without control characters"
                ))
            } else if s.trim().is_empty() {
                Ok(None)
            } else {
                Ok(Some(s.trim().to_string()))
            }
        }
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// Reads an optional http(s) URL field.
fn url_field(m: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    let Some(s) = text_field(m, name, redirect::MAX_LEN)? else {
        return Ok(None);
    };
    match url::Url::parse(&s) {
        Ok(u) if matches!(u.scheme(), "https" | "http") => Ok(Some(s)),
        _ => Err(format!("{name} must be an http(s) URL")),
    }
}

fn string_list(m: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{name} must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{name} must be an array of strings")),
    }
}

/// Checks client metadata (a registration body or a metadata document) and answers the
/// accepted metadata, the redirect URIs, the name and the token endpoint auth method.
struct Checked {
    metadata: Map<String, Value>,
    redirect_uris: Vec<String>,
    name: String,
    auth_method: String,
}

fn check_metadata(body: &Value, default_auth: &str) -> Result<Checked, OAuthError> {
    let Some(m) = body.as_object() else {
        return Err(invalid_metadata(
            "the client metadata must be a JSON object",
        ));
    };
    let uris = string_list(m, "redirect_uris")
        .map_err(invalid_metadata)?
        .unwrap_or_default();
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::protocol(
            Protocol::InvalidRedirectUri,
            format!("redirect_uris must hold 1 to {MAX_REDIRECT_URIS} URIs"),
        ));
    }
    for u in &uris {
        redirect::check(u).map_err(|e| OAuthError::protocol(Protocol::InvalidRedirectUri, e))?;
    }
    let auth_method = text_field(m, "token_endpoint_auth_method", 64)
        .map_err(invalid_metadata)?
        .unwrap_or_else(|| default_auth.to_string());
    if !matches!(
        auth_method.as_str(),
        "none" | "client_secret_basic" | "client_secret_post"
    ) {
        return Err(invalid_metadata(
            "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post",
        ));
    }
    let grant_types = string_list(m, "grant_types")
        .map_err(invalid_metadata)?
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    if !grant_types.iter().any(|g| g == "authorization_code")
        || grant_types
            .iter()
            .any(|g| g != "authorization_code" && g != "refresh_token")
    {
        return Err(invalid_metadata(
            "grant_types must include authorization_code and may add refresh_token only",
        ));
    }
    let response_types = string_list(m, "response_types")
        .map_err(invalid_metadata)?
        .unwrap_or_else(|| vec!["code".into()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(invalid_metadata("response_types must be [\"code\"]"));
    }
    let name = text_field(m, "client_name", 100).map_err(invalid_metadata)?;
    let scope = text_field(m, "scope", 1000).map_err(invalid_metadata)?;
    if let Some(s) = &scope {
        scopes::parse(s).map_err(|e| invalid_metadata(format!("scope: {e}")))?;
    }
    let mut out = Map::new();
    out.insert("redirect_uris".into(), json!(uris));
    out.insert("token_endpoint_auth_method".into(), json!(auth_method));
    out.insert("grant_types".into(), json!(grant_types));
    out.insert("response_types".into(), json!(response_types));
    if let Some(n) = &name {
        out.insert("client_name".into(), json!(n));
    }
    if let Some(s) = &scope {
        out.insert("scope".into(), json!(s));
    }
    for field in ["client_uri", "logo_uri", "tos_uri", "policy_uri"] {
        if let Some(u) = url_field(m, field).map_err(invalid_metadata)? {
            out.insert(field.into(), json!(u));
        }
    }
    for field in ["software_id", "software_version"] {
        if let Some(v) = text_field(m, field, 200).map_err(invalid_metadata)? {
            out.insert(field.into(), json!(v));
        }
    }
    if let Some(c) = string_list(m, "contacts").map_err(invalid_metadata)? {
        if c.len() > 10 || c.iter().any(|x| x.len() > 320) {
            return Err(invalid_metadata("contacts: at most 10 addresses"));
        }
        out.insert("contacts".into(), json!(c));
    }
    Ok(Checked {
        metadata: out,
        redirect_uris: uris,
        name: name.unwrap_or_else(|| "Unnamed application".into()),
        auth_method,
    })
}

/// Fetches Client ID Metadata Documents through the webhooks' SSRF guard: no redirects, a
/// resolver that refuses internal addresses, a short timeout and a small body.
#[derive(Clone)]
pub struct MetadataFetcher {
    client: reqwest::Client,
    allow_private: bool,
    lookup: ssrf::Lookup,
}

impl MetadataFetcher {
    /// From the webhook settings (`webhooks_allow_private`, `webhooks_dns_server`, dev mode).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let allow_private = config.webhooks_private_allowed();
        let lookup = ssrf::Lookup::new(config.webhooks_dns_server);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(ssrf::GuardedResolver {
                allow_private,
                lookup: lookup.clone(),
            }))
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("Gatehouse-OAuth/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            allow_private,
            lookup,
        })
    }

    /// Whether `client_id` names a metadata document (an https URL; http too where private
    /// targets are allowed, for development).
    pub fn is_document_id(&self, client_id: &str) -> bool {
        client_id.starts_with("https://")
            || (self.allow_private && client_id.starts_with("http://"))
    }

    /// Fetches and reads a document: its JSON and how many seconds it may be kept.
    async fn fetch(&self, client_id: &str) -> Result<(Value, i64), String> {
        let u = ssrf::parse(client_id)?;
        if u.as_str() != client_id {
            return Err("the client_id URL is not in its normal form".into());
        }
        if u.path() == "/" || u.fragment().is_some() || !u.username().is_empty() {
            return Err("the client_id URL must have a path and no fragment or credentials".into());
        }
        ssrf::check(&u, self.allow_private, &self.lookup)
            .await
            .map_err(|e| format!("the client_id URL {e}"))?;
        ssrf::check_literal(&u, self.allow_private)?;
        let mut res = self
            .client
            .get(u)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|_| "the client metadata document could not be fetched".to_string())?;
        if res.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "fetching the client metadata document answered {}",
                res.status().as_u16()
            ));
        }
        let keep = res
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(max_age)
            .unwrap_or(DOCUMENT_DEFAULT_SECONDS);
        let mut body = Vec::new();
        loop {
            match res.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_DOCUMENT_BYTES {
                        return Err(format!(
                            "the client metadata document is larger than {MAX_DOCUMENT_BYTES} bytes"
                        ));
                    }
                }
                Ok(None) => break,
                Err(_) => return Err("the client metadata document could not be read".into()),
            }
        }
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|_| "the client metadata document is not JSON".to_string())?;
        Ok((doc, keep))
    }
}

/// Seconds a document may be kept, from `Cache-Control`: `no-store`/`no-cache` the least,
/// `max-age` within bounds, else the default.
fn max_age(cache_control: &str) -> i64 {
    let mut age = None;
    for d in cache_control.split(',').map(str::trim) {
        let d = d.to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return DOCUMENT_MIN_SECONDS;
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse::<i64>().ok();
        }
    }
    age.unwrap_or(DOCUMENT_DEFAULT_SECONDS)
        .clamp(DOCUMENT_MIN_SECONDS, DOCUMENT_MAX_SECONDS)
}

impl OAuth {
    /// Registers a client dynamically (RFC 7591). The caller checked the registration
    /// setting and the per-IP limit.
    pub async fn register(&self, body: &Value) -> Result<Registered, OAuthError> {
        let c = check_metadata(body, "client_secret_basic")?;
        let now = self.clock.now_ms();
        let client_id = OAuthClientId::new().into_string();
        let secret = (c.auth_method != "none").then(|| random_token(32));
        let row = OAuthClientRow {
            client_id: client_id.clone(),
            secret_hash: secret.as_deref().map(sha256_hex),
            name: c.name,
            redirect_uris: json!(c.redirect_uris).to_string(),
            kind: "dynamic".into(),
            org_id: None,
            metadata: Value::Object(c.metadata.clone()).to_string(),
            created_by: None,
            created_at: now,
            refresh_at: None,
        };
        self.store.insert_oauth_client(&row, None).await?;
        Ok(Registered {
            client_id,
            client_secret: secret,
            issued_at: now / 1000,
            metadata: Value::Object(c.metadata),
        })
    }

    /// The client an authorization request names: a stored client, or a metadata document
    /// fetched (again, once its cache time has passed). `Err` with a description a person
    /// can read: the request is refused before any redirect.
    pub(super) async fn client_for_authorize(
        &self,
        client_id: &str,
    ) -> Result<OAuthClientRow, OAuthError> {
        let stored = self.store.oauth_client(client_id).await?;
        let now = self.clock.now_ms();
        match stored {
            Some(c) if c.kind != "metadata_document" => Ok(c),
            Some(c) if c.refresh_at.is_some_and(|r| r > now) => Ok(c),
            _ if self.fetcher.is_document_id(client_id) => self.load_document(client_id).await,
            _ => Err(OAuthError::protocol(
                Protocol::InvalidClient,
                "unknown client_id",
            )),
        }
    }

    async fn load_document(&self, client_id: &str) -> Result<OAuthClientRow, OAuthError> {
        let refuse = |why: String| OAuthError::protocol(Protocol::InvalidClient, why);
        let (doc, keep) = self.fetcher.fetch(client_id).await.map_err(refuse)?;
        if doc.get("client_id").and_then(Value::as_str) != Some(client_id) {
            return Err(refuse(
                "the client metadata document's client_id is not its own URL".into(),
            ));
        }
        if doc.get("client_secret").is_some() || doc.get("client_secret_expires_at").is_some() {
            return Err(refuse(
                "a client metadata document must not hold a client secret".into(),
            ));
        }
        let c = check_metadata(&doc, "none").map_err(|e| match e {
            OAuthError::Protocol(_, d) => refuse(format!("client metadata document: {d}")),
            other => other,
        })?;
        if c.auth_method != "none" {
            return Err(refuse(
                "a client known by its metadata document is public: token_endpoint_auth_method \
                 must be none"
                    .into(),
            ));
        }
        let now = self.clock.now_ms();
        let row = OAuthClientRow {
            client_id: client_id.to_string(),
            secret_hash: None,
            name: c.name,
            redirect_uris: json!(c.redirect_uris).to_string(),
            kind: "metadata_document".into(),
            org_id: None,
            metadata: Value::Object(c.metadata).to_string(),
            created_by: None,
            created_at: now,
            refresh_at: Some(now + keep * 1000),
        };
        self.store.upsert_metadata_client(&row).await?;
        Ok(row)
    }

    /// Authenticates the client at the token, revocation or introspection endpoint: a
    /// confidential client by its secret (compared as SHA-256 in constant time), a public
    /// client by its id alone. Every failure is `invalid_client`.
    pub async fn authenticate_client(
        &self,
        auth: &ClientAuth,
    ) -> Result<OAuthClientRow, OAuthError> {
        let refuse = |d: &str| OAuthError::protocol(Protocol::InvalidClient, d);
        let (client_id, secret) = match auth {
            ClientAuth::Nothing => return Err(refuse("client authentication is required")),
            ClientAuth::Public(id) => (id.as_str(), None),
            ClientAuth::Secret {
                client_id, secret, ..
            } => (client_id.as_str(), Some(secret.as_str())),
        };
        let Some(client) = self.store.oauth_client(client_id).await? else {
            // The same work as a known client, so the answer's timing names no client.
            let _ = ct_eq(&sha256_hex(secret.unwrap_or_default()), &"0".repeat(64));
            return Err(refuse("client authentication failed"));
        };
        match (&client.secret_hash, secret) {
            (Some(hash), Some(s)) if ct_eq(&sha256_hex(s), hash) => Ok(client),
            (None, None) => Ok(client),
            _ => Err(refuse("client authentication failed")),
        }
    }

    /// Registers a client for an organization (its admins decided; the caller checked).
    pub async fn create_admin_client(
        &self,
        org_id: &str,
        input: NewAdminClient,
        audit: &Audit,
    ) -> Result<Registered, OAuthError> {
        let name = input.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(OAuthError::Invalid(
                "name",
                "must be 1 to 100 characters, without control characters".into(),
            ));
        }
        if input.redirect_uris.is_empty() || input.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(OAuthError::Invalid(
                "redirect_uris",
                format!("must hold 1 to {MAX_REDIRECT_URIS} URIs"),
            ));
        }
        for u in &input.redirect_uris {
            redirect::check(u).map_err(|e| OAuthError::Invalid("redirect_uris", e))?;
        }
        let client_id = OAuthClientId::new().into_string();
        let secret = input.confidential.then(|| random_token(32));
        let auth_method = if input.confidential {
            "client_secret_basic"
        } else {
            "none"
        };
        let metadata = json!({
            "client_name": name,
            "redirect_uris": input.redirect_uris,
            "token_endpoint_auth_method": auth_method,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        });
        let row = OAuthClientRow {
            client_id: client_id.clone(),
            secret_hash: secret.as_deref().map(sha256_hex),
            name,
            redirect_uris: json!(input.redirect_uris).to_string(),
            kind: "admin".into(),
            org_id: Some(org_id.to_string()),
            metadata: metadata.to_string(),
            created_by: Some(audit.actor.clone()),
            created_at: audit.now,
            refresh_at: None,
        };
        self.store.insert_oauth_client(&row, Some(audit)).await?;
        Ok(Registered {
            client_id,
            client_secret: secret,
            issued_at: audit.now / 1000,
            metadata,
        })
    }

    /// An organization's clients.
    pub async fn admin_clients(&self, org_id: &str) -> Result<Vec<ClientInfo>, OAuthError> {
        Ok(self
            .store
            .oauth_clients_of_org(org_id)
            .await?
            .iter()
            .map(ClientInfo::from)
            .collect())
    }

    /// Deletes an organization's client; every grant to it ends.
    pub async fn delete_admin_client(
        &self,
        org_id: &str,
        client_id: &str,
        audit: &Audit,
    ) -> Result<(), OAuthError> {
        let ended = match self
            .store
            .delete_oauth_client(org_id, client_id, audit)
            .await
        {
            Err(StoreError::NotFound) => return Err(OAuthError::NotFound("OAuth client")),
            other => other?,
        };
        for grant in ended {
            self.bus
                .invalidate(crate::fanout::Invalidation::OAuthGrant(grant))
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_bounds_the_document_lifetime() {
        assert_eq!(max_age("max-age=600"), 600);
        assert_eq!(max_age("public, max-age=5"), DOCUMENT_MIN_SECONDS);
        assert_eq!(max_age("max-age=9999999"), DOCUMENT_MAX_SECONDS);
        assert_eq!(max_age("no-store"), DOCUMENT_MIN_SECONDS);
        assert_eq!(max_age("private"), DOCUMENT_DEFAULT_SECONDS);
    }

    #[test]
    fn metadata_is_checked() {
        let ok = json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "client_name": "Tool"});
        let c = check_metadata(&ok, "client_secret_basic").unwrap();
        assert_eq!(c.auth_method, "none");
        assert_eq!(c.name, "Tool");
        for bad in [
            json!({"redirect_uris": []}),
            json!({"redirect_uris": ["http://evil.example/cb"]}),
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]}),
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
            json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
            json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
            json!({"redirect_uris": ["https://a.example/cb"], "scope": "keys:write"}),
            json!([1]),
        ] {
            assert!(check_metadata(&bad, "none").is_err(), "{bad}");
        }
    }
}
