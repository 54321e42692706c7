//! Redirect URIs: what a client may register, and whether the one an authorization request
//! names is registered. Matching is exact (string equality), except for loopback redirects
//! of native apps (RFC 8252 section 7.3): `http://127.0.0.1`, `http://[::1]` and
//! `http://localhost` match a registered URI of the same host, path and query on any port.
//! `localhost` is accepted although RFC 8252 prefers the IP literals, because the common
//! MCP clients register it.

use url::Url;

/// The longest redirect URI accepted.
pub const MAX_LEN: usize = 2000;

/// Schemes never accepted as a redirect target.
const FORBIDDEN_SCHEMES: [&str; 9] = [
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "ftp",
    "ws",
    "wss",
];

fn is_loopback(u: &Url) -> bool {
    u.scheme() == "http"
        && matches!(
            u.host_str(),
            Some("127.0.0.1") | Some("[::1]") | Some("localhost")
        )
}

/// Checks a redirect URI a client registers: absolute, no fragment, no credentials; `https`,
/// `http` only on a loopback host, or a private-use scheme of a native app
/// (`com.example.app:/callback`). The error says what is wrong.
pub fn check(raw: &str) -> Result<Url, String> {
    if raw.len() > MAX_LEN {
        return Err(format!(
            "a redirect URI is longer than {MAX_LEN} characters"
        ));
    }
    let u = Url::parse(raw).map_err(|_| format!("{raw:?} is not an absolute URI"))?;
    if u.fragment().is_some() {
        return Err(format!("{raw:?} has a fragment"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{raw:?} holds credentials"));
    }
    match u.scheme() {
        "https" if u.host_str().is_none_or(str::is_empty) => {
            return Err(format!("{raw:?} has no host"));
        }
        "http" if !is_loopback(&u) => {
            return Err(format!(
                "{raw:?}: plain http is accepted only on a loopback address \
                 (127.0.0.1, [::1] or localhost)"
            ));
        }
        s if FORBIDDEN_SCHEMES.contains(&s) => {
            return Err(format!("{raw:?}: the {s} scheme is not a redirect target"));
        }
        _ => {}
    }
    Ok(u)
}

/// Whether `asked` (from an authorization request) is one of `registered`: exactly, or a
/// loopback URI differing from a registered loopback URI only by its port.
pub fn matches(registered: &[String], asked: &str) -> bool {
    if registered.iter().any(|r| r == asked) {
        return true;
    }
    let Ok(a) = Url::parse(asked) else {
        return false;
    };
    if !is_loopback(&a) || a.fragment().is_some() || !a.username().is_empty() {
        return false;
    }
    registered.iter().any(|r| {
        Url::parse(r).is_ok_and(|r| {
            is_loopback(&r)
                && r.host_str() == a.host_str()
                && r.path() == a.path()
                && r.query() == a.query()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_refuses_unsafe_uris() {
        assert!(check("https://app.example/cb").is_ok());
        assert!(check("http://127.0.0.1/cb").is_ok());
        assert!(check("http://localhost:3000/cb").is_ok());
        assert!(check("com.example.app:/oauth").is_ok());
        assert!(check("http://app.example/cb").is_err());
        assert!(check("https://app.example/cb#x").is_err());
        assert!(check("javascript:alert(1)").is_err());
        assert!(check("https://u:p@app.example/cb").is_err());
        assert!(check("/relative").is_err());
    }

    #[test]
    fn loopback_uris_match_on_any_port_others_exactly() {
        let reg = vec![
            "http://127.0.0.1/callback".to_string(),
            "https://app.example/cb".to_string(),
        ];
        assert!(matches(&reg, "http://127.0.0.1:51234/callback"));
        assert!(matches(&reg, "https://app.example/cb"));
        assert!(!matches(&reg, "https://app.example/cb/"));
        assert!(!matches(&reg, "https://app.example:8443/cb"));
        assert!(!matches(&reg, "http://127.0.0.1:51234/other"));
        assert!(!matches(&reg, "http://localhost:51234/callback"));
        assert!(!matches(&reg, "http://127.0.0.1:5/callback?x=1"));
    }
}
