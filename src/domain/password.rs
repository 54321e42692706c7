/// A candidate password; `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

/// The longest password accepted (argon2 cost does not grow with it, but bodies should stay small).
pub const MAX_PASSWORD_LEN: usize = 1024;

impl Password {
    /// Accepts a new password of at least `min_len` characters.
    pub fn new_checked(raw: String, min_len: usize) -> Result<Self, &'static str> {
        if raw.chars().count() < min_len {
            return Err("length");
        }
        if raw.len() > MAX_PASSWORD_LEN {
            return Err("too_long");
        }
        Ok(Self(raw))
    }

    /// Wraps a password presented at sign-in, without policy checks.
    pub fn presented(raw: String) -> Self {
        Self(raw)
    }

    /// The password itself; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let p = Password::presented("hunter2-secret".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn enforces_the_minimum_length_in_characters() {
        assert!(Password::new_checked("short".into(), 8).is_err());
        assert!(Password::new_checked("ééééééé8".into(), 8).is_ok());
        assert!(Password::new_checked("x".repeat(2000), 8).is_err());
    }
}
