use std::sync::Arc;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::domain::Password;

/// Errors of the hasher.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Hashing failed (should not happen with valid parameters).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The blocking pool task was cancelled or panicked.
    #[error("password hashing task failed")]
    Join,
}

/// argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane), run on the
/// blocking pool under a semaphore so a sign-in flood cannot starve the async runtime.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    params: Params,
    /// A hash of a random password, verified against for unknown users so they take as long.
    dummy: Arc<String>,
}

impl Hasher {
    /// A hasher allowing `concurrency` computations at once (0 = number of CPUs).
    pub fn new(concurrency: usize) -> Result<Self, HashError> {
        let params =
            Params::new(19 * 1024, 2, 1, None).map_err(|e| HashError::Hash(e.to_string()))?;
        let n = if concurrency == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            concurrency
        };
        let dummy = hash_blocking(&params, &uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(n)),
            params,
            dummy: Arc::new(dummy),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let pw = password.expose().to_string();
        let params = self.params.clone();
        self.run(move || hash_blocking(&params, &pw)).await?
    }

    /// Verifies a password against a stored PHC string, or against the dummy hash when the
    /// user does not exist (always false then), so both cases cost the same.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let pw = password.expose().to_string();
        let known = stored.is_some();
        let phc = stored
            .map(str::to_string)
            .unwrap_or_else(|| self.dummy.as_ref().clone());
        let ok = self
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return false;
                };
                Argon2::default()
                    .verify_password(pw.as_bytes(), &parsed)
                    .is_ok()
            })
            .await?;
        Ok(ok && known)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Join)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(f))
            .instrument(tracing::Span::current())
            .await
            .map_err(|_| HashError::Join)
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let h = Hasher::new(1).unwrap();
        let stored = h
            .hash(&Password::presented("correct horse".into()))
            .await
            .unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h
            .verify(&Password::presented("correct horse".into()), Some(&stored))
            .await
            .unwrap());
        assert!(!h
            .verify(&Password::presented("wrong".into()), Some(&stored))
            .await
            .unwrap());
        assert!(!h
            .verify(&Password::presented("correct horse".into()), None)
            .await
            .unwrap());
    }
}
