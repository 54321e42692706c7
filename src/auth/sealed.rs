//! Secrets that must be recoverable at rest, sealed with an AEAD.
//!
//! Every such secret goes through this one building block: a [`SealingKey`] derived with
//! HKDF-SHA256 from some input key material and a purpose label, and XChaCha20-Poly1305
//! with a random 192-bit nonce per message. A sealed value is text, so it fits a `TEXT`
//! column on both engines: `v1.` followed by base64url (no padding) of nonce ‖ ciphertext ‖
//! tag. Opening checks the tag, so a value that was altered, sealed under another key or
//! for another purpose, or written in any other format does not open.
//! `docs/architecture-keys.md` says which secrets are sealed and with which keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use secrecy::zeroize::Zeroizing;
use sha2::Sha256;

/// The format tag in front of every sealed value; a new format gets a new tag.
const FORMAT: &str = "v1.";
/// XChaCha20-Poly1305's nonce length.
const NONCE_LEN: usize = 24;
/// Poly1305's tag length.
const TAG_LEN: usize = 16;

/// Sealing failed: HKDF or the cipher refused their input (lengths far beyond any secret).
#[derive(Debug, thiserror::Error)]
#[error("sealing failed")]
pub struct SealError;

/// A key that seals and opens secrets for one purpose. The key bytes are wiped on drop.
pub struct SealingKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(***)")
    }
}

impl SealingKey {
    /// Derives a 256-bit key from `ikm` with HKDF-SHA256 (no salt), `purpose` as the info.
    ///
    /// `ikm` must carry at least 128 bits of entropy (a random token or a deployment
    /// secret, never a password). `purpose` names the use (and its version), so one input
    /// never yields the same key for two uses.
    pub fn derive(ikm: &[u8], purpose: &str) -> Result<Self, SealError> {
        let mut okm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, ikm)
            .expand(purpose.as_bytes(), &mut okm[..])
            .map_err(|_| SealError)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&okm[..]).map_err(|_| SealError)?;
        Ok(Self { cipher })
    }

    /// Seals `plaintext`, bound to `aad` (data that must match when opening, stored in the
    /// clear or known from context, such as the owner's id; empty when there is none).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, SealError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError)?;
        let mut raw = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ciphertext);
        Ok(format!("{FORMAT}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Opens a value made by [`SealingKey::seal`] with the same key and `aad`; `None` if it
    /// is in another format, was altered, or was sealed under another key or `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(FORMAT)?).ok()?;
        let (nonce, ciphertext) = raw.split_first_chunk::<NONCE_LEN>()?;
        if ciphertext.len() < TAG_LEN {
            return None;
        }
        self.cipher
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ikm: &str, purpose: &str) -> SealingKey {
        SealingKey::derive(ikm.as_bytes(), purpose).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_aad() {
        let k = key("input key material of a test", "test/v1");
        let sealed = k.seal(b"the secret", b"owner-1").unwrap();
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("the secret"));
        assert_eq!(
            k.open(&sealed, b"owner-1").as_deref().map(Vec::as_slice),
            Some(&b"the secret"[..])
        );
        // A fresh nonce each time: the same secret never seals to the same text.
        assert_ne!(sealed, k.seal(b"the secret", b"owner-1").unwrap());
        let empty = k.seal(b"", b"").unwrap();
        assert_eq!(k.open(&empty, b"").as_deref().map(Vec::len), Some(0));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let k = key("input key material of a test", "test/v1");
        let sealed = k.seal(b"the secret", b"").unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&sealed[FORMAT.len()..]).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let text = format!("{FORMAT}{}", URL_SAFE_NO_PAD.encode(&bad));
            assert!(
                k.open(&text, b"").is_none(),
                "byte {i} flipped, still opened"
            );
        }
        let cut = &sealed[..sealed.len() - 2];
        assert!(k.open(cut, b"").is_none());
    }

    #[test]
    fn another_key_purpose_or_aad_does_not_open() {
        let k = key("input key material of a test", "test/v1");
        let sealed = k.seal(b"the secret", b"owner-1").unwrap();
        assert!(key("other key material of a test", "test/v1")
            .open(&sealed, b"owner-1")
            .is_none());
        assert!(key("input key material of a test", "test/v2")
            .open(&sealed, b"owner-1")
            .is_none());
        assert!(k.open(&sealed, b"owner-2").is_none());
    }

    #[test]
    fn other_formats_do_not_open() {
        let k = key("input key material of a test", "test/v1");
        let sealed = k.seal(b"the secret", b"").unwrap();
        for bad in [
            "",
            "v1.",
            "v1.!!",
            &sealed[FORMAT.len()..],
            &sealed.replacen("v1.", "v2.", 1),
        ] {
            assert!(k.open(bad, b"").is_none(), "{bad:?} opened");
        }
    }

    #[test]
    fn the_key_is_not_printed() {
        let k = key("input key material of a test", "test/v1");
        assert_eq!(format!("{k:?}"), "SealingKey(***)");
    }
}
