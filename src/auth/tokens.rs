use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` random bytes from the OS generator, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Lower-case hex SHA-256, the at-rest form of every bearer secret.
pub fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Constant-time equality of two strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn keystream(key: &str, len: usize) -> Vec<u8> {
    // HMAC-SHA256 in counter mode: enough keystream for a token of up to a few blocks.
    let mut out = Vec::with_capacity(len);
    let mut counter = 0u32;
    while out.len() < len {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
            break;
        };
        mac.update(b"gatehouse-refresh-successor");
        mac.update(&counter.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// Seals `successor` so that only a holder of `parent` can recover it.
///
/// Refresh tokens are stored hashed, yet two tabs racing with the same parent token must
/// both receive the same successor; the successor is kept sealed under the parent token.
pub fn seal(parent: &str, successor: &str) -> String {
    let ks = keystream(parent, successor.len());
    let sealed: Vec<u8> = successor.bytes().zip(ks).map(|(a, b)| a ^ b).collect();
    URL_SAFE_NO_PAD.encode(sealed)
}

/// Recovers a sealed successor with its parent token.
pub fn unseal(parent: &str, sealed: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    let ks = keystream(parent, bytes.len());
    String::from_utf8(bytes.into_iter().zip(ks).map(|(a, b)| a ^ b).collect()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_successor_opens_only_with_its_parent() {
        let parent = random_token(32);
        let child = random_token(32);
        let sealed = seal(&parent, &child);
        assert_ne!(sealed, child);
        assert_eq!(unseal(&parent, &sealed).as_deref(), Some(child.as_str()));
        assert_ne!(
            unseal(&random_token(32), &sealed).as_deref(),
            Some(child.as_str())
        );
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
