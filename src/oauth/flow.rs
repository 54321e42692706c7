//! The authorization-code flow with PKCE S256, consent, tokens, revocation, introspection
//! and userinfo.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::clients::{grant_types, redirect_list, registered_scope, ClientAuth};
use super::{redirect, scopes, ActiveGrant, OAuth, OAuthError, Protocol, REQUEST_SECONDS};
use crate::auth::jwt::AccessClaims;
use crate::auth::tokens::{ct_eq, random_token, sha256_hex};
use crate::ids::{OAuthGrantId, OAuthRequestId};
use crate::store::{Audit, NewCode, NewRefresh, OAuthClientRow, OAuthRequestRow, StoreError};

/// The query of `GET /oauth/authorize`.
#[derive(Clone, Debug, Default)]
pub struct AuthorizeParams {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// Where the answer goes; may be left out when the client registered exactly one.
    pub redirect_uri: Option<String>,
    /// Space-separated scopes; the client's registered scope when left out.
    pub scope: Option<String>,
    /// Returned as is.
    pub state: Option<String>,
    /// PKCE: base64url of SHA-256 of the verifier.
    pub code_challenge: Option<String>,
    /// PKCE: must be `S256`.
    pub code_challenge_method: Option<String>,
    /// RFC 8707 resource indicators (at most one); `{public_url}/v1` when none.
    pub resource: Vec<String>,
    /// OpenID Connect nonce, put in the ID token.
    pub nonce: Option<String>,
    /// OpenID Connect prompt: `none`, `consent`, `login`.
    pub prompt: Option<String>,
}

/// The person signed in to the dashboard while authorizing: who, and at which level.
#[derive(Clone, Copy, Debug)]
pub struct SignedIn<'a> {
    /// The user's id.
    pub user_id: &'a str,
    /// Whether the session is at aal2 (a second factor was verified).
    pub aal2: bool,
}

impl SignedIn<'_> {
    fn aal(&self) -> &'static str {
        if self.aal2 {
            "aal2"
        } else {
            "aal1"
        }
    }
}

/// What `GET /oauth/authorize` answers.
#[derive(Debug)]
pub enum Authorized {
    /// Refused before the redirect URI could be trusted: a page, not a redirect.
    Page(OAuthError),
    /// Redirect there: to the client (a code or an error) or to the consent page.
    Redirect(String),
}

/// An organization the person may pick on the consent page.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OrgChoice {
    /// `org_…`.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The client as the consent page names it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ConsentClient {
    /// The client id.
    pub client_id: String,
    /// Its name (chosen by whoever registered it).
    pub name: String,
    /// The host of its metadata document (its `client_id` URL), the one name the client
    /// cannot choose freely; `null` for registered clients.
    pub metadata_host: Option<String>,
    /// Where the answer goes.
    pub redirect_uri: String,
    /// `dynamic`, `metadata_document` or `admin`.
    pub kind: String,
}

/// One scope with words for a person.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ScopeDetail {
    /// The scope.
    pub scope: String,
    /// What it allows.
    pub description: String,
}

/// What the consent page shows.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ConsentView {
    /// The request.
    pub id: String,
    /// The client asking.
    pub client: ConsentClient,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// The same, with words for a person.
    pub scope_details: Vec<ScopeDetail>,
    /// The resource the tokens will be for.
    pub resource: String,
    /// The organizations the grant may apply to.
    pub orgs: Vec<OrgChoice>,
    /// Unix ms after which the request is gone.
    pub expires_at: i64,
}

/// The person's decision on the consent page.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Grant the scopes in this organization.
    Approve {
        /// `org_…`.
        org_id: String,
    },
    /// Refuse.
    Deny,
}

/// A `POST /oauth/token` form.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// `authorization_code` or `refresh_token`.
    pub grant_type: Option<String>,
    /// The code.
    pub code: Option<String>,
    /// When sent with a code, must be the one the code was sent to.
    pub redirect_uri: Option<String>,
    /// PKCE verifier.
    pub code_verifier: Option<String>,
    /// The refresh token.
    pub refresh_token: Option<String>,
    /// A narrower scope (refresh).
    pub scope: Option<String>,
    /// RFC 8707 resource indicators (at most one).
    pub resource: Vec<String>,
}

/// A successful token response (RFC 6749 section 5.1).
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The access token (an RFC 9068 JWT).
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// With `offline_access`: the refresh token (rotated at each use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// With `openid`: an OpenID Connect ID token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// Who asks `POST /oauth/introspect`.
#[derive(Clone, Debug)]
pub enum IntrospectionCaller {
    /// An organization API key with `keys:verify`: sees tokens of its organization.
    Key {
        /// The key's organization.
        org_id: String,
    },
    /// A confidential client: sees its own tokens.
    Client {
        /// Its id.
        client_id: String,
    },
}

/// An introspection answer (RFC 7662): `{"active": false}` or the token's facts.
pub type Introspected = Value;

/// A userinfo answer (OpenID Connect core 5.3).
pub type UserInfo = Value;

fn redirect_error(p: Protocol, d: impl Into<String>) -> OAuthError {
    OAuthError::protocol(p, d)
}

/// `redirect_uri` with `pairs` added to its query.
fn with_query(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => redirect_uri.to_string(),
    }
}

/// Whether a PKCE verifier (RFC 7636 section 4.1) hashes to the challenge.
fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && ct_eq(&URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)), challenge)
}

/// What a token is issued for: the resource, the scopes, and the assurance level of the
/// consent its code (or first code, for a refresh) was issued on.
#[derive(Clone, Copy)]
struct Issued<'a> {
    resource: &'a str,
    scopes: &'a [String],
    aal: &'a str,
}

fn too_long(v: &Option<String>, max: usize) -> bool {
    v.as_ref().is_some_and(|s| s.len() > max)
}

impl OAuth {
    /// The resource a request names: one of Gatehouse's (a trailing slash forgiven), or
    /// `default` when none is named; `invalid_target` otherwise.
    /// The resource of a token made from a code or a refresh token: the one the person
    /// consented to (RFC 8707 lets a client name it again, never swap it for another).
    fn bound_resource(&self, asked: &[String], granted: &str) -> Result<String, OAuthError> {
        let resource = self.pick_resource(asked, granted)?;
        if resource != granted {
            return Err(OAuthError::protocol(
                Protocol::InvalidTarget,
                format!("this grant is for the resource {granted}"),
            ));
        }
        Ok(resource)
    }

    fn pick_resource(&self, asked: &[String], default: &str) -> Result<String, OAuthError> {
        match asked {
            [] => Ok(default.to_string()),
            [one] => {
                let trimmed = one.strip_suffix('/').unwrap_or(one);
                self.resources()
                    .into_iter()
                    .find(|r| r == trimmed)
                    .ok_or_else(|| {
                        OAuthError::protocol(
                            Protocol::InvalidTarget,
                            format!(
                                "resource must be {} or {}",
                                self.resources()[0],
                                self.resources()[1]
                            ),
                        )
                    })
            }
            _ => Err(OAuthError::protocol(
                Protocol::InvalidTarget,
                "only one resource may be named",
            )),
        }
    }

    /// The organizations a grant to `client` may apply to, among the person's.
    async fn org_choices(
        &self,
        user_id: &str,
        client: &OAuthClientRow,
    ) -> Result<Vec<OrgChoice>, OAuthError> {
        let mine = self.orgs.memberships(user_id).await?;
        Ok(mine
            .iter()
            .filter(|m| client.org_id.as_ref().is_none_or(|o| *o == m.id))
            .map(|m| OrgChoice {
                id: m.id.clone(),
                name: m.name.clone(),
            })
            .collect())
    }

    /// `GET /oauth/authorize`: checks the client and its redirect URI (a page when either is
    /// wrong), then everything else (an error redirect), stores the request and sends the
    /// person to the consent page, or straight back with a code when they consented before to
    /// this client and scope set in exactly one organization at the session's assurance level
    /// (unless `prompt=consent`).
    ///
    /// Errors go back to the redirect URI only for a client someone vouched for: one an
    /// organization's admin registered, or one a person has a live grant to. Anyone can
    /// register a client (or publish a metadata document) with any redirect URI, so for the
    /// others an error is a page here, and Gatehouse's origin is no open redirector
    /// (RFC 9700 section 4.11.2).
    pub async fn authorize(
        &self,
        p: AuthorizeParams,
        signed_in: Option<SignedIn<'_>>,
    ) -> Result<Authorized, OAuthError> {
        let page = |d: &str| {
            Ok(Authorized::Page(OAuthError::protocol(
                Protocol::InvalidRequest,
                d,
            )))
        };
        let Some(client_id) = p.client_id.as_deref().filter(|c| !c.is_empty()) else {
            return page("client_id is required");
        };
        if client_id.len() > 2000 {
            return page("client_id is too long");
        }
        let client = match self.client_for_authorize(client_id).await {
            Ok(c) => c,
            Err(e @ OAuthError::Protocol(..)) => return Ok(Authorized::Page(e)),
            Err(e) => return Err(e),
        };
        let registered = redirect_list(&client);
        let redirect_uri = match p.redirect_uri.as_deref() {
            Some(r) if redirect::matches(&registered, r) => r.to_string(),
            Some(_) => {
                return page("redirect_uri is not one the client registered");
            }
            None if registered.len() == 1 => registered[0].clone(),
            None => return page("redirect_uri is required: the client registered several"),
        };
        let state = p.state.clone();
        let vouched = client.kind == "admin"
            || self
                .store
                .oauth_client_has_live_grant(&client.client_id)
                .await?;
        let fail = |e: OAuthError| -> Result<Authorized, OAuthError> {
            let OAuthError::Protocol(code, description) = &e else {
                return Err(e);
            };
            if !vouched {
                return Ok(Authorized::Page(e));
            }
            let mut pairs = vec![
                ("error", code.as_str()),
                ("error_description", description.as_str()),
                ("iss", self.issuer()),
            ];
            if let Some(s) = &state {
                pairs.push(("state", s));
            }
            Ok(Authorized::Redirect(with_query(&redirect_uri, &pairs)))
        };
        if p.response_type.as_deref() != Some("code") {
            return fail(redirect_error(
                Protocol::UnsupportedResponseType,
                "response_type must be code",
            ));
        }
        let Some(challenge) = p.code_challenge.clone().filter(|c| !c.is_empty()) else {
            return fail(redirect_error(
                Protocol::InvalidRequest,
                "code_challenge is required (PKCE with S256)",
            ));
        };
        if p.code_challenge_method.as_deref() != Some("S256") {
            return fail(redirect_error(
                Protocol::InvalidRequest,
                "code_challenge_method must be S256 (plain is not accepted)",
            ));
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return fail(redirect_error(
                Protocol::InvalidRequest,
                "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
            ));
        }
        if too_long(&p.state, 2000) || too_long(&p.nonce, 500) || too_long(&p.scope, 2000) {
            return fail(redirect_error(
                Protocol::InvalidRequest,
                "state, nonce or scope is too long",
            ));
        }
        let raw_scope = p
            .scope
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| registered_scope(&client));
        let Some(raw_scope) = raw_scope else {
            return fail(redirect_error(
                Protocol::InvalidScope,
                "scope is required (the client registered none)",
            ));
        };
        let asked = match scopes::parse(&raw_scope) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return fail(redirect_error(Protocol::InvalidScope, "scope is empty")),
            Err(e) => return fail(redirect_error(Protocol::InvalidScope, e)),
        };
        let default_resource = self.resources()[0].clone();
        let resource = match self.pick_resource(&p.resource, &default_resource) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let now = self.clock.now_ms();
        let request = OAuthRequestRow {
            id: OAuthRequestId::new().into_string(),
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            scopes: scopes::join(&asked),
            resource,
            state: p.state.clone(),
            code_challenge: challenge,
            nonce: p.nonce.clone(),
            created_at: now,
            expires_at: now + REQUEST_SECONDS * 1000,
        };
        let prompts: Vec<&str> = p.prompt.as_deref().unwrap_or("").split(' ').collect();
        let must_ask = prompts.contains(&"consent") || prompts.contains(&"login");
        // Remembered consent: the same client and scope set, in one organization the
        // person still belongs to.
        let remembered = match signed_in {
            Some(SignedIn { user_id: user, .. }) if !must_ask => {
                let choices = self.org_choices(user, &client).await?;
                let grants = self
                    .store
                    .live_oauth_grants_for(user, &client.client_id, &request.scopes)
                    .await?;
                // A grant given at another level is approved again: an aal1 session never
                // reuses an aal2 consent, and an aal2 one renews an aal1 consent at aal2.
                let aal = signed_in.map_or("aal1", |s| s.aal());
                let mut live: Vec<_> = grants
                    .into_iter()
                    .filter(|g| choices.iter().any(|c| c.id == g.org_id) && g.aal == aal)
                    .collect();
                if live.len() == 1 {
                    live.pop()
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(grant) = remembered {
            let code = random_token(32);
            let new = NewCode {
                code_hash: &sha256_hex(&code),
                request: &request,
                user_id: &grant.user_id,
                org_id: &grant.org_id,
                new_grant_id: &grant.id,
                aal: &grant.aal,
                expires_at: now + self.config.oauth_code_seconds * 1000,
            };
            self.store.code_for_grant(&new, &grant.id, now).await?;
            return Ok(Authorized::Redirect(self.code_redirect(&request, &code)));
        }
        if prompts.contains(&"none") {
            let (code, d) = if signed_in.is_some() {
                (Protocol::ConsentRequired, "the person must consent")
            } else {
                (Protocol::LoginRequired, "the person must sign in")
            };
            return fail(redirect_error(code, d));
        }
        self.store.insert_oauth_request(&request).await?;
        Ok(Authorized::Redirect(format!(
            "{}/dashboard/#/oauth/consent?request={}",
            self.issuer(),
            request.id
        )))
    }

    fn code_redirect(&self, request: &OAuthRequestRow, code: &str) -> String {
        let mut pairs = vec![("code", code), ("iss", self.issuer())];
        if let Some(s) = &request.state {
            pairs.push(("state", s));
        }
        with_query(&request.redirect_uri, &pairs)
    }

    /// A pending request and its client, for its consent page or decision.
    async fn pending(&self, id: &str) -> Result<(OAuthRequestRow, OAuthClientRow), OAuthError> {
        let now = self.clock.now_ms();
        let Some(request) = self.store.oauth_request(id, now).await? else {
            return Err(OAuthError::NotFound("Authorization request"));
        };
        let Some(client) = self.store.oauth_client(&request.client_id).await? else {
            return Err(OAuthError::NotFound("Authorization request"));
        };
        Ok((request, client))
    }

    /// What the consent page shows for a pending request.
    pub async fn consent_view(&self, id: &str, user_id: &str) -> Result<ConsentView, OAuthError> {
        let (request, client) = self.pending(id).await?;
        let scopes: Vec<String> = request
            .scopes
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let metadata_host = (client.kind == "metadata_document")
            .then(|| url::Url::parse(&client.client_id).ok())
            .flatten()
            .and_then(|u| u.host_str().map(str::to_string));
        Ok(ConsentView {
            id: request.id.clone(),
            client: ConsentClient {
                client_id: client.client_id.clone(),
                name: client.name.clone(),
                metadata_host,
                redirect_uri: request.redirect_uri.clone(),
                kind: client.kind.clone(),
            },
            scope_details: scopes
                .iter()
                .map(|s| ScopeDetail {
                    scope: s.clone(),
                    description: scopes::describe(s).to_string(),
                })
                .collect(),
            scopes,
            resource: request.resource.clone(),
            orgs: self.org_choices(user_id, &client).await?,
            expires_at: request.expires_at,
        })
    }

    /// The person's decision: a code (approve) or `access_denied` (deny), as the URL the
    /// browser goes to next.
    pub async fn decide(
        &self,
        id: &str,
        who: SignedIn<'_>,
        decision: Decision,
        ip: Option<String>,
    ) -> Result<String, OAuthError> {
        let user_id = who.user_id;
        let (request, client) = self.pending(id).await?;
        let org_id = match decision {
            Decision::Deny => {
                match self.store.delete_oauth_request(&request.id).await {
                    Err(StoreError::NotFound) => {
                        return Err(OAuthError::NotFound("Authorization request"))
                    }
                    other => other?,
                }
                let mut pairs = vec![
                    ("error", Protocol::AccessDenied.as_str()),
                    ("error_description", "the person declined"),
                    ("iss", self.issuer()),
                ];
                if let Some(s) = &request.state {
                    pairs.push(("state", s));
                }
                return Ok(with_query(&request.redirect_uri, &pairs));
            }
            Decision::Approve { org_id } => org_id,
        };
        let choices = self.org_choices(user_id, &client).await?;
        if !choices.iter().any(|c| c.id == org_id) {
            return Err(OAuthError::Forbidden(
                "Not a member of the selected organization".into(),
            ));
        }
        let now = self.clock.now_ms();
        let code = random_token(32);
        let new_grant = OAuthGrantId::new().into_string();
        let new = NewCode {
            code_hash: &sha256_hex(&code),
            request: &request,
            user_id,
            org_id: &org_id,
            new_grant_id: &new_grant,
            aal: who.aal(),
            expires_at: now + self.config.oauth_code_seconds * 1000,
        };
        let audit = Audit {
            actor: format!("user:{user_id}"),
            ip,
            now,
        };
        let (grant_id, created) = match self.store.approve_oauth_request(&new, &audit).await {
            Err(StoreError::NotFound) => return Err(OAuthError::NotFound("Authorization request")),
            other => other?,
        };
        if !created {
            // The reused grant's level may have changed: every instance reads it again.
            self.bus
                .invalidate(crate::fanout::Invalidation::OAuthGrant(grant_id))
                .await;
        }
        Ok(self.code_redirect(&request, &code))
    }

    /// `POST /oauth/token`.
    pub async fn token(
        &self,
        auth: &ClientAuth,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let grant_type = req.grant_type.as_deref().unwrap_or("");
        match grant_type {
            "authorization_code" | "refresh_token" => {}
            "" => {
                return Err(OAuthError::protocol(
                    Protocol::InvalidRequest,
                    "grant_type is required",
                ))
            }
            _ => {
                return Err(OAuthError::protocol(
                    Protocol::UnsupportedGrantType,
                    "grant_type must be authorization_code or refresh_token",
                ))
            }
        }
        let client = self.authenticate_client(auth).await?;
        if grant_type == "authorization_code" {
            self.exchange_code(&client, req).await
        } else {
            self.refresh(&client, req).await
        }
    }

    async fn exchange_code(
        &self,
        client: &OAuthClientRow,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let bad = |d: &str| OAuthError::protocol(Protocol::InvalidGrant, d);
        let Some(code) = req
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 200)
        else {
            return Err(OAuthError::protocol(
                Protocol::InvalidRequest,
                "code is required",
            ));
        };
        let hash = sha256_hex(code);
        let Some(row) = self.store.oauth_code(&hash).await? else {
            return Err(bad("the code is invalid"));
        };
        let now = self.clock.now_ms();
        if row.client_id != client.client_id {
            return Err(bad("the code was issued to another client"));
        }
        if row.used_at.is_some() {
            // A replayed code: whoever holds it may have tokens; end them all.
            self.revoke(&row.grant_id, "authorization code reused", &self.system())
                .await?;
            return Err(bad(
                "the code was already used; the tokens issued with it are revoked",
            ));
        }
        if !self.store.use_oauth_code(&hash, now).await? {
            self.revoke(&row.grant_id, "authorization code reused", &self.system())
                .await?;
            return Err(bad(
                "the code was already used; the tokens issued with it are revoked",
            ));
        }
        if row.expires_at <= now {
            return Err(bad("the code has expired"));
        }
        if req
            .redirect_uri
            .as_deref()
            .is_some_and(|r| r != row.redirect_uri)
        {
            return Err(bad("redirect_uri differs from the authorization request's"));
        }
        match req.code_verifier.as_deref() {
            None | Some("") => return Err(bad("code_verifier is required (PKCE)")),
            Some(v) if !pkce_ok(v, &row.code_challenge) => {
                return Err(bad("code_verifier does not match the code_challenge"))
            }
            Some(_) => {}
        }
        let Some(grant) = self.live_grant(&row.grant_id).await? else {
            return Err(bad("the grant was revoked"));
        };
        let resource = self.bound_resource(&req.resource, &row.resource)?;
        let scopes: Vec<String> = row.scopes.split_whitespace().map(str::to_string).collect();
        self.issue(
            client,
            &grant,
            Issued {
                resource: &resource,
                scopes: &scopes,
                aal: &row.aal,
            },
            row.nonce.as_deref(),
            None,
        )
        .await
    }

    async fn refresh(
        &self,
        client: &OAuthClientRow,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let bad = |d: &str| OAuthError::protocol(Protocol::InvalidGrant, d);
        let Some(token) = req
            .refresh_token
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 200)
        else {
            return Err(OAuthError::protocol(
                Protocol::InvalidRequest,
                "refresh_token is required",
            ));
        };
        if !grant_types(client).iter().any(|g| g == "refresh_token") {
            return Err(OAuthError::protocol(
                Protocol::UnauthorizedClient,
                "the client did not register the refresh_token grant",
            ));
        }
        let hash = sha256_hex(token);
        let Some(row) = self.store.oauth_refresh(&hash).await? else {
            return Err(bad("the refresh token is invalid"));
        };
        let Some(grant) = self.live_grant(&row.grant_id).await? else {
            return Err(bad("the refresh token is invalid"));
        };
        if grant.client_id != client.client_id {
            return Err(bad("the refresh token was issued to another client"));
        }
        if row.rotated_at.is_some() {
            self.revoke(&row.grant_id, "refresh token reused", &self.system())
                .await?;
            return Err(bad(
                "the refresh token was already used; the grant is revoked",
            ));
        }
        let now = self.clock.now_ms();
        if row.expires_at <= now {
            return Err(bad("the refresh token has expired"));
        }
        let held: Vec<String> = row.scopes.split_whitespace().map(str::to_string).collect();
        let scopes = match req.scope.as_deref().filter(|s| !s.trim().is_empty()) {
            None => held.clone(),
            Some(raw) => {
                let asked = scopes::parse(raw)
                    .map_err(|e| OAuthError::protocol(Protocol::InvalidScope, e))?;
                if let Some(extra) = asked.iter().find(|s| !held.contains(s)) {
                    return Err(OAuthError::protocol(
                        Protocol::InvalidScope,
                        format!("{extra} was not granted"),
                    ));
                }
                asked
            }
        };
        let resource = self.bound_resource(&req.resource, &row.resource)?;
        let successor = random_token(32);
        let successor_hash = sha256_hex(&successor);
        let expires_at = now + self.config.oauth_refresh_seconds * 1000;
        let rotated = self
            .store
            .rotate_oauth_refresh(
                &hash,
                &grant.grant_id,
                NewRefresh {
                    hash: &successor_hash,
                    resource: &row.resource,
                    scopes: &row.scopes,
                    expires_at,
                    aal: &row.aal,
                },
                now,
            )
            .await?;
        if !rotated {
            self.revoke(&row.grant_id, "refresh token reused", &self.system())
                .await?;
            return Err(bad(
                "the refresh token was already used; the grant is revoked",
            ));
        }
        let issued = Issued {
            resource: &resource,
            scopes: &scopes,
            aal: &row.aal,
        };
        let mut answer = self
            .issue(client, &grant, issued, None, Some(successor))
            .await?;
        if !scopes.iter().any(|s| s == "openid") {
            answer.id_token = None;
        }
        Ok(answer)
    }

    /// Signs the access token (and the ID token with `openid`) and, at a code exchange with
    /// `offline_access` by a client that registered the refresh grant, stores a refresh
    /// token. A refresh passes its already stored successor in `refresh`.
    async fn issue(
        &self,
        client: &OAuthClientRow,
        grant: &ActiveGrant,
        what: Issued<'_>,
        nonce: Option<&str>,
        refresh: Option<String>,
    ) -> Result<TokenResponse, OAuthError> {
        let Issued {
            resource,
            scopes,
            aal,
        } = what;
        // aal2 only when the consent this descends from was, and the grant still is.
        let aal2 = aal == "aal2" && grant.aal2;
        let now = self.clock.now_ms();
        let now_s = now / 1000;
        let expires_in = self.config.jwt_expiry_seconds;
        let scope = scopes::join(scopes);
        let claims = AccessClaims {
            iss: self.issuer().to_string(),
            sub: grant.user_id.clone(),
            aud: resource.to_string(),
            exp: now_s + expires_in,
            iat: now_s,
            jti: random_token(16),
            client_id: grant.client_id.clone(),
            scope: scope.clone(),
            org_id: grant.org_id.clone(),
            grant_id: grant.grant_id.clone(),
            aal: Some(if aal2 { "aal2" } else { "aal1" }.to_string()),
            amr: if aal2 {
                vec!["mfa".to_string()]
            } else {
                Vec::new()
            },
        };
        let access_token = self
            .jwt
            .sign_access(&claims)
            .map_err(|e| OAuthError::Signing(e.to_string()))?;
        let refresh_token = match refresh {
            Some(r) => Some(r),
            None => {
                let wants = scopes.iter().any(|s| s == "offline_access")
                    && grant_types(client).iter().any(|g| g == "refresh_token");
                let token = wants.then(|| random_token(32));
                let hash = token.as_deref().map(sha256_hex);
                let expires_at = now + self.config.oauth_refresh_seconds * 1000;
                let stored = hash.as_deref().map(|h| NewRefresh {
                    hash: h,
                    resource,
                    scopes: &scope,
                    expires_at,
                    aal,
                });
                self.store
                    .touch_oauth_grant(&grant.grant_id, stored, now)
                    .await?;
                token
            }
        };
        let id_token = if scopes.iter().any(|s| s == "openid") {
            let mut c = json!({
                "iss": self.issuer(), "sub": grant.user_id, "aud": grant.client_id,
                "exp": now_s + expires_in, "iat": now_s, "auth_time": now_s,
                "azp": grant.client_id,
            });
            if let Some(n) = nonce {
                c["nonce"] = json!(n);
            }
            if scopes.iter().any(|s| s == "email") {
                if let Some(u) = self.store.user_by_id(&grant.user_id).await? {
                    c["email"] = json!(u.email);
                    c["email_verified"] = json!(u.email_confirmed_at.is_some());
                }
            }
            Some(
                self.jwt
                    .sign_es256(&c, Some("JWT"))
                    .map_err(|e| OAuthError::Signing(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            scope,
            refresh_token,
            id_token,
        })
    }

    /// An access token's claims, whichever of Gatehouse's resources it is for.
    fn access_claims(&self, token: &str) -> Option<AccessClaims> {
        let now = self.clock.now_secs();
        self.resources()
            .iter()
            .find_map(|aud| self.jwt.verify_access(token, now, self.issuer(), aud).ok())
    }

    /// `POST /oauth/revoke` (RFC 7009): a refresh or access token of the calling client ends
    /// its grant; anything else is ignored. The client must authenticate.
    pub async fn revoke_token(&self, auth: &ClientAuth, token: &str) -> Result<(), OAuthError> {
        let client = self.authenticate_client(auth).await?;
        if token.is_empty() || token.len() > 4096 {
            return Ok(());
        }
        let grant_id = match self.store.oauth_refresh(&sha256_hex(token)).await? {
            Some(r) => Some(r.grant_id),
            None => self.access_claims(token).map(|c| c.grant_id),
        };
        let Some(grant_id) = grant_id else {
            return Ok(());
        };
        let Some(grant) = self.store.oauth_grant(&grant_id).await? else {
            return Ok(());
        };
        if grant.client_id == client.client_id && grant.revoked_at.is_none() {
            let audit = Audit {
                actor: "system".into(),
                ip: None,
                now: self.clock.now_ms(),
            };
            self.revoke(&grant_id, "revoked by the client", &audit)
                .await?;
        }
        Ok(())
    }

    /// `POST /oauth/introspect` (RFC 7662): the token's facts when it is live and the caller
    /// may see it, else `{"active": false}`. The scope reported is what the token may do now:
    /// its scopes within the person's current permissions in the organization.
    pub async fn introspect(
        &self,
        caller: &IntrospectionCaller,
        token: &str,
    ) -> Result<Introspected, OAuthError> {
        let inactive = json!({ "active": false });
        if token.is_empty() || token.len() > 4096 {
            return Ok(inactive);
        }
        let (grant_id, mut facts, token_scopes) = if let Some(c) = self.access_claims(token) {
            let facts = json!({
                "token_type": "Bearer", "exp": c.exp, "iat": c.iat, "aud": c.aud,
                "jti": c.jti, "iss": c.iss,
            });
            let s: Vec<String> = c.scope.split_whitespace().map(str::to_string).collect();
            (c.grant_id, facts, s)
        } else if let Some(r) = self.store.oauth_refresh(&sha256_hex(token)).await? {
            if r.rotated_at.is_some() || r.expires_at <= self.clock.now_ms() {
                return Ok(inactive);
            }
            let facts = json!({
                "token_type": "refresh_token", "exp": r.expires_at / 1000, "aud": r.resource,
                "iss": self.issuer(),
            });
            let s: Vec<String> = r.scopes.split_whitespace().map(str::to_string).collect();
            (r.grant_id, facts, s)
        } else {
            return Ok(inactive);
        };
        let Some(grant) = self.live_grant(&grant_id).await? else {
            return Ok(inactive);
        };
        let visible = match caller {
            IntrospectionCaller::Key { org_id } => *org_id == grant.org_id,
            IntrospectionCaller::Client { client_id } => *client_id == grant.client_id,
        };
        if !visible {
            return Ok(inactive);
        }
        let memberships = self.orgs.memberships(&grant.user_id).await?;
        let Some(m) = memberships.iter().find(|m| m.id == grant.org_id) else {
            return Ok(inactive);
        };
        let effective: Vec<String> = token_scopes
            .into_iter()
            .filter(|s| scopes::IDENTITY.contains(&s.as_str()) || m.permissions.contains(s))
            .collect();
        facts["active"] = json!(true);
        facts["scope"] = json!(scopes::join(&effective));
        facts["client_id"] = json!(grant.client_id);
        facts["sub"] = json!(grant.user_id);
        facts["org_id"] = json!(grant.org_id);
        facts["grant_id"] = json!(grant.grant_id);
        Ok(facts)
    }

    /// `GET /oauth/userinfo`: the person behind a live access token: `sub` always, `email`
    /// with the `email` scope, `name` with `profile`.
    pub async fn userinfo(&self, token: &str) -> Result<UserInfo, OAuthError> {
        let refuse = || OAuthError::protocol(Protocol::InvalidToken, "the access token is invalid");
        let claims = self.access_claims(token).ok_or_else(refuse)?;
        let grant = self
            .live_grant(&claims.grant_id)
            .await?
            .ok_or_else(refuse)?;
        let user = self
            .store
            .user_by_id(&grant.user_id)
            .await?
            .ok_or_else(refuse)?;
        let has = |s: &str| claims.scope.split(' ').any(|x| x == s);
        let mut info = json!({ "sub": user.id });
        if has("email") {
            info["email"] = json!(user.email);
            info["email_verified"] = json!(user.email_confirmed_at.is_some());
        }
        if has("profile") {
            let name = user
                .user_metadata
                .get("full_name")
                .or_else(|| user.user_metadata.get("name"))
                .cloned()
                .unwrap_or(Value::Null);
            info["name"] = name;
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_accepts_only_the_matching_verifier() {
        // base64url(SHA-256(verifier)), computed independently (Python's hashlib).
        let verifier = "dBjftJeZ4CVP-mJ92K1qqKQh1mn8dbCt0SlLbXDRFOk";
        let challenge = "0nK8JXlvODlpX6ugdTx9udqXN7-TEh3hMwcVH5GBm40";
        assert!(pkce_ok(verifier, challenge));
        assert!(!pkce_ok(
            "dBjftJeZ4CVP-mJ92K1qqKQh1mn8dbCt0SlLbXDRFOx",
            challenge
        ));
        assert!(!pkce_ok(challenge, challenge));
        assert!(!pkce_ok("short", challenge));
    }

    #[test]
    fn errors_go_in_the_query_of_the_redirect() {
        assert_eq!(
            with_query(
                "http://127.0.0.1:9/cb?x=1",
                &[("code", "a b"), ("state", "s")]
            ),
            "http://127.0.0.1:9/cb?x=1&code=a+b&state=s"
        );
    }
}
