//! The API key format: `{prefix}_{env}_{body}{checksum}`, GitHub's scheme.
//!
//! The body is 43 base62 characters drawn uniformly (≥ 256 bits); the checksum is the CRC32
//! of everything before it, as 6 base62 characters. A mistyped or truncated key fails the
//! checksum and is refused without a storage lookup, and secret scanners can match the shape.

use rand::Rng;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// Characters of a key shown in listings (`start••••`).
pub const START_LEN: usize = 12;

/// `live` or `test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Production traffic.
    Live,
    /// Development and tests.
    Test,
}

impl Environment {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
    /// Parses `live` / `test`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }
}

fn checksum(s: &str) -> String {
    let mut n = crc32fast::hash(s.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Mints a new key.
pub fn generate(prefix: &str, env: Environment) -> String {
    let mut rng = rand::rngs::OsRng;
    let body: String = (0..BODY_LEN)
        .map(|_| BASE62[rng.gen_range(0..62)] as char)
        .collect();
    let head = format!("{prefix}_{}_{body}", env.as_str());
    let sum = checksum(&head);
    format!("{head}{sum}")
}

/// Checks the shape and checksum of a presented key; returns its environment.
pub fn parse(prefix: &str, key: &str) -> Option<Environment> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('_')?;
    let (env, tail) = rest.split_once('_')?;
    let env = Environment::parse(env)?;
    if tail.len() != BODY_LEN + CHECKSUM_LEN || !tail.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (head, sum) = key.split_at(key.len() - CHECKSUM_LEN);
    (checksum(head) == sum).then_some(env)
}

/// Whether a bearer credential is shaped like one of our keys (rather than a JWT).
pub fn looks_like_key(prefix: &str, credential: &str) -> bool {
    credential.len() > prefix.len()
        && credential.starts_with(prefix)
        && credential.as_bytes()[prefix.len()] == b'_'
}

/// The listing prefix of a key.
pub fn start(key: &str) -> String {
    key.chars().take(START_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_a_typo_does_not() {
        let k = generate("gk", Environment::Test);
        assert!(k.starts_with("gk_test_"));
        assert_eq!(k.len(), "gk_test_".len() + 49);
        assert_eq!(parse("gk", &k), Some(Environment::Test));
        let mut typo: Vec<char> = k.chars().collect();
        let i = 20;
        typo[i] = if typo[i] == 'a' { 'b' } else { 'a' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(parse("gk", &typo), None);
        assert_eq!(parse("gk", &k[..k.len() - 1]), None);
        assert_eq!(parse("vk", &k), None);
        assert_eq!(parse("gk", "gk_prod_abc"), None);
        assert_eq!(start(&k).len(), 12);
        assert!(looks_like_key("gk", &k) && !looks_like_key("gk", "eyJhbGciOi.x.y"));
    }

    #[test]
    fn the_checksum_is_six_base62_characters() {
        assert_eq!(checksum("").len(), 6);
        assert_eq!(checksum("gk_live_x"), checksum("gk_live_x"));
        assert_ne!(checksum("gk_live_x"), checksum("gk_live_y"));
    }
}
