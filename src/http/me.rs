//! `GET /v1/me`: who the caller is.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::error::ApiError;
use crate::http::envelope::{errors, ok, Envelope, Success};
use crate::http::extract::{Principal, Via};
use crate::orgs::Membership;

/// `/v1/me`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// The caller as `/v1/me` describes it.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// `user`, `api_key` or `oauth_client`.
    pub kind: &'static str,
    /// The user's id (people).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The user's email (people).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `jwt`, `cookie`, `api_key` or `oauth`.
    pub via: &'static str,
    /// The session of a JWT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Organizations a person belongs to, with their role and its permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<Membership>>,
    /// The key's organization, or the OAuth grant's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The OAuth client acting for the person (`oauth_client`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The OAuth client's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The OAuth grant (consent) the token was issued under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// The key's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The key's scopes (its permissions); for an OAuth client, the token's scopes that are
    /// in effect now: the permissions the person still holds in the organization, and the
    /// OpenID scopes (`openid`, `profile`, `email`, `offline_access`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// `live` or `test`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A key's rate-limit windows (its own and its organization's) after this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Vec<crate::http::limits::WindowView>>,
}

/// `/v1/me`'s answer: a [`Me`], or for an API key the same fields read straight from the
/// cached key record (no copy of its ids and scopes on the API key's hot path).
#[derive(Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// A person or an OAuth client.
    Me(Box<Me>),
    /// An API key.
    Key(KeyMe),
}

/// An API key as `/v1/me` describes it: the fields of [`Me`] a key has, in the same order.
pub struct KeyMe {
    key: std::sync::Arc<crate::store::ApiKeyRecord>,
    rate_limit: Option<Vec<crate::http::limits::WindowView>>,
}

impl Serialize for KeyMe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            kind: &'static str,
            via: &'static str,
            org_id: &'a str,
            key_id: &'a str,
            scopes: &'a [String],
            environment: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            rate_limit: &'a Option<Vec<crate::http::limits::WindowView>>,
        }
        View {
            kind: "api_key",
            via: "api_key",
            org_id: &self.key.org_id,
            key_id: &self.key.id,
            scopes: &self.key.scopes,
            environment: &self.key.environment,
            rate_limit: &self.rate_limit,
        }
        .serialize(s)
    }
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/me", tag = "me",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The caller", body = Envelope<Me>), errors::Auth))]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Success<Answer>, ApiError> {
    let kind = principal.kind();
    let blank = Me {
        kind,
        user_id: None,
        email: None,
        via: "api_key",
        session_id: None,
        organizations: None,
        org_id: None,
        client_id: None,
        client_name: None,
        grant_id: None,
        key_id: None,
        scopes: None,
        environment: None,
        rate_limit: None,
    };
    match principal {
        Principal::User {
            user_id,
            email,
            session_id,
            via,
            ..
        } => {
            let organizations = state.orgs.memberships(&user_id).await?.as_ref().clone();
            Ok(ok(Answer::Me(Box::new(Me {
                user_id: Some(user_id),
                email: Some(email),
                via: match via {
                    Via::Jwt => "jwt",
                    Via::Cookie => "cookie",
                },
                session_id,
                organizations: Some(organizations),
                ..blank
            }))))
        }
        Principal::ApiKey { key } => Ok(ok(Answer::Key(KeyMe {
            key,
            rate_limit: crate::http::limits::peek_views(),
        }))),
        Principal::OAuthClient {
            ref user_id,
            ref client_id,
            ref client_name,
            ref org_id,
            ref grant_id,
            ..
        } => {
            let scopes =
                crate::http::orgs::oauth_scopes_in_effect(&state, &principal, false).await?;
            Ok(ok(Answer::Me(Box::new(Me {
                user_id: Some(user_id.clone()),
                via: "oauth",
                org_id: Some(org_id.clone()),
                client_id: Some(client_id.clone()),
                client_name: Some(client_name.clone()),
                grant_id: Some(grant_id.clone()),
                scopes: Some(scopes),
                rate_limit: crate::http::limits::peek_views(),
                ..blank
            }))))
        }
    }
}
