//! PKCE (RFC 7636) as GoTrue accepts it: a `code_challenge` with its method (`s256` or
//! `plain`) when a flow starts, the `code_verifier` when its auth code is exchanged.
//!
//! Every challenge is kept in one form, the S256 one (base64url of SHA-256 of the verifier):
//! a `plain` challenge, which is the verifier itself, is hashed before it is stored, so a copy
//! of the database holds no verifier whichever method the client chose.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::tokens::ct_eq;

/// Why a challenge is refused; the HTTP layer words each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// One of `code_challenge` and `code_challenge_method` without the other.
    Incomplete,
    /// Shorter than 43 or longer than 128 characters.
    Length,
    /// A character outside RFC 7636's unreserved set.
    Charset,
    /// A method other than `s256` and `plain`.
    Method,
}

/// Least and most characters of a challenge (RFC 7636, 4.1 and 4.2).
pub const MIN_LEN: usize = 43;
/// See [`MIN_LEN`].
pub const MAX_LEN: usize = 128;

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The S256 challenge of `verifier` (what Gatehouse sends a provider when it is the client).
pub fn s256_challenge(verifier: &str) -> String {
    s256(verifier)
}

/// Checks a challenge and its method as sent (empty strings count as absent) and returns
/// its stored form, or `None` when neither was sent (the implicit flow).
pub fn stored_challenge(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<Option<String>, ChallengeError> {
    let challenge = challenge.filter(|c| !c.is_empty());
    let method = method.filter(|m| !m.is_empty());
    let (challenge, method) = match (challenge, method) {
        (None, None) => return Ok(None),
        (Some(c), Some(m)) => (c, m),
        _ => return Err(ChallengeError::Incomplete),
    };
    if !(MIN_LEN..=MAX_LEN).contains(&challenge.len()) {
        return Err(ChallengeError::Length);
    }
    if !challenge
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(ChallengeError::Charset);
    }
    match method.to_ascii_lowercase().as_str() {
        "s256" => Ok(Some(challenge.to_string())),
        "plain" => Ok(Some(s256(challenge))),
        _ => Err(ChallengeError::Method),
    }
}

/// Whether `verifier` is the one a stored challenge was made from (constant time).
pub fn verifier_matches(stored: &str, verifier: &str) -> bool {
    !verifier.is_empty() && verifier.len() <= MAX_LEN && ct_eq(&s256(verifier), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636, appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn the_rfc_example_verifies() {
        let stored = stored_challenge(Some(CHALLENGE), Some("s256"))
            .unwrap()
            .unwrap();
        assert!(verifier_matches(&stored, VERIFIER));
        assert!(!verifier_matches(&stored, CHALLENGE));
        let upper = stored_challenge(Some(CHALLENGE), Some("S256"))
            .unwrap()
            .unwrap();
        assert_eq!(upper, stored);
    }

    #[test]
    fn a_plain_challenge_is_stored_hashed() {
        let stored = stored_challenge(Some(VERIFIER), Some("plain"))
            .unwrap()
            .unwrap();
        assert_eq!(stored, CHALLENGE);
        assert!(verifier_matches(&stored, VERIFIER));
    }

    #[test]
    fn bad_challenges_are_refused() {
        assert_eq!(stored_challenge(None, None), Ok(None));
        assert_eq!(stored_challenge(Some(""), Some("")), Ok(None));
        assert_eq!(
            stored_challenge(Some(CHALLENGE), None),
            Err(ChallengeError::Incomplete)
        );
        assert_eq!(
            stored_challenge(None, Some("s256")),
            Err(ChallengeError::Incomplete)
        );
        assert_eq!(
            stored_challenge(Some("short"), Some("s256")),
            Err(ChallengeError::Length)
        );
        let long = "a".repeat(129);
        assert_eq!(
            stored_challenge(Some(&long), Some("s256")),
            Err(ChallengeError::Length)
        );
        let bad = format!("{}+", &CHALLENGE[..43]);
        assert_eq!(
            stored_challenge(Some(&bad), Some("s256")),
            Err(ChallengeError::Charset)
        );
        assert_eq!(
            stored_challenge(Some(CHALLENGE), Some("md5")),
            Err(ChallengeError::Method)
        );
        assert!(!verifier_matches(CHALLENGE, ""));
    }
}
