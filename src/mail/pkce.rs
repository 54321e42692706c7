//! PKCE auth codes: a followed link of a PKCE flow mints one; `POST /auth/v1/token?grant_type=pkce`
//! exchanges it, once, with the verifier its flow's challenge was made from.

use crate::auth::{pkce, tokens};
use crate::store::{PkceCode, User};

use super::flows::{EmailFlows, FlowError, OtpKind};

/// Bytes of randomness in an auth code (256 bits).
const AUTH_CODE_BYTES: usize = 32;

/// Whose session an exchanged auth code opens, and by which method.
pub struct Exchanged {
    /// The user's id.
    pub user_id: String,
    /// What the link proved (the session's `amr` method).
    pub method: String,
}

impl EmailFlows {
    /// Mints the auth code of a verified PKCE flow (its challenge in stored form), valid for
    /// `pkce_code_expiry_seconds`. Only its SHA-256 is kept.
    pub async fn issue_auth_code(
        &self,
        user: &User,
        kind: OtpKind,
        code_challenge: &str,
    ) -> Result<String, FlowError> {
        let code = tokens::random_token(AUTH_CODE_BYTES);
        let now = self.clock.now_ms();
        let row = PkceCode {
            user_id: user.id.clone(),
            code_challenge: code_challenge.to_string(),
            method: kind.amr().to_string(),
            expires_at: now + self.config.pkce_code_expiry_seconds * 1000,
        };
        self.store
            .add_pkce_code(&tokens::sha256_hex(&code), &row, now)
            .await?;
        Ok(code)
    }

    /// Exchanges an auth code. The code is used up by the attempt whatever its outcome, so
    /// one who learns a code gets a single try at its verifier, and the code's owner none
    /// after them.
    pub async fn exchange_auth_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<Exchanged, FlowError> {
        if code.is_empty() || code.len() > 256 {
            return Err(FlowError::CodeNotFound);
        }
        let row = self
            .store
            .take_pkce_code(&tokens::sha256_hex(code))
            .await?
            .ok_or(FlowError::CodeNotFound)?;
        if row.expires_at <= self.clock.now_ms() {
            return Err(FlowError::CodeExpired);
        }
        if !pkce::verifier_matches(&row.code_challenge, verifier) {
            return Err(FlowError::BadCodeVerifier);
        }
        Ok(Exchanged {
            user_id: row.user_id,
            method: row.method,
        })
    }
}
