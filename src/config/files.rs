//! Secrets read from files (`jwt_secret_file = "/run/secrets/jwt"`, or
//! `GATEHOUSE_JWT_SECRET_FILE`), the container and Kubernetes convention, and the effective
//! settings printed with every secret masked (`gatehouse config check`).

use secrecy::{ExposeSecret, SecretString};

use super::Config;

/// The settings that hold a secret, each of which may be given as `{name}_file` instead.
/// `database_url` and `migrate_database_url` are among them: a PostgreSQL URL may hold a
/// password.
pub const SECRET_SETTINGS: [&str; 13] = [
    "database_url",
    "migrate_database_url",
    "publishable_key",
    "jwt_secret",
    "mfa_encryption_key",
    "redis_url",
    "redis_cluster_urls",
    "upstream_api_key",
    "metrics_token",
    "smtp_url",
    "oauth_registration_token",
    "service_key",
    "captcha_secret",
];

/// Reads the secret in `path` for `name`: the whole file, without its trailing line end
/// (`echo secret > file` and Kubernetes secrets both work). An empty file is an error, as a
/// missing or unreadable one is.
fn read_secret(name: &str, path: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{name}_file: cannot read {path}: {e}"))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        anyhow::bail!("{name}_file: {path} is empty");
    }
    Ok(value.to_string())
}

impl Config {
    /// The `…_file` of a secret setting, if it has one.
    pub fn secret_file(&self, name: &str) -> Option<&str> {
        match name {
            "database_url" => self.database_url_file.as_deref(),
            "migrate_database_url" => self.migrate_database_url_file.as_deref(),
            "publishable_key" => self.publishable_key_file.as_deref(),
            "jwt_secret" => self.jwt_secret_file.as_deref(),
            "mfa_encryption_key" => self.mfa_encryption_key_file.as_deref(),
            "redis_url" => self.redis_url_file.as_deref(),
            "redis_cluster_urls" => self.redis_cluster_urls_file.as_deref(),
            "upstream_api_key" => self.upstream_api_key_file.as_deref(),
            "metrics_token" => self.metrics_token_file.as_deref(),
            "smtp_url" => self.smtp_url_file.as_deref(),
            "oauth_registration_token" => self.oauth_registration_token_file.as_deref(),
            "service_key" => self.service_key_file.as_deref(),
            "captcha_secret" => self.captcha_secret_file.as_deref(),
            _ => None,
        }
    }

    /// Replaces every secret given as a file by the file's content. `given(key)` says whether
    /// the operator set `key` (file or environment): setting a secret and its file is an
    /// error, since either choice would surprise someone.
    pub(super) fn read_secret_files(&mut self, given: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        for name in SECRET_SETTINGS {
            let Some(path) = self.secret_file(name).map(str::to_string) else {
                continue;
            };
            if given(name) {
                anyhow::bail!(
                    "{name} and {name}_file are both set (GATEHOUSE_{upper} and \
                     GATEHOUSE_{upper}_FILE count too): keep one",
                    upper = name.to_ascii_uppercase()
                );
            }
            let value = read_secret(name, &path)?;
            let secret = || Some(SecretString::from(value.clone()));
            match name {
                "database_url" => self.database_url = value.clone(),
                "migrate_database_url" => self.migrate_database_url = Some(value.clone()),
                "publishable_key" => self.publishable_key = secret(),
                "jwt_secret" => self.jwt_secret = secret(),
                "mfa_encryption_key" => self.mfa_encryption_key = secret(),
                "redis_url" => self.redis_url = secret(),
                "redis_cluster_urls" => {
                    self.redis_cluster_urls =
                        Some(SecretString::from(super::split_list(&value).join(",")))
                }
                "upstream_api_key" => self.upstream_api_key = secret(),
                "metrics_token" => self.metrics_token = secret(),
                "oauth_registration_token" => self.oauth_registration_token = secret(),
                "service_key" => self.service_key = secret(),
                "captcha_secret" => self.captcha_secret = secret(),
                _ => self.smtp_url = secret(),
            }
        }
        Ok(())
    }

    fn secret_value(&self, name: &str) -> Option<&str> {
        let s = match name {
            "database_url" => return Some(&self.database_url),
            "migrate_database_url" => return self.migrate_database_url.as_deref(),
            "publishable_key" => &self.publishable_key,
            "jwt_secret" => &self.jwt_secret,
            "mfa_encryption_key" => &self.mfa_encryption_key,
            "redis_url" => &self.redis_url,
            "redis_cluster_urls" => &self.redis_cluster_urls,
            "upstream_api_key" => &self.upstream_api_key,
            "metrics_token" => &self.metrics_token,
            "smtp_url" => &self.smtp_url,
            "oauth_registration_token" => &self.oauth_registration_token,
            "service_key" => &self.service_key,
            "captcha_secret" => &self.captcha_secret,
            _ => return None,
        };
        s.as_ref().map(|s| s.expose_secret())
    }
}

/// A URL with its password, query and fragment masked (`redis://:***@host:6379/0`), so an
/// operator sees where it points; anything that does not parse as a URL is masked whole.
fn mask_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return "***".into();
    };
    if !u.has_host() {
        // `sqlite://gatehouse.db` parses with the file name as the host; `sqlite::memory:`
        // has none. Neither holds a secret.
        return if raw.starts_with("sqlite:") {
            raw.to_string()
        } else {
            "***".into()
        };
    }
    if u.password().is_some() && u.set_password(Some("***")).is_err() {
        return "***".into();
    }
    if u.query().is_some() {
        u.set_query(Some("***"));
    }
    u.set_fragment(None);
    u.to_string()
}

/// Every setting as `name = value` lines (TOML), in name order. Secrets are masked: a URL
/// keeps its scheme, host and port; a key or token shows as `"***"`; a secret read from a
/// file says which.
pub fn masked_settings(c: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    let mut entries: Vec<(String, String)> = match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter(|(k, _)| k != "database_url" && k != "migrate_database_url")
            .map(|(k, v)| {
                let shown = match v {
                    serde_json::Value::Null => "# unset".to_string(),
                    v => v.to_string(),
                };
                (k, shown)
            })
            .collect(),
        _ => Vec::new(),
    };
    for name in SECRET_SETTINGS {
        let shown = match c.secret_value(name) {
            None => "# unset".to_string(),
            Some(v) if name.ends_with("_url") => format!("{:?}", mask_url(v)),
            Some(v) if name.ends_with("_urls") => format!(
                "{:?}",
                super::split_list(v)
                    .iter()
                    .map(|u| mask_url(u))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Some(_) => "\"***\"".to_string(),
        };
        let shown = match c.secret_file(name) {
            Some(path) => format!("{shown}  # read from {path}"),
            None => shown,
        };
        entries.push((name.to_string(), shown));
    }
    entries.sort();
    for (k, v) in entries {
        lines.push(match v.strip_prefix("# ") {
            Some(unset) => format!("# {k} ({unset})"),
            None => format!("{k} = {v}"),
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_host_and_lose_their_password_and_query() {
        assert_eq!(
            mask_url("postgres://app:hunter2@db.internal:5432/auth?sslmode=require"),
            "postgres://app:***@db.internal:5432/auth?***"
        );
        assert_eq!(
            mask_url("redis://:pw@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(mask_url("sqlite://gatehouse.db"), "sqlite://gatehouse.db");
        assert_eq!(mask_url("not a url with secret"), "***");
    }

    #[test]
    fn a_secret_file_loses_its_line_end_and_may_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("gh-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("s");
        std::fs::write(&file, "value with inner spaces \r\n").unwrap_or_default();
        let path = file.display().to_string();
        assert_eq!(
            read_secret("jwt_secret", &path).ok().as_deref(),
            Some("value with inner spaces ")
        );
        std::fs::write(&file, "\n").unwrap_or_default();
        let e = read_secret("jwt_secret", &path).unwrap_err().to_string();
        assert!(e.contains("jwt_secret_file") && e.contains("empty"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let e = read_secret("smtp_url", &path).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn the_printed_settings_mask_every_secret() {
        let c = Config {
            database_url: "postgres://u:db-pw-1234@h/d".into(),
            jwt_secret: Some(SecretString::from("jwt-secret-value-long-enough-0123456")),
            jwt_secret_file: Some("/run/secrets/jwt".into()),
            smtp_url: Some(SecretString::from("smtps://m:smtp-pw-5678@mail:465")),
            migrate_database_url: Some("postgres://u:direct-pw-4321@h/d".into()),
            redis_cluster_urls: Some(SecretString::from(
                "rediss://:cl-pw-1111@n1:6379,rediss://:cl-pw-1111@n2:6379",
            )),
            ..Config::default()
        };
        let text = masked_settings(&c).join("\n");
        for secret in [
            "db-pw-1234",
            "jwt-secret-value",
            "smtp-pw-5678",
            "direct-pw-4321",
            "cl-pw-1111",
        ] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            text.contains("database_url = \"postgres://u:***@h/d\""),
            "{text}"
        );
        assert!(
            text.contains("jwt_secret = \"***\"  # read from /run/secrets/jwt"),
            "{text}"
        );
        assert!(text.contains("# redis_url (unset)"), "{text}");
        assert!(
            text.contains("redis_cluster_urls = \"rediss://:***@n1:6379,rediss://:***@n2:6379\""),
            "{text}"
        );
        assert!(
            text.contains("migrate_database_url = \"postgres://u:***@h/d\""),
            "{text}"
        );
        assert!(text.contains("listen = \"127.0.0.1:8080\""), "{text}");
    }
}
