use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sealed::{SealError, SealingKey};

/// `n` random bytes from the OS generator, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Lower-case hex SHA-256, the at-rest form of every bearer secret.
pub fn sha256_hex(secret: &str) -> String {
    hex_lower(&Sha256::digest(secret.as_bytes()).into())
}

/// A 32-byte digest as 64 lowercase hex digits, through a buffer: `hex::encode` collects an
/// iterator of chars, about 1 % of a request's CPU where a bearer secret is hashed on each
/// request (a JWT's verified-token cache, sessions).
pub fn hex_lower(digest: &[u8; 32]) -> String {
    let mut buf = [0u8; 64];
    // Cannot fail: the buffer is exactly twice the input.
    let _ = hex::encode_to_slice(digest, &mut buf);
    // Hex digits are ASCII: always valid UTF-8.
    std::str::from_utf8(&buf)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Constant-time equality of two strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The HKDF purpose of the key that seals a refresh token's successor.
const SUCCESSOR_PURPOSE: &str = "gatehouse/refresh-successor/v1";

/// Seals `successor` so that only a holder of `parent` can recover it.
///
/// Refresh tokens are stored hashed, yet two tabs racing with the same parent token must
/// both receive the same successor; the successor is kept sealed under a key derived from
/// the parent token, which the server never stores.
pub fn seal_successor(parent: &str, successor: &str) -> Result<String, SealError> {
    SealingKey::derive(parent.as_bytes(), SUCCESSOR_PURPOSE)?.seal(successor.as_bytes(), &[])
}

/// Recovers a sealed successor with its parent token; `None` if it does not open.
///
/// Only the [`sealed`](super::sealed) format opens. A row holding a successor in another
/// format, such as the unauthenticated keystream older databases may hold, is deliberately
/// not read: the refresh answers as for a reuse outside the reuse interval and ends the
/// session. That fails closed, keeps no hand-made cipher around, and only touches tokens
/// rotated within the reuse interval (seconds) before the upgrade.
pub fn open_successor(parent: &str, sealed: &str) -> Option<String> {
    let plain = SealingKey::derive(parent.as_bytes(), SUCCESSOR_PURPOSE)
        .ok()?
        .open(sealed, &[])?;
    String::from_utf8(plain.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_successor_opens_only_with_its_parent() {
        let parent = random_token(32);
        let child = random_token(32);
        let sealed = seal_successor(&parent, &child).unwrap();
        assert!(!sealed.contains(&child));
        assert_eq!(
            open_successor(&parent, &sealed).as_deref(),
            Some(child.as_str())
        );
        assert_eq!(open_successor(&random_token(32), &sealed), None);
    }

    #[test]
    fn a_successor_sealed_by_the_keystream_format_does_not_open() {
        // The keystream format older databases may hold, without a tag:
        // base64url(successor XOR HMAC-SHA256(parent, label ‖ counter) blocks).
        let parent = "lEgRqaUFMW3xmv0mTN1HsyKkpsGxCkdz_yCbTrFUc8M";
        let legacy = "QQyo0Euhw9MNC7V60hMoFeexfxPSeUkBf6C-wEBKvtcEu6oEWJ5MlSclMQ";
        assert_eq!(open_successor(parent, legacy), None);
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(ct_eq("same", "same") && !ct_eq("same", "diff") && !ct_eq("a", "ab"));
    }
}
