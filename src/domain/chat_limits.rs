//! What a key or an organization may spend on chat: which models (allow-lists with
//! wildcards), how many tokens per minute and per day, how many answers at once.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most patterns one allow-list holds.
pub const MAX_PATTERNS: usize = 100;
/// The longest model name or pattern, in bytes.
pub const MAX_MODEL_CHARS: usize = 200;
/// The largest token limit of one window.
pub const MAX_TOKENS_PER_WINDOW: u64 = 1_000_000_000;
/// The most answers one key or organization may have under way at once.
pub const MAX_PARALLEL: u32 = 10_000;

/// Token windows; an absent one does not limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct TokenLimits {
    /// Tokens (prompt and answer) per minute (1-1,000,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub tokens_per_minute: Option<u64>,
    /// Tokens (prompt and answer) per day (1-1,000,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub tokens_per_day: Option<u64>,
}

/// A widget's daily token budgets; an absent one takes the configured default
/// (`widget_tokens_per_day`, `widget_visitor_tokens_per_day`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct WidgetTokenLimits {
    /// Tokens per day for the whole widget, all visitors together (1-1,000,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub tokens_per_day: Option<u64>,
    /// Tokens per day for each visitor (1-1,000,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub visitor_tokens_per_day: Option<u64>,
}

/// Checks a widget's budgets: each given one 1 to 1,000,000,000.
pub fn check_widget_tokens(
    field: &'static str,
    t: WidgetTokenLimits,
) -> Result<WidgetTokenLimits, Invalid> {
    for v in [t.tokens_per_day, t.visitor_tokens_per_day]
        .into_iter()
        .flatten()
    {
        if !(1..=MAX_TOKENS_PER_WINDOW).contains(&v) {
            return Err(invalid(
                field,
                "each limit must be between 1 and 1000000000",
            ));
        }
    }
    Ok(t)
}

/// A key's or an organization's chat limits; `None` everywhere: unrestricted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatLimits {
    /// Model patterns the holder may ask for (`None`: any).
    pub allowed_models: Option<Vec<String>>,
    /// Token windows (`None`: none).
    pub token_limits: Option<TokenLimits>,
    /// Answers under way at once (`None`: no bound).
    pub max_parallel: Option<u32>,
}

/// Changes to [`ChatLimits`]: `Some(None)` clears a field, `None` keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatLimitsChange {
    /// New allow-list.
    pub allowed_models: Option<Option<Vec<String>>>,
    /// New token windows.
    pub token_limits: Option<Option<TokenLimits>>,
    /// New concurrency bound.
    pub max_parallel: Option<Option<u32>>,
}

/// A field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The field's name on the wire.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> Invalid {
    Invalid {
        field,
        problem: problem.into(),
    }
}

/// Whether `name` is acceptable as a model name: 1-200 printable ASCII characters without
/// spaces (`gpt-4o-mini`, `anthropic/claude-3-5-sonnet`, `llama3:8b`).
pub fn valid_model(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_MODEL_CHARS && name.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks an allow-list: 0-100 patterns, each a model name where `*` matches any run of
/// characters (`/` included) and `?` one character; duplicates are dropped.
pub fn check_patterns(field: &'static str, list: Vec<String>) -> Result<Vec<String>, Invalid> {
    if list.len() > MAX_PATTERNS {
        return Err(invalid(field, "must hold at most 100 patterns"));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for p in list {
        let p = p.trim().to_string();
        if !valid_model(&p) {
            return Err(invalid(
                field,
                "each pattern must be 1-200 printable characters without spaces (`*` and `?` are wildcards)",
            ));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Checks token windows: each given one 1 to 1,000,000,000.
pub fn check_token_limits(field: &'static str, t: TokenLimits) -> Result<TokenLimits, Invalid> {
    for v in [t.tokens_per_minute, t.tokens_per_day]
        .into_iter()
        .flatten()
    {
        if !(1..=MAX_TOKENS_PER_WINDOW).contains(&v) {
            return Err(invalid(
                field,
                "each limit must be between 1 and 1000000000",
            ));
        }
    }
    Ok(t)
}

/// Checks a concurrency bound: 1 to 10,000.
pub fn check_max_parallel(field: &'static str, n: u32) -> Result<u32, Invalid> {
    if (1..=MAX_PARALLEL).contains(&n) {
        Ok(n)
    } else {
        Err(invalid(field, "must be between 1 and 10000"))
    }
}

impl ChatLimits {
    /// Checks every field given at creation.
    pub fn checked(self) -> Result<Self, Invalid> {
        Ok(Self {
            allowed_models: self
                .allowed_models
                .map(|l| check_patterns("allowed_models", l))
                .transpose()?,
            token_limits: self
                .token_limits
                .map(|t| check_token_limits("token_limits", t))
                .transpose()?,
            max_parallel: self
                .max_parallel
                .map(|n| check_max_parallel("max_parallel", n))
                .transpose()?,
        })
    }

    /// Whether `model` may be asked for under these limits.
    pub fn allows(&self, model: &str) -> bool {
        allows(self.allowed_models.as_deref(), model)
    }
}

impl ChatLimitsChange {
    /// Checks every field given.
    pub fn checked(self) -> Result<Self, Invalid> {
        Ok(Self {
            allowed_models: self
                .allowed_models
                .map(|o| o.map(|l| check_patterns("allowed_models", l)).transpose())
                .transpose()?,
            token_limits: self
                .token_limits
                .map(|o| o.map(|t| check_token_limits("token_limits", t)).transpose())
                .transpose()?,
            max_parallel: self
                .max_parallel
                .map(|o| o.map(|n| check_max_parallel("max_parallel", n)).transpose())
                .transpose()?,
        })
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.allowed_models.is_none() && self.token_limits.is_none() && self.max_parallel.is_none()
    }

    /// `limits` with the change applied.
    pub fn apply(&self, limits: &mut ChatLimits) {
        if let Some(v) = &self.allowed_models {
            limits.allowed_models = v.clone();
        }
        if let Some(v) = self.token_limits {
            limits.token_limits = v;
        }
        if let Some(v) = self.max_parallel {
            limits.max_parallel = v;
        }
    }
}

/// Whether `model` matches a pattern of `list` (`None`: every model is allowed; an empty
/// list allows none). Matching is case-sensitive, as model names are.
pub fn allows(list: Option<&[String]>, model: &str) -> bool {
    match list {
        None => true,
        Some(patterns) => patterns
            .iter()
            .any(|p| wildmatch::WildMatch::new(p).matches(model)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcards_match_prefixes_and_providers() {
        let l = list(&["gpt-4o*", "anthropic/*", "llama3:?b"]);
        assert!(allows(Some(&l), "gpt-4o"));
        assert!(allows(Some(&l), "gpt-4o-mini"));
        assert!(allows(Some(&l), "anthropic/claude-3-5-sonnet"));
        assert!(allows(Some(&l), "llama3:8b"));
        assert!(!allows(Some(&l), "gpt-4"));
        assert!(!allows(Some(&l), "openai/gpt-4o"));
        assert!(!allows(Some(&l), "llama3:70b"));
        assert!(!allows(Some(&l), "GPT-4o"));
        assert!(allows(None, "anything"));
        assert!(!allows(Some(&[]), "gpt-4o"));
    }

    #[test]
    fn bad_patterns_and_limits_name_their_field() {
        assert_eq!(
            check_patterns("allowed_models", list(&["has space"])).map_err(|e| e.field),
            Err("allowed_models")
        );
        assert_eq!(
            check_patterns("allowed_models", list(&["a", " a "])),
            Ok(list(&["a"]))
        );
        let t = TokenLimits {
            tokens_per_minute: Some(0),
            tokens_per_day: None,
        };
        assert!(check_token_limits("token_limits", t).is_err());
        assert!(check_max_parallel("max_parallel", 0).is_err());
        assert_eq!(check_max_parallel("max_parallel", 3), Ok(3));
    }
}

/// Reads a JSON object only. serde's derived struct reading also takes a JSON array (the
/// fields by position), which the schema of these settings does not allow.
fn from_object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    serde_json::from_value(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for TokenLimits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            tokens_per_minute: Option<u64>,
            #[serde(default)]
            tokens_per_day: Option<u64>,
        }
        let f: Fields = from_object(d)?;
        Ok(Self {
            tokens_per_minute: f.tokens_per_minute,
            tokens_per_day: f.tokens_per_day,
        })
    }
}

impl<'de> Deserialize<'de> for WidgetTokenLimits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            tokens_per_day: Option<u64>,
            #[serde(default)]
            visitor_tokens_per_day: Option<u64>,
        }
        let f: Fields = from_object(d)?;
        Ok(Self {
            tokens_per_day: f.tokens_per_day,
            visitor_tokens_per_day: f.visitor_tokens_per_day,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod wire_tests {
    use super::{TokenLimits, WidgetTokenLimits};

    #[test]
    fn token_limits_are_objects_on_the_wire_never_arrays() {
        let t: TokenLimits = serde_json::from_str(r#"{"tokens_per_day": 5}"#).unwrap();
        assert_eq!(t.tokens_per_day, Some(5));
        assert!(serde_json::from_str::<TokenLimits>("[null]").is_err());
        assert!(serde_json::from_str::<TokenLimits>(r#"{"other": 1}"#).is_err());
        assert!(serde_json::from_str::<WidgetTokenLimits>("[null, null]").is_err());
    }
}
