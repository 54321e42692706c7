//! Who is calling: a signed-in person, an organization API key, or an OAuth client acting
//! for a person.

/// How a user principal proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// A Supabase-compatible access token.
    Jwt,
    /// The dashboard session cookie.
    Cookie,
}

/// The authenticated caller of a `/v1` route. Handlers ask it, never the headers.
#[derive(Clone, Debug)]
pub enum Principal {
    /// A signed-in person.
    User {
        /// User UUID.
        user_id: String,
        /// Email.
        email: String,
        /// The session (JWT `session_id`), when signed in with a token.
        session_id: Option<String>,
        /// Whether the credential is at `aal2` (a second factor was verified).
        aal2: bool,
        /// Credential kind.
        via: Via,
    },
    /// An organization API key.
    ApiKey {
        /// The verified key's record (never the key).
        key: std::sync::Arc<crate::store::ApiKeyRecord>,
    },
    /// An OAuth client acting for a person with an RFC 9068 access token, within one
    /// organization. It may do what the token's scopes and the person's permissions in that
    /// organization now both allow ([`crate::orgs::Actor::OAuth`]).
    OAuthClient {
        /// The person (the token's `sub`).
        user_id: String,
        /// The client (`client_id`: a registered id or a metadata document's URL).
        client_id: String,
        /// The client's name, as the consent page showed it.
        client_name: String,
        /// The organization the grant applies to.
        org_id: String,
        /// The token's scopes (permissions and `openid`, `profile`, `email`, `offline_access`).
        scopes: Vec<String>,
        /// The consent the token was issued under.
        grant_id: String,
        /// Whether both the grant and the token are at aal2 (consent from an aal2 session).
        aal2: bool,
    },
}

impl Principal {
    /// The principal kind as `/v1/me` reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::User { .. } => "user",
            Principal::ApiKey { .. } => "api_key",
            Principal::OAuthClient { .. } => "oauth_client",
        }
    }
}
