//! The widget's credentials: allowed origins, widget tokens, session tokens, request
//! signatures and identified-visitor hashes. Pure functions over bytes and strings; the
//! formats are fixed (ARCHITECTURE.md, "Invariants") and given in docs/widget.md.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tokens::random_token;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's timestamp may be from the server's clock, either way.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// HMAC-SHA256 over the concatenation of `parts`.
fn hmac_bytes(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length: the error branch cannot happen.
    let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Checks `expected_mac` over `parts` in constant time.
fn hmac_verify(key: &[u8], parts: &[&[u8]], expected_mac: &[u8]) -> bool {
    let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return false;
    };
    for p in parts {
        m.update(p);
    }
    m.verify_slice(expected_mac).is_ok()
}

// ---------------------------------------------------------------------------------------
// Origins
// ---------------------------------------------------------------------------------------

/// One entry of a widget's allowlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// `scheme://host[:port]`, normalised (lower case, default port dropped).
    Exact(String),
    /// `scheme://*.suffix[:port]`: any subdomain of `suffix` (not `suffix` itself).
    Subdomains {
        /// `http` or `https`.
        scheme: String,
        /// `.example.com`, with the leading dot.
        suffix: String,
        /// Explicit non-default port, or none.
        port: Option<u16>,
    },
}

/// The parts of an origin: scheme, host, port (`None` when default).
fn split_origin(s: &str) -> Option<(String, String, Option<u16>)> {
    let s = s.trim();
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal's colons are inside brackets.
        Some((h, p)) if !p.contains(']') => {
            let port: u16 = p.parse().ok().filter(|p| *p > 0)?;
            (h, Some(port).filter(|p| *p != default_port))
        }
        _ => (rest, None),
    };
    let host = host.to_ascii_lowercase();
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(is_label_char))
    };
    host_ok.then_some((scheme, host, port))
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*'
}

fn render(scheme: &str, host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    }
}

/// The canonical form of an `Origin` header, or `None` if it is not an http(s) origin.
pub fn normalize_origin(header: &str) -> Option<String> {
    let (scheme, host, port) = split_origin(header)?;
    if host.contains('*') {
        return None;
    }
    Some(render(&scheme, &host, port))
}

impl AllowedOrigin {
    /// Parses an allowlist entry: `https://app.example.com`, `http://localhost:3000` or
    /// `https://*.example.com`. A bare `*` and wildcards anywhere but the first label are
    /// refused.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let (scheme, host, port) = split_origin(s).ok_or(
            "must be scheme://host[:port] with scheme http or https, and no path (e.g. https://app.example.com)",
        )?;
        match host.strip_prefix("*.") {
            Some(suffix) => {
                // Two labels at least below the wildcard, so `*.com` cannot be allowed.
                if suffix.contains('*') || !suffix.contains('.') {
                    return Err("a wildcard must be the whole first label of a domain with at least two more labels (https://*.example.com)");
                }
                Ok(AllowedOrigin::Subdomains {
                    scheme,
                    suffix: format!(".{suffix}"),
                    port,
                })
            }
            None if host.contains('*') => Err("a wildcard must be the whole first label (https://*.example.com); a bare * is not allowed"),
            None => Ok(AllowedOrigin::Exact(render(&scheme, &host, port))),
        }
    }

    /// Whether a normalised origin (see [`normalize_origin`]) is allowed by this entry.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigin::Exact(o) => o == origin,
            AllowedOrigin::Subdomains {
                scheme,
                suffix,
                port,
            } => split_origin(origin).is_some_and(|(s, h, p)| {
                s == *scheme && p == *port && h.len() > suffix.len() && h.ends_with(suffix.as_str())
            }),
        }
    }

    /// The entry as stored and shown.
    pub fn as_string(&self) -> String {
        match self {
            AllowedOrigin::Exact(o) => o.clone(),
            AllowedOrigin::Subdomains {
                scheme,
                suffix,
                port,
            } => render(scheme, &format!("*{suffix}"), *port),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Widget secrets and tokens
// ---------------------------------------------------------------------------------------

/// A new widget signing secret: `wsec_` + 32 random bytes, base64url.
pub fn new_secret() -> String {
    format!("wsec_{}", random_token(32))
}

/// A short fingerprint of a widget secret, carried in session tokens so rotating the
/// secret ends every session opened under the old one.
pub fn secret_fingerprint(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..8])
}

/// Mints a widget token: base64url(`{org}:{widget}:{nonce}:{signature}`).
pub fn mint_token(secret: &str, org_id: &str, widget_id: &str) -> String {
    let nonce = random_token(16);
    let signed = format!("{org_id}:{widget_id}:{nonce}");
    let sig = URL_SAFE_NO_PAD.encode(hmac_bytes(secret.as_bytes(), &[signed.as_bytes()]));
    URL_SAFE_NO_PAD.encode(format!("{signed}:{sig}"))
}

/// The organization and widget a token claims, before its signature is checked.
pub fn token_claims(token: &str) -> Option<(String, String, String, Vec<u8>)> {
    if token.len() > 512 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.split(':');
    let (org, widget, nonce, sig) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || org.is_empty() || widget.is_empty() || nonce.is_empty() {
        return None;
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    Some((org.into(), widget.into(), nonce.into(), sig))
}

/// Verifies a widget token for this organization and widget, in constant time.
pub fn verify_token(secret: &str, org_id: &str, widget_id: &str, token: &str) -> bool {
    let Some((org, widget, nonce, sig)) = token_claims(token) else {
        return false;
    };
    // The ids are public; only the signature needs a constant-time check.
    org == org_id
        && widget == widget_id
        && hmac_verify(
            secret.as_bytes(),
            &[format!("{org}:{widget}:{nonce}").as_bytes()],
            &sig,
        )
}

/// Checks an identified visitor's `user_hash` = hex HMAC-SHA256(widget secret, user_id).
pub fn verify_user_hash(secret: &str, user_id: &str, user_hash: &str) -> bool {
    let Ok(expected) = hex_decode(user_hash) else {
        return false;
    };
    hmac_verify(secret.as_bytes(), &[user_id.as_bytes()], &expected)
}

/// The `user_hash` a customer's backend computes for `user_id`.
pub fn user_hash(secret: &str, user_id: &str) -> String {
    hex::encode(hmac_bytes(secret.as_bytes(), &[user_id.as_bytes()]))
}

/// Hex of at most 128 bytes; longer input is refused before decoding.
fn hex_decode(s: &str) -> Result<Vec<u8>, ()> {
    if s.len() > 256 {
        return Err(());
    }
    hex::decode(s).map_err(|_| ())
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

/// What a widget session token carries. It is signed with the deployment's session key,
/// so checking one needs no storage; its signing secret is derived from the same key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Session id.
    pub sid: String,
    /// Organization.
    pub org: String,
    /// Widget.
    pub wid: String,
    /// The visitor: `v:vis_…` (anonymous) or `u:{user_id}` (identified).
    pub vis: String,
    /// The anonymous visitor id handed to the page.
    pub vid: String,
    /// The origin the session was opened from.
    pub origin: String,
    /// Expiry, unix ms.
    pub exp: i64,
    /// Fingerprint of the widget secret at opening.
    pub gen: String,
}

const SESSION_PREFIX: &str = "gws_";

/// Encodes and signs a session token.
pub fn encode_session(key: &[u8], claims: &SessionClaims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let sig = URL_SAFE_NO_PAD.encode(hmac_bytes(key, &[b"session.", body.as_bytes()]));
    format!("{SESSION_PREFIX}{body}.{sig}")
}

/// Checks a session token's signature (constant time) and reads it; `None` if it was not
/// issued by this deployment. Expiry is the caller's to check.
pub fn decode_session(key: &[u8], token: &str) -> Option<SessionClaims> {
    if token.len() > 2048 {
        return None;
    }
    let (body, sig) = token.strip_prefix(SESSION_PREFIX)?.split_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    if !hmac_verify(key, &[b"session.", body.as_bytes()], &sig) {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

/// The per-session signing secret (`gss_…`), derived so that nothing needs storing.
pub fn session_secret(key: &[u8], sid: &str) -> String {
    format!(
        "gss_{}",
        URL_SAFE_NO_PAD.encode(hmac_bytes(key, &[b"signing-secret.", sid.as_bytes()]))
    )
}

// ---------------------------------------------------------------------------------------
// Request signatures
// ---------------------------------------------------------------------------------------

/// Why a signed request was refused (before the nonce check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// Headers missing or malformed, or the MAC does not match.
    Bad,
    /// The timestamp is more than five minutes from now.
    Stale,
}

/// The signature a client sends: `v1=` + hex HMAC over `{ts}.{nonce}.{METHOD}.{path}.{body}`.
pub fn sign_request(
    secret: &str,
    timestamp: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let head = format!("{timestamp}.{nonce}.{method}.{path}.");
    format!(
        "v1={}",
        hex::encode(hmac_bytes(secret.as_bytes(), &[head.as_bytes(), body]))
    )
}

/// Whether a nonce has the required shape: 16 to 128 base64url characters.
pub fn valid_nonce(nonce: &str) -> bool {
    (16..=128).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Verifies a request signature in constant time, and the timestamp's freshness.
#[allow(clippy::too_many_arguments)]
pub fn verify_request(
    secret: &str,
    timestamp: &str,
    nonce: &str,
    signature: &str,
    method: &str,
    path: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .parse()
        .ok()
        .filter(|_| timestamp.len() <= 12 && timestamp.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(SignatureError::Bad)?;
    if !valid_nonce(nonce) {
        return Err(SignatureError::Bad);
    }
    let mac = signature
        .strip_prefix("v1=")
        .filter(|h| h.len() == 64)
        .and_then(|h| hex_decode(h).ok())
        .ok_or(SignatureError::Bad)?;
    let head = format!("{timestamp}.{nonce}.{method}.{path}.");
    // The MAC first: an attacker learns nothing about freshness without a valid signature.
    if !hmac_verify(secret.as_bytes(), &[head.as_bytes(), body], &mac) {
        return Err(SignatureError::Bad);
    }
    if (now_secs - ts).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_matched_exactly() {
        let a = AllowedOrigin::parse("HTTPS://App.Example.com:443").unwrap();
        assert_eq!(a.as_string(), "https://app.example.com");
        assert!(a.allows(&normalize_origin("https://app.example.com").unwrap()));
        assert!(!a.allows(&normalize_origin("http://app.example.com").unwrap()));
        assert!(!a.allows(&normalize_origin("https://app.example.com:8443").unwrap()));
        assert!(!a.allows(&normalize_origin("https://evil-app.example.com").unwrap()));
        let local = AllowedOrigin::parse("http://127.0.0.1:3000").unwrap();
        assert!(local.allows("http://127.0.0.1:3000"));
        assert!(!local.allows("http://127.0.0.1:3001"));
        let v6 = AllowedOrigin::parse("http://[::1]:8080").unwrap();
        assert!(v6.allows(&normalize_origin("http://[::1]:8080").unwrap()));
    }

    #[test]
    fn wildcards_cover_subdomains_only() {
        let w = AllowedOrigin::parse("https://*.example.com").unwrap();
        assert!(w.allows("https://a.example.com"));
        assert!(w.allows("https://a.b.example.com"));
        assert!(!w.allows("https://example.com"));
        assert!(!w.allows("https://a.example.com.evil.net"));
        assert!(!w.allows("https://aexample.com"));
        assert!(!w.allows("http://a.example.com"));
        assert!(!w.allows("https://a.example.com:8443"));
    }

    #[test]
    fn bad_allowlist_entries_are_refused() {
        for bad in [
            "*",
            "https://*",
            "https://*.com",
            "https://a.*.com",
            "https://ex*ample.com",
            "ftp://example.com",
            "https://example.com/path",
            "example.com",
            "https://",
            "https://user@example.com",
            "https://example.com:0",
            "https://example.com:99999",
            "null",
        ] {
            assert!(AllowedOrigin::parse(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(normalize_origin("null"), None);
        assert_eq!(normalize_origin("https://*.example.com"), None);
    }

    #[test]
    fn widget_tokens_verify_for_their_widget_only() {
        let secret = new_secret();
        let token = mint_token(&secret, "org_1", "wgt_1");
        assert!(verify_token(&secret, "org_1", "wgt_1", &token));
        assert!(!verify_token(&secret, "org_1", "wgt_2", &token));
        assert!(!verify_token(&secret, "org_2", "wgt_1", &token));
        assert!(!verify_token(&new_secret(), "org_1", "wgt_1", &token));
        assert!(!verify_token(&secret, "org_1", "wgt_1", "garbage"));
        // The documented shape: base64url("org:widget:nonce:signature").
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap();
        let parts: Vec<&str> = raw.split(':').collect();
        assert_eq!(&parts[..2], &["org_1", "wgt_1"]);
        let expected = URL_SAFE_NO_PAD.encode(hmac_bytes(
            secret.as_bytes(),
            &[format!("org_1:wgt_1:{}", parts[2]).as_bytes()],
        ));
        assert_eq!(parts[3], expected);
        // A forged signature for the same claims fails.
        let forged = URL_SAFE_NO_PAD.encode(format!("org_1:wgt_1:{}:{}", parts[2], "AAAA"));
        assert!(!verify_token(&secret, "org_1", "wgt_1", &forged));
    }

    #[test]
    fn user_hashes_are_hmac_of_the_user_id() {
        let h = user_hash("wsec_k", "user-42");
        assert_eq!(h.len(), 64);
        assert!(verify_user_hash("wsec_k", "user-42", &h));
        assert!(!verify_user_hash("wsec_k", "user-43", &h));
        assert!(!verify_user_hash("wsec_other", "user-42", &h));
        assert!(!verify_user_hash("wsec_k", "user-42", "zz"));
    }

    #[test]
    fn session_tokens_are_tamper_evident() {
        let key = [7u8; 32];
        let claims = SessionClaims {
            sid: "s1".into(),
            org: "org_1".into(),
            wid: "wgt_1".into(),
            vis: "v:vis_1".into(),
            vid: "vis_1".into(),
            origin: "https://a.example.com".into(),
            exp: 1_000,
            gen: "abcd".into(),
        };
        let t = encode_session(&key, &claims);
        assert_eq!(decode_session(&key, &t), Some(claims.clone()));
        assert_eq!(decode_session(&[8u8; 32], &t), None);
        let mut other = claims;
        other.org = "org_2".into();
        let body_other = encode_session(&key, &other);
        // Swapping bodies between tokens breaks the signature.
        let (_, sig) = t.split_once('.').unwrap();
        let (body, _) = body_other.split_once('.').unwrap();
        assert_eq!(decode_session(&key, &format!("{body}.{sig}")), None);
        assert_ne!(session_secret(&key, "s1"), session_secret(&key, "s2"));
    }

    #[test]
    fn request_signatures_cover_every_part() {
        let s = "gss_secret";
        let sig = sign_request(
            s,
            "1700000000",
            "abcdefghijklmnopqrstuv",
            "POST",
            "/v1/widgets/w/chat",
            b"{}",
        );
        let ok = |ts: &str, nonce: &str, m: &str, p: &str, b: &[u8], now: i64| {
            verify_request(s, ts, nonce, &sig, m, p, b, now)
        };
        let n = "abcdefghijklmnopqrstuv";
        let now = 1_700_000_000;
        assert_eq!(
            ok("1700000000", n, "POST", "/v1/widgets/w/chat", b"{}", now),
            Ok(())
        );
        assert_eq!(
            ok("1700000001", n, "POST", "/v1/widgets/w/chat", b"{}", now),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            ok(
                "1700000000",
                "abcdefghijklmnopqrstuw",
                "POST",
                "/v1/widgets/w/chat",
                b"{}",
                now
            ),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            ok("1700000000", n, "GET", "/v1/widgets/w/chat", b"{}", now),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            ok("1700000000", n, "POST", "/v1/widgets/x/chat", b"{}", now),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            ok("1700000000", n, "POST", "/v1/widgets/w/chat", b"{ }", now),
            Err(SignatureError::Bad)
        );
        // Five minutes either way, not a second more.
        assert_eq!(
            ok(
                "1700000000",
                n,
                "POST",
                "/v1/widgets/w/chat",
                b"{}",
                now + 300
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                "1700000000",
                n,
                "POST",
                "/v1/widgets/w/chat",
                b"{}",
                now - 300
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                "1700000000",
                n,
                "POST",
                "/v1/widgets/w/chat",
                b"{}",
                now + 301
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            ok(
                "1700000000",
                n,
                "POST",
                "/v1/widgets/w/chat",
                b"{}",
                now - 301
            ),
            Err(SignatureError::Stale)
        );
        // Malformed headers.
        assert_eq!(
            verify_request(s, "17e8", n, &sig, "POST", "/", b"", now),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            verify_request(s, "1700000000", "short", &sig, "POST", "/", b"", now),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            verify_request(s, "1700000000", n, "v1=zz", "POST", "/", b"", now),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            verify_request(
                s,
                "1700000000",
                n,
                &sig.replace("v1=", "v2="),
                "POST",
                "/v1/widgets/w/chat",
                b"{}",
                now
            ),
            Err(SignatureError::Bad)
        );
    }

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // hex HMAC-SHA256(key = UTF-8 of the secret, "{ts}.{nonce}.{METHOD}.{path}.{body}").
        let sig = sign_request("k", "1", "n", "POST", "/p", b"b");
        let expected = hex::encode(hmac_bytes(b"k", &[b"1.n.POST./p.b"]));
        assert_eq!(sig, format!("v1={expected}"));
    }
}
