//! Talking to a provider: OpenID Connect discovery and JWKS (cached), the code exchange, the
//! ID token's checks, and a plain OAuth 2 provider's userinfo.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::tokens::ct_eq;
use crate::config::{ExternalProvider, ProviderKind};

use super::ExternalError;

/// The endpoints of an OpenID provider, from its discovery document.
#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The provider's signing keys.
    pub jwks_uri: String,
    /// Claims not in the ID token are read here.
    pub userinfo_endpoint: Option<String>,
}

/// What the token endpoint answered.
#[derive(Deserialize)]
pub struct TokenAnswer {
    /// The provider's access token (for userinfo; handed to the client as `provider_token`).
    pub access_token: String,
    /// The provider's refresh token, if it gave one.
    pub refresh_token: Option<String>,
    /// OpenID Connect: the ID token.
    pub id_token: Option<String>,
}

/// The person as the provider described them.
#[derive(Debug)]
pub struct Person {
    /// The provider's stable id (`sub`).
    pub sub: String,
    /// The address, as given.
    pub email: Option<String>,
    /// Whether the provider says it verified the address.
    pub email_verified: bool,
    /// The claims, for `identity_data`.
    pub claims: Map<String, Value>,
}

/// Algorithms an ID token may be signed with: asymmetric ones only (a shared-secret HS256
/// token would be signed with the client secret, which Gatehouse does not accept).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Seconds of clock difference tolerated on `exp`.
const LEEWAY_SECS: i64 = 60;
/// Least time between two JWKS fetches forced by an unknown `kid`.
const JWKS_REFETCH: Duration = Duration::from_secs(30);
/// Bytes of a provider answer read at most.
const MAX_ANSWER: usize = 256 * 1024;

/// HTTP to providers, with the discovery documents and key sets cached.
pub struct Providers {
    http: reqwest::Client,
    discovery: moka::future::Cache<String, Arc<Discovery>>,
    jwks: moka::future::Cache<String, Arc<JwkSet>>,
    forced: Mutex<HashMap<String, Instant>>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ExternalError {
    tracing::warn!(error = %e, "external provider: {what}");
    ExternalError::ProviderUnavailable
}

async fn json_body<T: serde::de::DeserializeOwned>(
    res: reqwest::Response,
    what: &str,
) -> Result<T, ExternalError> {
    let status = res.status();
    let bytes = res.bytes().await.map_err(|e| unavailable(what, e))?;
    if bytes.len() > MAX_ANSWER {
        return Err(unavailable(what, "answer too large"));
    }
    if !status.is_success() {
        return Err(if status.is_client_error() {
            tracing::info!(%status, "external provider refused: {what}");
            ExternalError::ExchangeRefused
        } else {
            unavailable(what, status)
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| unavailable(what, e))
}

impl Providers {
    /// A client with a 10-second timeout that follows no redirect.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
                .build()?,
            discovery: moka::future::Cache::builder()
                .max_capacity(256)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            jwks: moka::future::Cache::builder()
                .max_capacity(256)
                .time_to_live(Duration::from_secs(600))
                .build(),
            forced: Mutex::new(HashMap::new()),
        })
    }

    /// The discovery document of an OpenID provider (cached for an hour).
    pub async fn discovery(&self, p: &ExternalProvider) -> Result<Arc<Discovery>, ExternalError> {
        let issuer = p.issuer.as_deref().unwrap_or("").trim_end_matches('/');
        if let Some(d) = self.discovery.get(issuer).await {
            return Ok(d);
        }
        let url = format!("{issuer}/.well-known/openid-configuration");
        let res = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable("discovery", e))?;
        let d: Discovery = json_body(res, "discovery")
            .await
            .map_err(|_| ExternalError::ProviderUnavailable)?;
        if d.issuer.trim_end_matches('/') != issuer {
            return Err(unavailable(
                "discovery",
                "its issuer is not the configured one",
            ));
        }
        let d = Arc::new(d);
        self.discovery.insert(issuer.to_string(), d.clone()).await;
        Ok(d)
    }

    async fn key_set(&self, uri: &str, force: bool) -> Result<Arc<JwkSet>, ExternalError> {
        if !force {
            if let Some(k) = self.jwks.get(uri).await {
                return Ok(k);
            }
        }
        let res = self
            .http
            .get(uri)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable("jwks", e))?;
        let set: JwkSet = json_body(res, "jwks")
            .await
            .map_err(|_| ExternalError::ProviderUnavailable)?;
        let set = Arc::new(set);
        self.jwks.insert(uri.to_string(), set.clone()).await;
        Ok(set)
    }

    /// Whether an unknown `kid` may fetch the key set again now (at most every 30 s).
    fn may_refetch(&self, uri: &str) -> bool {
        let Ok(mut forced) = self.forced.lock() else {
            return false;
        };
        let now = Instant::now();
        match forced.get(uri) {
            Some(at) if now.duration_since(*at) < JWKS_REFETCH => false,
            _ => {
                forced.insert(uri.to_string(), now);
                true
            }
        }
    }

    /// Exchanges the code at the token endpoint, with the PKCE verifier. OpenID providers get
    /// the client's credentials as HTTP Basic (RFC 6749, 2.3.1); plain OAuth 2 providers in
    /// the form (GitHub's way).
    pub async fn exchange(
        &self,
        p: &ExternalProvider,
        token_url: &str,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenAnswer, ExternalError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let secret = p.client_secret.as_ref().map(|s| s.expose_secret());
        let mut req = self
            .http
            .post(token_url)
            .header(reqwest::header::ACCEPT, "application/json");
        match (p.kind, secret) {
            (ProviderKind::Oidc, Some(secret)) => {
                // RFC 6749, 2.3.1: each part form-urlencoded before Basic.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req = req.basic_auth(enc(&p.client_id), Some(enc(secret)));
            }
            (_, secret) => {
                form.push(("client_id", &p.client_id));
                if let Some(secret) = secret {
                    form.push(("client_secret", secret));
                }
            }
        }
        let res = req
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable("token exchange", e))?;
        json_body(res, "token exchange").await
    }

    /// Checks an ID token: an asymmetric signature by a key of the provider's JWKS, `iss`,
    /// `aud` (the client id; `azp` too when there are several audiences), `exp` (with a minute
    /// of leeway, by the injected clock) and `nonce` (the one this flow sent).
    pub async fn verify_id_token(
        &self,
        p: &ExternalProvider,
        d: &Discovery,
        token: &str,
        nonce: &str,
        now_secs: i64,
    ) -> Result<Map<String, Value>, ExternalError> {
        let bad = ExternalError::IdToken;
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(bad("algorithm"));
        }
        let mut set = self.key_set(&d.jwks_uri, false).await?;
        let find = |set: &JwkSet| match &header.kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let jwk = match find(&set) {
            Some(k) => k,
            None if self.may_refetch(&d.jwks_uri) => {
                set = self.key_set(&d.jwks_uri, true).await?;
                find(&set).ok_or(bad("key"))?
            }
            None => return Err(bad("key")),
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| bad("key"))?;
        let issuer = d.issuer.clone();
        let mut v = Validation::new(header.alg);
        v.validate_exp = false;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.set_issuer(&[issuer]);
        v.set_audience(std::slice::from_ref(&p.client_id));
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            bad(match e.kind() {
                K::InvalidSignature => "signature",
                K::InvalidIssuer => "issuer",
                K::InvalidAudience => "audience",
                K::InvalidAlgorithm => "algorithm",
                _ => "malformed",
            })
        })?;
        let claims = data.claims;
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(bad("malformed"))?;
        if exp + LEEWAY_SECS <= now_secs {
            return Err(bad("expired"));
        }
        if claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1)
            && claims.get("azp").and_then(Value::as_str) != Some(p.client_id.as_str())
        {
            return Err(bad("audience"));
        }
        match claims.get("nonce").and_then(Value::as_str) {
            Some(n) if ct_eq(n, nonce) => Ok(claims),
            _ => Err(bad("nonce")),
        }
    }

    async fn get_json(
        &self,
        url: &str,
        access_token: &str,
        what: &str,
    ) -> Result<Value, ExternalError> {
        let res = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable(what, e))?;
        json_body(res, what).await
    }

    /// The person of an OpenID sign-in: the ID token's claims, completed from userinfo (whose
    /// `sub` must be the token's) when the token carries no address.
    pub async fn oidc_person(
        &self,
        d: &Discovery,
        mut claims: Map<String, Value>,
        access_token: &str,
    ) -> Result<Person, ExternalError> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(ExternalError::IdToken("malformed"))?
            .to_string();
        if claims.get("email").is_none() {
            if let Some(url) = &d.userinfo_endpoint {
                let info = self.get_json(url, access_token, "userinfo").await?;
                if info.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
                    return Err(ExternalError::IdToken("userinfo"));
                }
                if let Value::Object(info) = info {
                    for (k, v) in info {
                        claims.entry(k).or_insert(v);
                    }
                }
            }
        }
        for k in [
            "aud",
            "exp",
            "iat",
            "nonce",
            "at_hash",
            "c_hash",
            "auth_time",
            "azp",
            "sid",
            "acr",
            "amr",
        ] {
            claims.remove(k);
        }
        Ok(Person {
            email: claims
                .get("email")
                .and_then(Value::as_str)
                .map(str::to_string),
            email_verified: verified(claims.get("email_verified")),
            sub,
            claims,
        })
    }

    /// The person of a plain OAuth 2 sign-in, from `userinfo_url` (and `emails_url`).
    pub async fn oauth2_person(
        &self,
        p: &ExternalProvider,
        access_token: &str,
    ) -> Result<Person, ExternalError> {
        let url = p.userinfo_url.as_deref().unwrap_or("");
        let info = self.get_json(url, access_token, "userinfo").await?;
        let Value::Object(mut claims) = info else {
            return Err(ExternalError::Profile);
        };
        let sub = match claims.get(&p.id_field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(ExternalError::Profile),
        };
        let mut email = claims
            .get(&p.email_field)
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut email_verified = p
            .email_verified_field
            .as_ref()
            .is_some_and(|f| verified(claims.get(f)));
        if let Some(url) = &p.emails_url {
            #[derive(Deserialize)]
            struct Listed {
                email: String,
                #[serde(default)]
                primary: bool,
                #[serde(default)]
                verified: bool,
            }
            let list = self.get_json(url, access_token, "emails").await?;
            let list: Vec<Listed> =
                serde_json::from_value(list).map_err(|_| ExternalError::Profile)?;
            let best = list.iter().filter(|e| e.verified).max_by_key(|e| e.primary);
            if let Some(e) = best {
                email = Some(e.email.clone());
                email_verified = true;
            } else if email.is_none() {
                email = list.first().map(|e| e.email.clone());
            }
        }
        claims.insert("sub".into(), Value::String(sub.clone()));
        Ok(Person {
            sub,
            email,
            email_verified,
            claims,
        })
    }
}

/// `true`, or the string `"true"` (some providers send it so).
fn verified(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}
