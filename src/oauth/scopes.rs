//! Scopes: Gatehouse's permissions (but never `keys:write` or `members:write`, which no
//! delegated credential carries, as no API key does) and the OpenID Connect identity scopes.

use crate::domain::permissions;

/// The identity scopes: `openid`, `profile`, `email` (userinfo) and `offline_access` (a
/// refresh token).
pub const IDENTITY: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The permissions an OAuth token may carry.
pub fn permission_scopes() -> Vec<&'static str> {
    permissions::ALL
        .iter()
        .copied()
        .filter(|p| !permissions::NEVER_ON_KEYS.contains(p))
        .collect()
}

/// Every scope the server knows (`scopes_supported`).
pub fn supported() -> Vec<&'static str> {
    let mut all = permission_scopes();
    all.extend(IDENTITY);
    all
}

/// Whether `s` is a scope this server grants.
pub fn is_known(s: &str) -> bool {
    IDENTITY.contains(&s) || permission_scopes().contains(&s)
}

/// Parses a space-separated scope list: every scope known, at most 32, duplicates dropped,
/// sorted (so one scope set has one spelling). `Err` names the first unknown scope.
pub fn parse(raw: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for s in raw.split(' ').filter(|s| !s.is_empty()) {
        if !is_known(s) {
            let shown: String = s.chars().take(64).collect();
            return Err(format!("unknown scope {shown:?}"));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    if out.len() > 32 {
        return Err("too many scopes".into());
    }
    out.sort();
    Ok(out)
}

/// The stored form: sorted, space-separated.
pub fn join(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// A human description of a scope, for the consent page.
pub fn describe(s: &str) -> &'static str {
    match s {
        "openid" => "Know who you are (your user id)",
        "profile" => "See your profile (name)",
        "email" => "See your email address",
        "offline_access" => "Stay connected when you are away (refresh tokens)",
        "keys:read" => "See API keys",
        "keys:verify" => "Verify API keys",
        "members:read" => "See members",
        "widgets:read" => "See widgets",
        "widgets:write" => "Manage widgets",
        "chat:write" => "Chat, and call your APIs behind the gateway",
        "threads:read" => "Read chat threads",
        "analytics:read" => "See usage and spend",
        "audit:read" => "Read the audit log",
        "webhooks:read" => "See webhook endpoints",
        "webhooks:write" => "Manage webhook endpoints",
        "export:read" => "Export data",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_parsed_sorted_and_checked() {
        assert_eq!(
            parse("chat:write  openid chat:write").unwrap(),
            vec!["chat:write".to_string(), "openid".to_string()]
        );
        assert!(parse("keys:write").is_err());
        assert!(parse("members:write").is_err());
        assert!(parse("admin").is_err());
        assert!(parse("").unwrap().is_empty());
        for s in supported() {
            assert!(!describe(s).is_empty(), "{s} has no description");
        }
    }
}
