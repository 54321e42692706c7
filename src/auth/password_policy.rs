//! Which new passwords are accepted: a minimum length, a strength estimate (zxcvbn, with its
//! own dictionaries of common passwords, names and words) and, when configured, a breached-
//! password lookup against a Have-I-Been-Pwned-compatible range API (k-anonymity: only the
//! first five hex digits of the password's SHA-1 leave the server).

use std::sync::Arc;
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::config::Config;
use crate::domain::Password;

/// How long a breach lookup may take (GoTrue's HIBP client uses the same 5 s).
pub const BREACH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest range answer read (a padded HIBP answer is ~40 KB).
const MAX_RANGE_BODY: usize = 2 * 1024 * 1024;

/// Characters of the password and of each user input that zxcvbn scores. Its cost grows
/// faster than linearly with length; past this many characters a password that is not
/// weak in its beginning is not weak (the crate applies the same cap to the password).
const SCORED_CHARS: usize = 100;

/// Why a new password was refused, with GoTrue's reason names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakPassword {
    /// `length`, `strength` (the estimator's score is below `password_min_score`; not a
    /// GoTrue reason, which has no estimator) or `pwned` (found by the breach lookup).
    pub reasons: Vec<&'static str>,
    /// A sentence for the user.
    pub message: String,
}

impl std::fmt::Display for WeakPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The outcome of a refused password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// Over [`crate::domain::password::MAX_PASSWORD_LEN`] bytes.
    TooLong,
    /// Fails the policy.
    Weak(WeakPassword),
    /// The breach lookup failed and `password_breach_check_fail_closed` is on.
    Unavailable,
}

struct BreachCheck {
    base: String,
    client: reqwest::Client,
    fail_closed: bool,
}

/// The password policy of this deployment (cheap to clone).
#[derive(Clone)]
pub struct PasswordPolicy {
    min_length: usize,
    min_score: u8,
    breach: Option<Arc<BreachCheck>>,
}

impl PasswordPolicy {
    /// The policy `config` describes.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let breach = match config.password_breach_check_url.as_deref() {
            None | Some("") => None,
            Some(url) => Some(Arc::new(BreachCheck {
                base: url.trim_end_matches('/').to_string(),
                client: reqwest::Client::builder()
                    .timeout(BREACH_CHECK_TIMEOUT)
                    .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?,
                fail_closed: config.password_breach_check_fail_closed,
            })),
        };
        let policy = Self {
            min_length: config.password_min_length,
            min_score: config.password_min_score,
            breach,
        };
        policy.warm_up();
        Ok(policy)
    }

    /// Accepts `raw` as a new password, or says why not. `user_inputs` (the email, …) count
    /// as known words: a password built from them is weak.
    pub async fn check(&self, raw: String, user_inputs: &[&str]) -> Result<Password, PolicyError> {
        let password = Password::new_checked(raw, self.min_length).map_err(|why| match why {
            "too_long" => PolicyError::TooLong,
            _ => weak(
                "length",
                format!(
                    "Password should be at least {} characters.",
                    self.min_length
                ),
            ),
        })?;
        if let Some(warning) = self.too_easy(password.expose(), user_inputs).await {
            return Err(weak(
                "strength",
                format!("Password is too easy to guess{warning}; add more words or characters."),
            ));
        }
        if let Some(breach) = &self.breach {
            match breach.pwned(password.expose()).await {
                Ok(false) => {}
                Ok(true) => {
                    return Err(weak(
                        "pwned",
                        "Password is known to be weak and easy to guess, please choose a different one.".into(),
                    ))
                }
                Err(e) if breach.fail_closed => {
                    tracing::warn!(error = %e, "breached-password check failed; refusing the password");
                    return Err(PolicyError::Unavailable);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "breached-password check failed; accepting the password");
                }
            }
        }
        Ok(password)
    }

    /// `Some(" (why)")` when the estimate is below the minimum score. Scoring the capped
    /// input takes up to ~10 ms in a debug build (under 1 ms for a typical password), so it
    /// runs on the blocking pool.
    async fn too_easy(&self, raw: &str, user_inputs: &[&str]) -> Option<String> {
        if self.min_score == 0 {
            return None;
        }
        let min_score = self.min_score;
        let scored: String = raw.chars().take(SCORED_CHARS).collect();
        let inputs: Vec<String> = user_inputs
            .iter()
            .map(|s| s.chars().take(SCORED_CHARS).collect())
            .collect();
        let span = tracing::Span::current();
        let scoring = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let entropy = zxcvbn::zxcvbn(&scored, &inputs);
            if u8::from(entropy.score()) >= min_score {
                return None;
            }
            Some(
                entropy
                    .feedback()
                    .and_then(|f| f.warning())
                    .map(|w| format!(" ({})", w.to_string().trim_end_matches('.')))
                    .unwrap_or_default(),
            )
        });
        // A panic inside the estimator refuses the password rather than letting it through.
        scoring.await.unwrap_or_else(|_| Some(String::new()))
    }

    /// Loads the estimator's dictionaries now rather than in the first sign-up.
    fn warm_up(&self) {
        if self.min_score > 0 {
            let _ = zxcvbn::zxcvbn("warm up", &[]);
        }
    }
}

fn weak(reason: &'static str, message: String) -> PolicyError {
    PolicyError::Weak(WeakPassword {
        reasons: vec![reason],
        message,
    })
}

/// The SHA-1 of `password` in upper-case hex, split into the 5-digit prefix sent to the
/// range API and the 35-digit suffix looked for in its answer.
fn sha1_split(password: &str) -> (String, String) {
    let digest = Sha1::digest(password.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
    let (prefix, suffix) = hex.split_at(5);
    (prefix.to_string(), suffix.to_string())
}

/// Whether a range answer (`SUFFIX:COUNT` lines) lists `suffix` with a count above zero
/// (padding lines, sent on `Add-Padding: true`, have count 0).
fn listed(body: &str, suffix: &str) -> bool {
    body.lines().any(|line| {
        line.trim().split_once(':').is_some_and(|(s, count)| {
            s.eq_ignore_ascii_case(suffix) && count.trim().parse::<u64>().is_ok_and(|c| c > 0)
        })
    })
}

impl BreachCheck {
    async fn pwned(&self, password: &str) -> anyhow::Result<bool> {
        let (prefix, suffix) = sha1_split(password);
        let mut res = self
            .client
            .get(format!("{}/range/{prefix}", self.base))
            .header("Add-Padding", "true")
            .send()
            .await?
            .error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_RANGE_BODY {
                anyhow::bail!("range answer over {MAX_RANGE_BODY} bytes");
            }
        }
        Ok(listed(&String::from_utf8_lossy(&body), &suffix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_score: u8) -> PasswordPolicy {
        PasswordPolicy {
            min_length: 8,
            min_score,
            breach: None,
        }
    }

    async fn reasons(p: &PasswordPolicy, raw: &str) -> Vec<&'static str> {
        match p.check(raw.into(), &["someone@example.com"]).await {
            Ok(_) => vec![],
            Err(PolicyError::Weak(w)) => w.reasons,
            Err(other) => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn common_passwords_are_refused_and_passphrases_pass() {
        let p = policy(Config::default().password_min_score);
        for common in [
            "password",
            "12345678",
            "        ",
            "qwertyuiop",
            "password1",
            "aaaaaaaaaaaa",
        ] {
            assert_eq!(reasons(&p, common).await, ["strength"], "{common:?}");
        }
        assert_eq!(
            reasons(&p, "someone@example.com").await,
            ["strength"],
            "the email itself"
        );
        assert_eq!(reasons(&p, "abc").await, ["length"]);
        for fine in [
            "correct horse battery",
            "long enough pw",
            "a brand new password",
        ] {
            assert_eq!(reasons(&p, fine).await, Vec::<&str>::new(), "{fine:?}");
        }
        assert_eq!(
            p.check("x".repeat(2000), &[]).await.err(),
            Some(PolicyError::TooLong)
        );
        assert!(
            policy(0).check("ééééééé8".into(), &[]).await.is_ok(),
            "length in characters"
        );
    }

    #[tokio::test]
    async fn a_score_of_zero_turns_the_estimator_off() {
        assert_eq!(reasons(&policy(0), "password").await, Vec::<&str>::new());
    }

    #[test]
    fn the_range_lookup_uses_five_hex_digits_and_matches_the_rest() {
        // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8
        let (prefix, suffix) = sha1_split("password");
        assert_eq!(prefix, "5BAA6");
        assert_eq!(suffix, "1E4C9B93F3F0682250B6CF8331B7EE68FD8");
        let body = "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n1E4C9B93F3F0682250B6CF8331B7EE68FD8:3861493\r\n";
        assert!(listed(body, &suffix));
        assert!(
            !listed("1E4C9B93F3F0682250B6CF8331B7EE68FD8:0\r\n", &suffix),
            "padding"
        );
        assert!(!listed(body, "0000000000000000000000000000000000A"));
    }
}
