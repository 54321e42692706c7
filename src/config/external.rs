//! Sign-in with external providers (`external_providers`): each an OpenID Connect provider
//! found by its issuer's discovery document, or a plain OAuth 2 provider (GitHub's kind)
//! described by its endpoints.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// How Gatehouse talks to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenID Connect: discovery from `issuer`, a signed ID token checked against the JWKS.
    Oidc,
    /// Plain OAuth 2: the person is read from `userinfo_url` with the access token.
    Oauth2,
}

/// One provider under `[external_providers.NAME]`; `NAME` is what `signInWithOAuth({provider})`
/// names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalProvider {
    /// `oidc` or `oauth2`.
    pub kind: ProviderKind,
    /// Off: the provider is refused as if it were not configured (and `/settings` says false).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The client id Gatehouse is registered under at the provider.
    pub client_id: String,
    /// The client secret; unset: a public client (PKCE only).
    #[serde(default, skip_serializing)]
    pub client_secret: Option<SecretString>,
    /// A file holding `client_secret`; not with `client_secret`.
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// Scopes asked for; empty: `openid email profile` (oidc), none (oauth2). A sign-in's
    /// `scopes` query parameter adds to them.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// oidc: the issuer URL (`{issuer}/.well-known/openid-configuration` is read).
    #[serde(default)]
    pub issuer: Option<String>,
    /// oauth2: the authorization endpoint.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// oauth2: the token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// oauth2: the endpoint that describes the person (a JSON object).
    #[serde(default)]
    pub userinfo_url: Option<String>,
    /// oauth2: an endpoint listing the person's addresses as `[{email, primary, verified}]`
    /// (GitHub's `/user/emails`); the primary verified one is used.
    #[serde(default)]
    pub emails_url: Option<String>,
    /// oauth2: the userinfo field holding the person's stable id.
    #[serde(default = "id_field")]
    pub id_field: String,
    /// oauth2: the userinfo field holding the address.
    #[serde(default = "email_field")]
    pub email_field: String,
    /// oauth2: the userinfo field saying the address is verified (boolean); unset, a userinfo
    /// address counts as unverified (only `emails_url` can prove one).
    #[serde(default)]
    pub email_verified_field: Option<String>,
}

fn yes() -> bool {
    true
}
fn id_field() -> String {
    "id".into()
}
fn email_field() -> String {
    "email".into()
}

/// Names GoTrue gives to sign-in methods that are not external providers.
const RESERVED: [&str; 4] = ["email", "phone", "anonymous_users", "saml"];

fn http_url(name: &str, field: &str, v: Option<&str>) -> anyhow::Result<()> {
    match v.map(url::Url::parse) {
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Some(_) => anyhow::bail!("external_providers.{name}.{field} must be an http(s) URL"),
        None => anyhow::bail!("external_providers.{name}.{field} is required for this kind"),
    }
}

impl ExternalProvider {
    /// The scopes asked for by default.
    pub fn default_scopes(&self) -> Vec<String> {
        match (self.kind, self.scopes.is_empty()) {
            (_, false) => self.scopes.clone(),
            (ProviderKind::Oidc, true) => vec!["openid".into(), "email".into(), "profile".into()],
            (ProviderKind::Oauth2, true) => Vec::new(),
        }
    }

    fn check(&self, name: &str) -> anyhow::Result<()> {
        if name.is_empty()
            || name.len() > 40
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            anyhow::bail!("external_providers: {name:?} must be 1-40 of a-z, 0-9, _ and -");
        }
        if RESERVED.contains(&name) {
            anyhow::bail!("external_providers: {name:?} is reserved");
        }
        if self.client_id.trim().is_empty() {
            anyhow::bail!("external_providers.{name}.client_id must not be empty");
        }
        if self
            .client_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().is_empty())
        {
            anyhow::bail!("external_providers.{name}.client_secret must not be empty");
        }
        match self.kind {
            ProviderKind::Oidc => {
                http_url(name, "issuer", self.issuer.as_deref())?;
                for (field, v) in [
                    ("authorize_url", &self.authorize_url),
                    ("token_url", &self.token_url),
                    ("userinfo_url", &self.userinfo_url),
                    ("emails_url", &self.emails_url),
                ] {
                    if v.is_some() {
                        anyhow::bail!(
                            "external_providers.{name}.{field} is for oauth2 (oidc reads discovery)"
                        );
                    }
                }
            }
            ProviderKind::Oauth2 => {
                http_url(name, "authorize_url", self.authorize_url.as_deref())?;
                http_url(name, "token_url", self.token_url.as_deref())?;
                http_url(name, "userinfo_url", self.userinfo_url.as_deref())?;
                if self.emails_url.is_some() {
                    http_url(name, "emails_url", self.emails_url.as_deref())?;
                }
                if self.issuer.is_some() {
                    anyhow::bail!("external_providers.{name}.issuer is for oidc");
                }
            }
        }
        Ok(())
    }
}

/// Reads each provider's `client_secret_file` and checks every provider.
pub(super) fn prepare(providers: &mut BTreeMap<String, ExternalProvider>) -> anyhow::Result<()> {
    for (name, p) in providers.iter_mut() {
        if let Some(path) = p.client_secret_file.clone() {
            if p.client_secret.is_some() {
                anyhow::bail!(
                    "external_providers.{name}: client_secret and client_secret_file are both set: keep one"
                );
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "external_providers.{name}.client_secret_file: cannot read {path}: {e}"
                )
            })?;
            let value = text.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                anyhow::bail!("external_providers.{name}.client_secret_file: {path} is empty");
            }
            p.client_secret = Some(SecretString::from(value.to_string()));
        }
        p.check(name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc() -> ExternalProvider {
        ExternalProvider {
            kind: ProviderKind::Oidc,
            enabled: true,
            client_id: "gatehouse".into(),
            client_secret: Some(SecretString::from("s3cret".to_string())),
            client_secret_file: None,
            scopes: Vec::new(),
            issuer: Some("https://id.example.com".into()),
            authorize_url: None,
            token_url: None,
            userinfo_url: None,
            emails_url: None,
            id_field: id_field(),
            email_field: email_field(),
            email_verified_field: None,
        }
    }

    #[test]
    fn a_provider_is_checked_for_its_kind() {
        let mut map = BTreeMap::from([("keycloak".to_string(), oidc())]);
        prepare(&mut map).unwrap();
        let mut bad = oidc();
        bad.issuer = Some("ftp://id.example.com".into());
        let mut map = BTreeMap::from([("keycloak".to_string(), bad)]);
        assert!(prepare(&mut map).is_err());
        let mut oauth = oidc();
        oauth.kind = ProviderKind::Oauth2;
        let mut map = BTreeMap::from([("github".to_string(), oauth.clone())]);
        assert!(prepare(&mut map)
            .unwrap_err()
            .to_string()
            .contains("authorize_url"));
        oauth.authorize_url = Some("https://github.com/login/oauth/authorize".into());
        oauth.token_url = Some("https://github.com/login/oauth/access_token".into());
        oauth.userinfo_url = Some("https://api.github.com/user".into());
        let mut map = BTreeMap::from([("github".to_string(), oauth.clone())]);
        assert!(prepare(&mut map)
            .unwrap_err()
            .to_string()
            .contains("issuer"));
        oauth.issuer = None;
        let mut map = BTreeMap::from([("github".to_string(), oauth)]);
        prepare(&mut map).unwrap();
        let mut map = BTreeMap::from([("email".to_string(), oidc())]);
        assert!(prepare(&mut map)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        let mut map = BTreeMap::from([("Key Cloak".to_string(), oidc())]);
        assert!(prepare(&mut map).is_err());
    }

    #[test]
    fn a_client_secret_may_come_from_a_file() {
        let path = std::env::temp_dir().join(format!("gh-ext-secret-{}", std::process::id()));
        std::fs::write(&path, "from-the-file\n").unwrap();
        let mut p = oidc();
        p.client_secret_file = Some(path.display().to_string());
        let mut map = BTreeMap::from([("keycloak".to_string(), p.clone())]);
        assert!(prepare(&mut map)
            .unwrap_err()
            .to_string()
            .contains("both set"));
        p.client_secret = None;
        let mut map = BTreeMap::from([("keycloak".to_string(), p)]);
        prepare(&mut map).unwrap();
        let secret = map["keycloak"].client_secret.as_ref().unwrap();
        assert_eq!(secret.expose_secret(), "from-the-file");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_secret_never_prints() {
        let p = oidc();
        assert!(!format!("{p:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&p).unwrap().contains("s3cret"));
        assert_eq!(p.default_scopes(), ["openid", "email", "profile"]);
    }
}
