//! Time-based one-time passwords (RFC 6238), as authenticator apps compute them: HMAC-SHA1,
//! six digits, 30-second steps, the secret shown as base32 in an `otpauth://` URI and its QR
//! code. The codes come from `totp-rs`; this module decides which steps are accepted.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

/// Bytes of a new secret (160 bits, RFC 4226's recommendation for HMAC-SHA1).
pub const SECRET_BYTES: usize = 20;
/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Steps either side of the current one whose codes are accepted (clock drift, a code typed
/// as it changed), as GoTrue accepts them.
pub const SKEW_STEPS: i64 = 1;

/// A new random secret.
pub fn new_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut s = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

fn totp(secret: &[u8], issuer: Option<&str>, account: &str) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        6,
        0,
        STEP_SECONDS as u64,
        secret.to_vec(),
        issuer.map(str::to_string),
        account.to_string(),
    )
}

/// The secret in base32 (RFC 4648, no padding), as an app's manual entry takes it.
pub fn base32(secret: &[u8]) -> String {
    totp(secret, None, "").get_secret_base32()
}

/// The `otpauth://totp/{issuer}:{account}?secret=…&issuer=…` URI an app scans.
pub fn uri(secret: &[u8], issuer: &str, account: &str) -> String {
    totp(secret, Some(issuer).filter(|i| !i.is_empty()), account).get_url()
}

/// The URI as a QR code in SVG (the document, without a `data:` prefix, as GoTrue answers it;
/// supabase-js adds the prefix). `None` only if the URI is too long for a QR code.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// The step `unix_secs` falls in.
pub fn step_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECONDS)
}

/// The code of `step`.
pub fn code_at(secret: &[u8], step: i64) -> String {
    totp(secret, None, "").generate((step.max(0) * STEP_SECONDS) as u64)
}

/// The step whose code `code` is, among the current step at `now_secs` and [`SKEW_STEPS`]
/// either side, if any, and only if it is later than `after` (the last step accepted for
/// this factor): a code is used at most once, and never one older than a code already used.
/// Every candidate is compared, in constant time.
pub fn matching_step(secret: &[u8], code: &str, now_secs: i64, after: Option<i64>) -> Option<i64> {
    let now = step_of(now_secs);
    let mut found = None;
    for step in (now - SKEW_STEPS)..=(now + SKEW_STEPS) {
        let expected = code_at(secret, step);
        let same: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        if same && after.is_none_or(|a| step > a) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (the eight-digit codes, of which six are the last six).
    #[test]
    fn codes_match_rfc_6238() {
        let secret = b"12345678901234567890";
        for (t, code) in [
            (59_i64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(code_at(secret, step_of(t)), code[2..]);
        }
    }

    #[test]
    fn a_code_is_accepted_once_and_only_near_its_step() {
        let secret = new_secret();
        let now = 1_800_000_000;
        let code = code_at(&secret, step_of(now));
        assert_eq!(matching_step(&secret, &code, now, None), Some(step_of(now)));
        // The same step again: refused.
        assert_eq!(matching_step(&secret, &code, now, Some(step_of(now))), None);
        // The previous step's code is still accepted once, the one before it is not.
        let prev = code_at(&secret, step_of(now) - 1);
        assert_eq!(
            matching_step(&secret, &prev, now, None),
            Some(step_of(now) - 1)
        );
        let old = code_at(&secret, step_of(now) - 2);
        assert_eq!(matching_step(&secret, &old, now, None), None);
        // After a later step was used, an earlier one is refused.
        assert_eq!(matching_step(&secret, &prev, now, Some(step_of(now))), None);
        assert_eq!(matching_step(&secret, "12345", now, None), None);
        assert_eq!(matching_step(&secret, "", now, None), None);
    }

    #[test]
    fn the_uri_and_qr_code_carry_the_secret() {
        let secret = b"12345678901234567890";
        assert_eq!(base32(secret), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let uri = uri(secret, "example.com", "ada@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/example.com:ada%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=example.com"
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("</svg>"));
    }
}
