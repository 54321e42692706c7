//! Multi-factor authentication (TOTP): enrolment, challenges, verification that makes a
//! session `aal2`, and unenrolment. WebAuthn factors will share the factor table and the
//! session's assurance level; only the proof differs.

use crate::auth::jwt::Claims;
use crate::auth::sealed::SealingKey;
use crate::auth::{tokens, totp};
use crate::store::{Challenge, Ended, Factor, StoreError, User, Verified};
use secrecy::ExposeSecret;

use super::{AccountError, Accounts, IssuedSession, REFRESH_TOKEN_BYTES};

/// The HKDF purpose of the key TOTP secrets are sealed under.
const TOTP_PURPOSE: &str = "gatehouse/mfa-totp-secret/v1";
/// Wrong codes one challenge takes before it is spent.
pub const MAX_WRONG_CODES_PER_CHALLENGE: i64 = 5;
/// The `amr` method of a TOTP verification.
pub const TOTP_METHOD: &str = "totp";

/// Why an MFA operation failed; `http/` words each as GoTrue does.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// No `mfa_encryption_key`: TOTP is off.
    #[error("TOTP is not enabled")]
    TotpDisabled,
    /// `factor_type` is not `totp`.
    #[error("unsupported factor type")]
    UnsupportedType,
    /// The friendly name is taken by another factor of the user.
    #[error("a factor with this friendly name exists")]
    NameConflict(String),
    /// `mfa_max_enrolled_factors` reached.
    #[error("too many factors")]
    TooManyFactors,
    /// Enrolling another factor (`enrolling`), or removing a verified one, needs an aal2
    /// session.
    #[error("aal2 required")]
    InsufficientAal {
        /// Whether the refused operation was an enrolment.
        enrolling: bool,
    },
    /// No such factor for this user.
    #[error("factor not found")]
    FactorNotFound,
    /// No such challenge for this factor.
    #[error("challenge not found")]
    ChallengeNotFound,
    /// The challenge was opened from another address, or already used.
    #[error("challenge and verify addresses differ")]
    IpMismatch,
    /// The challenge passed its expiry or its wrong-code limit.
    #[error("challenge expired")]
    ChallengeExpired(String),
    /// The code is wrong, or was already used.
    #[error("invalid code")]
    VerificationFailed,
    /// Any other account failure.
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl From<StoreError> for MfaError {
    fn from(e: StoreError) -> Self {
        MfaError::Account(e.into())
    }
}

/// A factor just enrolled, with what the authenticator app needs (shown once).
pub struct Enrolled {
    /// The factor.
    pub factor: Factor,
    /// The secret in base32.
    pub secret: String,
    /// The `otpauth://` URI.
    pub uri: String,
    /// The URI as an SVG QR code.
    pub qr_code: String,
}

fn internal(what: &str) -> MfaError {
    tracing::error!("{what}");
    MfaError::Account(AccountError::Internal)
}

impl Accounts {
    /// The key TOTP secrets are sealed under, from `mfa_encryption_key`.
    fn totp_key(&self) -> Result<SealingKey, MfaError> {
        let key = self
            .config
            .mfa_encryption_key
            .as_ref()
            .ok_or(MfaError::TotpDisabled)?;
        SealingKey::derive(key.expose_secret().as_bytes(), TOTP_PURPOSE)
            .map_err(|_| internal("deriving the TOTP sealing key failed"))
    }

    /// A user's factors, oldest first.
    pub async fn factors(&self, user_id: &str) -> Result<Vec<Factor>, AccountError> {
        Ok(self.store.mfa_factors(user_id).await?)
    }

    /// Enrols a new, unverified TOTP factor. `aal2` says whether the caller's session is:
    /// with a verified factor already, another may only be added from an aal2 session.
    pub async fn enroll_totp(
        &self,
        user: &User,
        aal2: bool,
        friendly_name: Option<String>,
        issuer: Option<String>,
    ) -> Result<Enrolled, MfaError> {
        let key = self.totp_key()?;
        let friendly_name = friendly_name.filter(|n| !n.is_empty());
        if friendly_name
            .as_ref()
            .is_some_and(|n| n.chars().count() > 100)
        {
            return Err(AccountError::Validation(super::Invalid::FriendlyName).into());
        }
        let existing = self.store.mfa_factors(&user.id).await?;
        if let Some(name) = &friendly_name {
            if existing
                .iter()
                .any(|f| f.friendly_name.as_ref() == Some(name))
            {
                return Err(MfaError::NameConflict(name.clone()));
            }
        }
        if existing.len() as i64 >= self.config.mfa_max_enrolled_factors {
            return Err(MfaError::TooManyFactors);
        }
        if !aal2 && existing.iter().any(|f| f.status == "verified") {
            return Err(MfaError::InsufficientAal { enrolling: true });
        }
        let issuer = issuer.filter(|i| !i.is_empty()).unwrap_or_else(|| {
            url::Url::parse(&self.config.public_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "Gatehouse".into())
        });
        if issuer.chars().count() > 100 {
            return Err(AccountError::Validation(super::Invalid::Issuer).into());
        }
        let secret = secrecy::zeroize::Zeroizing::new(totp::new_secret());
        let id = uuid::Uuid::new_v4().to_string();
        let sealed = key
            .seal(&secret, id.as_bytes())
            .map_err(|_| internal("sealing a TOTP secret failed"))?;
        let uri = totp::uri(&secret, &issuer, &user.email);
        let qr_code = totp::qr_svg(&uri).ok_or_else(|| internal("QR code generation failed"))?;
        let now = self.clock.now_ms();
        let factor = Factor {
            id,
            user_id: user.id.clone(),
            factor_type: "totp".into(),
            friendly_name,
            status: "unverified".into(),
            secret_sealed: Some(sealed),
            last_step: None,
            last_challenged_at: None,
            created_at: now,
            updated_at: now,
        };
        match self.store.create_mfa_factor(&factor).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(MfaError::NameConflict(
                    factor.friendly_name.clone().unwrap_or_default(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Enrolled {
            secret: totp::base32(&secret),
            uri,
            qr_code,
            factor,
        })
    }

    async fn own_factor(&self, user_id: &str, factor_id: &str) -> Result<Factor, MfaError> {
        if uuid::Uuid::parse_str(factor_id).is_err() {
            return Err(MfaError::FactorNotFound);
        }
        self.store
            .mfa_factor(user_id, factor_id)
            .await?
            .ok_or(MfaError::FactorNotFound)
    }

    /// Opens a challenge on one of the user's factors, from `ip`.
    pub async fn challenge(
        &self,
        user_id: &str,
        factor_id: &str,
        ip: &str,
    ) -> Result<(Challenge, i64), MfaError> {
        self.totp_key()?;
        let factor = self.own_factor(user_id, factor_id).await?;
        let challenge = Challenge {
            id: uuid::Uuid::new_v4().to_string(),
            factor_id: factor.id,
            ip: ip.to_string(),
            failed_attempts: 0,
            created_at: self.clock.now_ms(),
            verified_at: None,
        };
        self.store.create_mfa_challenge(&challenge).await?;
        let expires_at =
            challenge.created_at.div_euclid(1000) + self.config.mfa_challenge_expiry_seconds;
        Ok((challenge, expires_at))
    }

    /// Verifies a code against a challenge. Accepted, the factor is verified, the session
    /// becomes aal2 with a new refresh token (the session's earlier ones stop working, so a
    /// refresh token issued at aal1 never yields aal2), and the user's other aal1 sessions end.
    pub async fn verify_factor(
        &self,
        claims: &Claims,
        factor_id: &str,
        challenge_id: &str,
        code: &str,
        ip: &str,
    ) -> Result<(IssuedSession, Ended), MfaError> {
        let key = self.totp_key()?;
        let factor = self.own_factor(&claims.sub, factor_id).await?;
        if uuid::Uuid::parse_str(challenge_id).is_err() {
            return Err(MfaError::ChallengeNotFound);
        }
        let challenge = self
            .store
            .mfa_challenge(&factor.id, challenge_id)
            .await?
            .ok_or(MfaError::ChallengeNotFound)?;
        if challenge.verified_at.is_some() || !tokens::ct_eq(&challenge.ip, ip) {
            return Err(MfaError::IpMismatch);
        }
        let now = self.clock.now_ms();
        if now - challenge.created_at >= self.config.mfa_challenge_expiry_seconds * 1000
            || challenge.failed_attempts >= MAX_WRONG_CODES_PER_CHALLENGE
        {
            self.store.delete_mfa_challenge(&challenge.id).await?;
            return Err(MfaError::ChallengeExpired(challenge.id));
        }
        let secret = factor
            .secret_sealed
            .as_deref()
            .and_then(|s| key.open(s, factor.id.as_bytes()))
            .ok_or_else(|| {
                internal("a TOTP secret does not open: was mfa_encryption_key changed?")
            })?;
        let code = code.trim();
        let step = totp::matching_step(&secret, code, now.div_euclid(1000), factor.last_step);
        let Some(step) = step else {
            self.store.fail_mfa_challenge(&challenge.id).await?;
            return Err(MfaError::VerificationFailed);
        };
        let refresh = tokens::random_token(REFRESH_TOKEN_BYTES);
        let verified = self
            .store
            .verify_mfa(
                &factor,
                &challenge.id,
                step,
                &claims.session_id,
                TOTP_METHOD,
                &tokens::sha256_hex(&refresh),
                now,
            )
            .await;
        let ended = match verified {
            Ok(Verified::Done(ended)) => ended,
            Ok(Verified::Replayed) => {
                self.store.fail_mfa_challenge(&challenge.id).await?;
                return Err(MfaError::VerificationFailed);
            }
            Ok(Verified::ChallengeUsed) => return Err(MfaError::IpMismatch),
            Err(StoreError::NotFound) => return Err(AccountError::SessionNotFound.into()),
            Err(e) => return Err(e.into()),
        };
        let user = self
            .store
            .user_by_id(&claims.sub)
            .await?
            .ok_or(AccountError::SessionNotFound)?;
        let session = self
            .reissue(user, claims.session_id.clone(), refresh, now)
            .await?;
        Ok((session, ended))
    }

    /// Removes one of the user's factors; a verified one only from an aal2 session.
    pub async fn unenroll(&self, claims: &Claims, factor_id: &str) -> Result<String, MfaError> {
        let factor = self.own_factor(&claims.sub, factor_id).await?;
        if factor.status == "verified" && claims.aal != "aal2" {
            return Err(MfaError::InsufficientAal { enrolling: false });
        }
        match self.store.delete_mfa_factor(&claims.sub, &factor.id).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(factor.id),
            Err(e) => Err(e.into()),
        }
    }
}
