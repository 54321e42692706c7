//! Who is calling: a signed-in person or an organization API key.

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
        /// Credential kind.
        via: Via,
    },
    /// An organization API key.
    ApiKey {
        /// The verified key's record (never the key).
        key: std::sync::Arc<crate::store::ApiKeyRecord>,
    },
}

impl Principal {
    /// The principal kind as `/v1/me` reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::User { .. } => "user",
            Principal::ApiKey { .. } => "api_key",
        }
    }
}
