//! OAuth access tokens (RFC 9068) as a credential: an OAuth client acting for a person in
//! one organization, at one resource.

use std::sync::Arc;

use super::{unavailable, CredentialError, Credentials, Principal};
use crate::auth::jwt::{is_expired, JwtError, ACCESS_TOKEN_TYP};
use crate::auth::tokens;
use crate::error::Reason;

/// A protected resource Gatehouse serves: its tokens' `aud` and its metadata document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Everything under `/v1`, the chat gateway (`/api/chat`) included.
    V1,
    /// The `/api/*` proxy to the deployment's own backend.
    Api,
}

impl Resource {
    /// The resource a request path belongs to: `/api/…` (but the chat gateway) is the proxy,
    /// the rest `/v1`.
    pub fn of_path(path: &str) -> Self {
        if path.starts_with("/api/") && path != "/api/chat" {
            Resource::Api
        } else {
            Resource::V1
        }
    }

    /// The path segment naming it: `v1` or `api`.
    pub fn segment(self) -> &'static str {
        match self {
            Resource::V1 => "v1",
            Resource::Api => "api",
        }
    }

    /// The other one.
    pub fn other(self) -> Self {
        match self {
            Resource::V1 => Resource::Api,
            Resource::Api => Resource::V1,
        }
    }

    /// Its identifier (tokens' `aud`): `{public_url}/v1` or `{public_url}/api`.
    pub fn uri(self, public_base: &str) -> String {
        format!("{public_base}/{}", self.segment())
    }

    /// Its protected-resource metadata (RFC 9728, path form).
    pub fn metadata_url(self, public_base: &str) -> String {
        format!(
            "{public_base}/.well-known/oauth-protected-resource/{}",
            self.segment()
        )
    }
}

/// Whether `token`'s header says it is an RFC 9068 access token (nothing verified yet), so
/// the bearer is checked as an OAuth client's and not as a session's.
pub fn looks_like_at_jwt(token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.typ)
        .is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        })
}

impl Credentials {
    /// An OAuth client's principal from an RFC 9068 access token presented at `resource`:
    /// signed by this deployment, not expired, issued for `resource`, and under a grant that
    /// is still live (cached by the OAuth service, so a warm check touches no storage).
    pub async fn principal_from_oauth(
        &self,
        token: &str,
        resource: Resource,
    ) -> Result<Principal, CredentialError> {
        let expired = || CredentialError::refused(Reason::Expired, "The access token has expired.");
        let invalid =
            || CredentialError::refused(Reason::Malformed, "The access token is invalid.");
        let base = self.accounts.config.public_base();
        let hash = tokens::sha256_hex(token);
        let claims = match self.verified_oauth.get(&(resource, hash.clone())) {
            Some(c) => c,
            None => {
                let now = self.clock.now_secs();
                let jwt = &self.accounts.jwt;
                let c = match jwt.verify_access(token, now, base, &resource.uri(base)) {
                    Ok(c) => Arc::new(c),
                    Err(JwtError::Expired) => return Err(expired()),
                    // Signed here but for the other resource: told apart from a forgery.
                    Err(JwtError::Invalid) => {
                        let other = resource.other().uri(base);
                        return Err(match jwt.verify_access(token, now, base, &other) {
                            Ok(_) => CredentialError::refused(
                                Reason::WrongAudience,
                                "The access token was issued for another resource.",
                            ),
                            Err(JwtError::Expired) => expired(),
                            Err(JwtError::Invalid) => invalid(),
                        });
                    }
                };
                self.verified_oauth.insert((resource, hash), c.clone());
                c
            }
        };
        if is_expired(claims.exp, self.clock.now_secs()) {
            return Err(expired());
        }
        let grant = self
            .oauth
            .active_grant(&claims.grant_id)
            .await
            .map_err(|e| unavailable(&e))?;
        let revoked = || {
            CredentialError::refused(
                Reason::Revoked,
                "The person revoked this app's access; authorize it again.",
            )
        };
        let grant = grant.ok_or_else(revoked)?;
        if grant.user_id != claims.sub
            || grant.client_id != claims.client_id
            || grant.org_id != claims.org_id
        {
            return Err(revoked());
        }
        // Never more than the consent allowed, whatever a token says.
        let scopes = claims
            .scope
            .split_ascii_whitespace()
            .filter(|s| grant.scopes.iter().any(|g| g == s))
            .map(str::to_string)
            .collect();
        // aal2 only while the grant is (a later aal1 consent lowers it) and the token was
        // issued at aal2 (tokens from before grants recorded their level carry none).
        let aal2 = grant.aal2 && claims.aal.as_deref() == Some("aal2");
        Ok(Principal::OAuthClient {
            aal2,
            user_id: grant.user_id,
            client_id: grant.client_id,
            client_name: grant.client_name,
            org_id: grant.org_id,
            scopes,
            grant_id: grant.grant_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_belong_to_their_resource() {
        assert_eq!(Resource::of_path("/v1/me"), Resource::V1);
        assert_eq!(Resource::of_path("/api/chat"), Resource::V1);
        assert_eq!(Resource::of_path("/api/mcp"), Resource::Api);
        assert_eq!(Resource::of_path("/api/chat/x"), Resource::Api);
        assert_eq!(
            Resource::Api.uri("https://g.example"),
            "https://g.example/api"
        );
        assert_eq!(
            Resource::V1.metadata_url("https://g.example"),
            "https://g.example/.well-known/oauth-protected-resource/v1"
        );
    }
}
