use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ratelimit::Rate;

/// A configuration value that must never be printed: `Debug` shows `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

/// Every setting of a Gatehouse process. See `config.example.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// The URL users reach this server at (token issuer, CSRF origin, cookie security).
    pub public_url: String,
    /// The key clients send in `apikey` on `/auth/v1`; generated and stored at first start when unset.
    pub publishable_key: Option<SecretString>,
    /// When set, access tokens are signed HS256 with this shared secret instead of ES256.
    pub jwt_secret: Option<SecretString>,
    /// Access-token lifetime in seconds.
    pub jwt_expiry_seconds: i64,
    /// Window in which a rotated refresh token may be presented again (racing tabs).
    pub refresh_reuse_interval_seconds: i64,
    /// Confirm new users at sign-up (development).
    pub autoconfirm: bool,
    /// Minimum password length.
    pub password_min_length: usize,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Prefix of API keys (`{prefix}_{env}_…`).
    pub key_prefix: String,
    /// Concurrent argon2 computations allowed (0 = number of CPUs).
    pub password_hash_concurrency: usize,
    /// Dashboard session lifetime in seconds.
    pub web_session_seconds: i64,
    /// Per-IP limit on password sign-in.
    pub rate_limit_sign_in: Rate,
    /// Per-IP limit on sign-up.
    pub rate_limit_sign_up: Rate,
    /// Per-IP limit on refresh-token grants.
    pub rate_limit_token_refresh: Rate,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Development mode: confirms sign-ups at once (as `autoconfirm`).
    pub dev: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://gatehouse.db".into(),
            public_url: "http://127.0.0.1:8080".into(),
            publishable_key: None,
            jwt_secret: None,
            jwt_expiry_seconds: 3600,
            refresh_reuse_interval_seconds: 10,
            autoconfirm: false,
            password_min_length: 8,
            body_limit_bytes: 1024 * 1024,
            key_prefix: "gk".into(),
            password_hash_concurrency: 0,
            web_session_seconds: 7 * 24 * 3600,
            rate_limit_sign_in: Rate::new(20, 60),
            rate_limit_sign_up: Rate::new(5, 60),
            rate_limit_token_refresh: Rate::new(150, 300),
            log: "info".into(),
            log_format: "text".into(),
            dev: false,
        }
    }
}

/// Environment variables with this prefix belong to the test suite, not to the server.
const RESERVED_ENV_PREFIX: &str = "TEST_";

/// Read by the command line itself (`--config`), not a setting.
const CONFIG_FILE_ENV: &str = "CONFIG_FILE";

impl Config {
    /// Defaults, then the TOML file (if any), then `GATEHOUSE_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("GATEHOUSE_").filter(|k| {
            let k = k.as_str().to_ascii_uppercase();
            !k.starts_with(RESERVED_ENV_PREFIX) && k != CONFIG_FILE_ENV
        }));
        let mut cfg: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if cfg.dev {
            cfg.autoconfirm = true;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.jwt_expiry_seconds < 60 {
            anyhow::bail!("jwt_expiry_seconds must be at least 60");
        }
        if self.refresh_reuse_interval_seconds < 0 {
            anyhow::bail!("refresh_reuse_interval_seconds must not be negative");
        }
        if self.password_min_length < 6 {
            anyhow::bail!("password_min_length must be at least 6");
        }
        if !(self.key_prefix.len() <= 16
            && !self.key_prefix.is_empty()
            && self.key_prefix.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            anyhow::bail!("key_prefix must be 1-16 ASCII letters or digits");
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            anyhow::bail!("public_url must start with http:// or https://");
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.expose().len() < 32 {
                anyhow::bail!("jwt_secret must be at least 32 characters");
            }
        }
        Ok(())
    }

    /// The public URL without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// `scheme://host[:port]` of the public URL, for Origin checks.
    pub fn public_origin(&self) -> String {
        let base = self.public_base();
        let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
        match base[after_scheme..].find('/') {
            Some(i) => base[..after_scheme + i].to_string(),
            None => base.to_string(),
        }
    }

    /// Cookies are `Secure` unless the public URL is plain-http localhost.
    pub fn secure_cookies(&self) -> bool {
        let origin = self.public_origin();
        !(origin.starts_with("http://localhost")
            || origin.starts_with("http://127.0.0.1")
            || origin.starts_with("http://[::1]"))
    }

    /// The JWT issuer claim.
    pub fn issuer(&self) -> String {
        format!("{}/auth/v1", self.public_base())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_debug() {
        let cfg = Config {
            jwt_secret: Some(SecretString::new("a-very-secret-value-that-is-long-enough")),
            ..Config::default()
        };
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("a-very-secret-value"));
        assert!(printed.contains("***"));
    }

    #[test]
    fn public_origin_drops_the_path() {
        let cfg = Config {
            public_url: "https://auth.example.com/base/".into(),
            ..Config::default()
        };
        assert_eq!(cfg.public_origin(), "https://auth.example.com");
        assert!(cfg.secure_cookies());
        let local = Config::default();
        assert_eq!(local.public_origin(), "http://127.0.0.1:8080");
        assert!(!local.secure_cookies());
    }
}
