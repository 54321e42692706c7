use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A stored ES256 signing key.
#[derive(Clone)]
pub struct StoredKey {
    /// Key id, published in the JWKS and in each token's header.
    pub kid: String,
    /// PKCS#8 PEM of the private key.
    pub private_pem: String,
    /// Unix ms of creation; the newest key signs.
    pub created_at: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Generates a new P-256 key.
pub fn generate_key(now_ms: i64) -> anyhow::Result<StoredKey> {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
    let kid = crate::auth::tokens::random_token(12);
    Ok(StoredKey {
        kid,
        private_pem: pem.to_string(),
        created_at: now_ms,
    })
}

/// One `amr` entry: how and when the user authenticated.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Amr {
    /// `password`, `otp`, …
    pub method: String,
    /// Unix seconds.
    pub timestamp: i64,
}

/// Supabase-compatible access-token claims.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Issuer: `{public_url}/auth/v1`.
    pub iss: String,
    /// The user's UUID.
    pub sub: String,
    /// Always `authenticated`.
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// The user's email.
    pub email: String,
    /// The user's phone (empty).
    pub phone: String,
    /// Postgres role name, `authenticated`.
    pub role: String,
    /// Authenticator assurance level.
    pub aal: String,
    /// Authentication methods.
    pub amr: Vec<Amr>,
    /// The session this token belongs to.
    pub session_id: String,
    /// Anonymous sign-in (never, here).
    pub is_anonymous: bool,
    /// Provider data.
    pub app_metadata: Value,
    /// User-editable data.
    pub user_metadata: Value,
}

/// Claims of an OAuth access token (RFC 9068, header `typ: at+jwt`), always ES256 so a
/// resource server can verify it with the JWKS alone (also when `jwt_secret` signs the
/// Supabase-compatible tokens with HS256).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    /// The authorization server: `public_url`.
    pub iss: String,
    /// The user's id.
    pub sub: String,
    /// The resource (RFC 8707): `{public_url}/v1` or `{public_url}/api`.
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// The OAuth client.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The organization the grant applies to.
    pub org_id: String,
    /// The grant (consent) the token was issued under; revoking it ends the token.
    pub grant_id: String,
    /// The assurance level the grant's consent was given at (`aal1` or `aal2`), as the
    /// Supabase-compatible tokens carry it. Absent from tokens issued before it existed, which
    /// count as `aal1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aal: Option<String>,
    /// RFC 8176 authentication methods of the consent: `["mfa"]` at aal2, else absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

/// The JOSE `typ` of OAuth access tokens (RFC 9068 section 2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The `role` of a service key.
pub const SERVICE_ROLE: &str = "service_role";

/// The claims of a service key (Supabase's carry `iss` = `supabase` and a `ref`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceClaims {
    /// The issuer (not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `service_role`.
    pub role: String,
    /// Issued at (unix seconds).
    #[serde(default)]
    pub iat: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Not a JWT, bad signature, wrong algorithm or unknown key.
    Invalid,
    /// Signature fine, but expired.
    Expired,
}

struct KeySet {
    signing: (Algorithm, Option<String>, EncodingKey),
    /// The newest ES256 key, which signs OAuth access tokens whatever `signing` is.
    es256: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
    hs256: Option<DecodingKey>,
    jwks: Value,
}

/// The signing and verifying keys of this deployment.
pub struct JwtKeys {
    set: RwLock<Arc<KeySet>>,
    issuer: String,
    hs_secret: Option<String>,
}

impl JwtKeys {
    /// Keys from storage (newest signs unless an HS256 secret is configured).
    pub fn new(
        stored: &[StoredKey],
        hs_secret: Option<&str>,
        issuer: String,
    ) -> anyhow::Result<Self> {
        let set = build_set(stored, hs_secret)?;
        Ok(Self {
            set: RwLock::new(Arc::new(set)),
            issuer,
            hs_secret: hs_secret.map(str::to_string),
        })
    }

    /// Replaces the key set (after a rotation).
    pub fn reload(&self, stored: &[StoredKey]) -> anyhow::Result<()> {
        let set = build_set(stored, self.hs_secret.as_deref())?;
        if let Ok(mut guard) = self.set.write() {
            *guard = Arc::new(set);
        }
        Ok(())
    }

    fn current(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The issuer claim tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs claims with the current key.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let set = self.current();
        let (alg, kid, key) = &set.signing;
        let mut header = Header::new(*alg);
        header.kid = kid.clone();
        let token = jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        if *alg == Algorithm::ES256 {
            return low_s_form(token);
        }
        Ok(token)
    }

    /// Verifies signature, algorithm, issuer, audience and expiry at `now_secs` (unix seconds,
    /// from the injected clock). Every route that accepts an access token comes through here.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid)?;
        let set = self.current();
        let key = match header.alg {
            Algorithm::ES256 => header.kid.as_deref().and_then(|kid| set.verifying.get(kid)),
            Algorithm::HS256 => set.hs256.as_ref(),
            _ => None,
        }
        .ok_or(JwtError::Invalid)?;
        if header.alg == Algorithm::ES256 && !low_s_signature(token) {
            return Err(JwtError::Invalid);
        }
        let mut validation = Validation::new(header.alg);
        // Expiry is decided below by `is_expired` against the injected clock, not by the
        // library against the system clock (whose rule, `exp < now - leeway`, admits a token
        // in its expiry second).
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_audience(&["authenticated"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|_| JwtError::Invalid)?
            .claims;
        if is_expired(claims.exp, now_secs) {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }

    /// Signs an OAuth access token (RFC 9068): ES256 with the newest stored key, header
    /// `typ: at+jwt`.
    pub fn sign_access(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        self.sign_es256(claims, Some(ACCESS_TOKEN_TYP))
    }

    /// Signs claims with the newest stored ES256 key (whatever signs the Supabase-compatible
    /// tokens), so anyone can verify them with the JWKS: OAuth access and ID tokens.
    pub fn sign_es256<T: Serialize>(
        &self,
        claims: &T,
        typ: Option<&str>,
    ) -> anyhow::Result<String> {
        let set = self.current();
        let Some((kid, key)) = &set.es256 else {
            anyhow::bail!("no ES256 key in storage");
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        header.typ = typ.map(str::to_string);
        let token = jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        low_s_form(token)
    }

    /// Verifies an OAuth access token: `typ: at+jwt`, ES256 by a key of the JWKS, issuer
    /// `issuer` (`public_url`), audience exactly `audience` (the resource being called) and
    /// expiry at `now_secs`. Whether its grant is still live is the caller's next question.
    pub fn verify_access(
        &self,
        token: &str,
        now_secs: i64,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok || header.alg != Algorithm::ES256 {
            return Err(JwtError::Invalid);
        }
        let set = self.current();
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| set.verifying.get(kid))
            .ok_or(JwtError::Invalid)?;
        if !low_s_signature(token) {
            return Err(JwtError::Invalid);
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map_err(|_| JwtError::Invalid)?
            .claims;
        if is_expired(claims.exp, now_secs) {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }

    /// Signs a service key: `{"role": "service_role"}` with this deployment's signing key
    /// (HS256 with `jwt_secret`, as Supabase's service key is; else the current ES256 key),
    /// valid for `ttl_secs`.
    pub fn sign_service(&self, now_secs: i64, ttl_secs: i64) -> anyhow::Result<String> {
        let claims = ServiceClaims {
            iss: Some(self.issuer.clone()),
            role: SERVICE_ROLE.into(),
            iat: now_secs,
            exp: now_secs + ttl_secs,
        };
        let set = self.current();
        let (alg, kid, key) = &set.signing;
        let mut header = Header::new(*alg);
        header.kid = kid.clone();
        let token = jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        if *alg == Algorithm::ES256 {
            return low_s_form(token);
        }
        Ok(token)
    }

    /// Verifies a service key: a token signed by one of this deployment's keys whose `role`
    /// is `service_role`, not expired. The issuer is not checked, so a Supabase project's own
    /// service key keeps working when its JWT secret is `jwt_secret`. A user's access token
    /// (`role` `authenticated`) is refused.
    pub fn verify_service(&self, token: &str, now_secs: i64) -> Result<(), JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid)?;
        let set = self.current();
        let key = match header.alg {
            Algorithm::ES256 => header.kid.as_deref().and_then(|kid| set.verifying.get(kid)),
            Algorithm::HS256 => set.hs256.as_ref(),
            _ => None,
        }
        .ok_or(JwtError::Invalid)?;
        if header.alg == Algorithm::ES256 && !low_s_signature(token) {
            return Err(JwtError::Invalid);
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<ServiceClaims>(token, key, &validation)
            .map_err(|_| JwtError::Invalid)?
            .claims;
        if claims.role != SERVICE_ROLE {
            return Err(JwtError::Invalid);
        }
        if is_expired(claims.exp, now_secs) {
            return Err(JwtError::Expired);
        }
        Ok(())
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        self.current().jwks.clone()
    }
}

/// The one expiry rule for access tokens: a token is dead from its `exp` second on.
pub fn is_expired(exp: i64, now_secs: i64) -> bool {
    exp <= now_secs
}

/// Whether an ES256 token's signature is in canonical low-S form. ECDSA signatures are
/// malleable (`(r, n - s)` verifies too) and `ring` accepts both, so a token could be
/// re-encoded into a second valid string; only the canonical one is accepted.
fn low_s_signature(token: &str) -> bool {
    let Some(sig) = token.rsplit('.').next() else {
        return false;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    match p256::ecdsa::Signature::from_slice(&bytes) {
        // `normalize_s` answers `Some` only when s > n/2.
        Ok(sig) => sig.normalize_s().is_none(),
        Err(_) => false,
    }
}

/// `ring` signs with either `s` or `n - s`; the verifier accepts only the low one, so a
/// high-S signature is replaced by its canonical twin (the same signature, normalised).
fn low_s_form(token: String) -> anyhow::Result<String> {
    let Some((signed, sig)) = token.rsplit_once('.') else {
        anyhow::bail!("signing produced no signature");
    };
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig)?)?;
    match sig.normalize_s() {
        Some(low) => Ok(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(low.to_bytes())
        )),
        None => Ok(token),
    }
}

fn build_set(stored: &[StoredKey], hs_secret: Option<&str>) -> anyhow::Result<KeySet> {
    let mut verifying = HashMap::new();
    let mut keys = Vec::new();
    let mut newest: Option<&StoredKey> = None;
    for k in stored {
        let secret =
            <p256::SecretKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&k.private_pem)
                .map_err(|e| anyhow::anyhow!("stored key {} is unreadable: {e}", k.kid))?;
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            anyhow::bail!("stored key {} has no affine coordinates", k.kid);
        };
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        verifying.insert(k.kid.clone(), DecodingKey::from_ec_components(&x, &y)?);
        keys.push(json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": k.kid, "alg": "ES256", "use": "sig", "key_ops": ["verify"]}));
        if newest.is_none_or(|n| k.created_at > n.created_at) {
            newest = Some(k);
        }
    }
    let es256 = match newest {
        Some(k) => Some((
            k.kid.clone(),
            EncodingKey::from_ec_pem(k.private_pem.as_bytes())?,
        )),
        None => None,
    };
    let signing = match (hs_secret, newest) {
        (Some(secret), _) => (
            Algorithm::HS256,
            None,
            EncodingKey::from_secret(secret.as_bytes()),
        ),
        (None, Some(k)) => (
            Algorithm::ES256,
            Some(k.kid.clone()),
            EncodingKey::from_ec_pem(k.private_pem.as_bytes())?,
        ),
        (None, None) => anyhow::bail!("no signing key in storage"),
    };
    Ok(KeySet {
        signing,
        es256,
        verifying,
        hs256: hs_secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
        jwks: json!({ "keys": keys }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "http://x/auth/v1".into(),
            sub: "u".into(),
            aud: "authenticated".into(),
            exp,
            iat: 0,
            email: "a@b.c".into(),
            phone: String::new(),
            role: "authenticated".into(),
            aal: "aal1".into(),
            amr: vec![],
            session_id: "s".into(),
            is_anonymous: false,
            app_metadata: json!({}),
            user_metadata: json!({}),
        }
    }

    /// The verifying clock's time in these tests.
    const NOW: i64 = 1_800_000_000;

    fn far() -> i64 {
        NOW + 3600
    }

    #[test]
    fn es256_tokens_round_trip_and_name_their_kid() {
        let k = generate_key(1).unwrap();
        let keys = JwtKeys::new(std::slice::from_ref(&k), None, "http://x/auth/v1".into()).unwrap();
        let t = keys.sign(&claims(far())).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&t).unwrap().kid.as_deref(),
            Some(k.kid.as_str())
        );
        assert_eq!(keys.verify(&t, NOW).unwrap().sub, "u");
        assert_eq!(keys.jwks()["keys"][0]["kid"], json!(k.kid));
    }

    #[test]
    fn expired_tampered_and_unsigned_tokens_are_refused() {
        let k = generate_key(1).unwrap();
        let keys = JwtKeys::new(&[k], None, "http://x/auth/v1".into()).unwrap();
        assert_eq!(
            keys.verify(&keys.sign(&claims(10)).unwrap(), NOW),
            Err(JwtError::Expired)
        );
        let t = keys.sign(&claims(far())).unwrap();
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        assert_eq!(keys.verify(&parts.join("."), NOW), Err(JwtError::Invalid));
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(far())).unwrap());
        assert_eq!(
            keys.verify(&format!("{none_header}.{payload}."), NOW),
            Err(JwtError::Invalid)
        );
        let other =
            JwtKeys::new(&[generate_key(2).unwrap()], None, "http://x/auth/v1".into()).unwrap();
        assert_eq!(
            keys.verify(&other.sign(&claims(far())).unwrap(), NOW),
            Err(JwtError::Invalid)
        );
    }

    #[test]
    fn a_rotated_key_signs_while_the_old_one_still_verifies() {
        let old = generate_key(1).unwrap();
        let keys =
            JwtKeys::new(std::slice::from_ref(&old), None, "http://x/auth/v1".into()).unwrap();
        let before = keys.sign(&claims(far())).unwrap();
        let new = generate_key(2).unwrap();
        keys.reload(&[old, new.clone()]).unwrap();
        let after = keys.sign(&claims(far())).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&after).unwrap().kid,
            Some(new.kid)
        );
        assert!(keys.verify(&before, NOW).is_ok());
    }

    #[test]
    fn a_token_is_refused_from_its_expiry_second_on() {
        let keys =
            JwtKeys::new(&[generate_key(1).unwrap()], None, "http://x/auth/v1".into()).unwrap();
        let t = keys.sign(&claims(NOW + 1)).unwrap();
        assert!(keys.verify(&t, NOW).is_ok());
        assert_eq!(keys.verify(&t, NOW + 1), Err(JwtError::Expired));
        assert_eq!(keys.verify(&t, NOW + 2), Err(JwtError::Expired));
    }

    /// The same token with its signature turned into the high-S twin `(r, n - s)`.
    fn high_s(token: &str) -> String {
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let (r, s) = sig.split_scalars();
        let twin = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        assert!(twin.normalize_s().is_some(), "the twin is high-S");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(twin.to_bytes()))
    }

    #[test]
    fn a_high_s_es256_signature_is_refused() {
        let keys =
            JwtKeys::new(&[generate_key(1).unwrap()], None, "http://x/auth/v1".into()).unwrap();
        // `ring` picks s or n - s at random; every token handed out is the low-S one, and
        // its high-S twin is refused.
        for _ in 0..16 {
            let t = keys.sign(&claims(far())).unwrap();
            assert!(keys.verify(&t, NOW).is_ok());
            assert_eq!(keys.verify(&high_s(&t), NOW), Err(JwtError::Invalid));
        }
    }

    #[test]
    fn service_keys_verify_and_user_tokens_are_not_service_keys() {
        let k = generate_key(1).unwrap();
        let es = JwtKeys::new(std::slice::from_ref(&k), None, "http://x/auth/v1".into()).unwrap();
        let hs = JwtKeys::new(
            &[k],
            Some("0123456789abcdef0123456789abcdef"),
            "http://x/auth/v1".into(),
        )
        .unwrap();
        for keys in [&es, &hs] {
            let service = keys.sign_service(NOW, 3600).unwrap();
            assert_eq!(keys.verify_service(&service, NOW), Ok(()));
            assert_eq!(
                keys.verify_service(&service, NOW + 3600),
                Err(JwtError::Expired)
            );
            // A service key is no access token, and an access token is no service key.
            assert_eq!(keys.verify(&service, NOW), Err(JwtError::Invalid));
            let user = keys.sign(&claims(far())).unwrap();
            assert_eq!(keys.verify_service(&user, NOW), Err(JwtError::Invalid));
        }
        // Another deployment's key does not verify here.
        let other =
            JwtKeys::new(&[generate_key(2).unwrap()], None, "http://x/auth/v1".into()).unwrap();
        let foreign = other.sign_service(NOW, 3600).unwrap();
        assert_eq!(es.verify_service(&foreign, NOW), Err(JwtError::Invalid));
        // A Supabase-style HS256 key (iss "supabase", no aud) signed with the same secret works.
        let supa = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"iss": "supabase", "ref": "abc", "role": "service_role", "iat": NOW, "exp": NOW + 10}),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(hs.verify_service(&supa, NOW), Ok(()));
        assert_eq!(es.verify_service(&supa, NOW), Err(JwtError::Invalid));
    }
}
