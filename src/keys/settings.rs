//! The rules a key's settings follow, at creation (HTTP and CLI) and on change.

use serde_json::{json, Value};

use super::KeyError;
use crate::auth::api_key::Environment;
use crate::domain::budget::{check_budgets, Budget};
use crate::domain::credits::{CreditsSetting, Interval, Refill, MAX_CREDITS};
use crate::domain::permissions;
use crate::domain::{ChatLimits, ChatLimitsChange};
use crate::ratelimit::{Rate, RateLimitSpec, Rates};

const DAY_MS: i64 = 86_400_000;
/// The largest metadata object, serialised.
const MAX_METADATA_BYTES: usize = 4096;
/// The longest key name, in characters.
const MAX_NAME_CHARS: usize = 50;

/// A key's settings as a caller gives them, before checking.
#[derive(Clone, Debug, Default)]
pub struct KeyInput {
    /// 1-50 characters (trimmed).
    pub name: String,
    /// Permission names.
    pub scopes: Vec<String>,
    /// `live` (default) or `test`.
    pub environment: Option<String>,
    /// Days until expiry (1-3650): absent for the default of 365, `Some(None)` for never.
    pub expires_in_days: Option<Option<i64>>,
    /// A JSON object of at most 4 KiB (absent or null: `{}`).
    pub metadata: Option<Value>,
    /// The key's own windows (absent: the deployment's default for keys).
    pub rate_limits: Option<Vec<RateLimitSpec>>,
    /// Its credits (absent: unlimited uses).
    pub credits: Option<CreditsInput>,
    /// Spend budgets (absent: none).
    pub budgets: Option<Vec<Budget>>,
    /// Models, token windows and concurrency for chat (absent fields: unrestricted).
    pub chat_limits: ChatLimits,
}

/// Credits as a caller gives them, before checking.
#[derive(Clone, Debug, Default)]
pub struct CreditsInput {
    /// The balance (0 to 10^15).
    pub remaining: i64,
    /// The refill rule.
    pub refill: Option<RefillInput>,
}

/// A refill rule as a caller gives it, before checking.
#[derive(Clone, Debug, Default)]
pub struct RefillInput {
    /// `daily` or `monthly`.
    pub interval: String,
    /// The balance each period starts with (0 to 10^15).
    pub amount: i64,
    /// The day of the month (1-31) of a monthly refill (default 1); not for daily.
    pub day: Option<i64>,
}

/// Changes to a key as a caller gives them; absent fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct KeyUpdate {
    /// A new name (1-50 characters).
    pub name: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<Value>,
    /// New windows; `Some(None)` restores the default.
    pub rate_limits: Option<Option<Vec<RateLimitSpec>>>,
    /// New budgets; `Some(None)` removes them.
    pub budgets: Option<Option<Vec<Budget>>>,
    /// New credits (set now, as a new balance); `Some(None)`: unlimited.
    pub credits: Option<Option<CreditsInput>>,
    /// Changes to the chat limits.
    pub chat_limits: ChatLimitsChange,
}

/// Checked settings of a key to mint.
pub(super) struct KeySettings {
    pub name: String,
    pub scopes: Vec<String>,
    pub environment: Environment,
    pub lifetime_ms: Option<i64>,
    pub metadata: Value,
    pub rate_limits: Option<Rates>,
    pub budgets: Option<Vec<Budget>>,
    pub credits: Option<CreditsSetting>,
    pub chat_limits: ChatLimits,
}

fn chat_invalid(e: crate::domain::chat_limits::Invalid) -> KeyError {
    invalid(e.field, e.problem)
}

fn invalid(field: &'static str, problem: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// Checks creation input. A key's scopes must be held by its creator (`holds`; `None`: the
/// operator, who holds everything); the rules on keys apply to everyone.
pub(super) fn check_settings(
    input: KeyInput,
    holds: Option<&[String]>,
) -> Result<KeySettings, KeyError> {
    let name = check_name(&input.name)?;
    let scopes = permissions::parse_list(&input.scopes)
        .map_err(|p| invalid("scopes", format!("unknown permission {p:?}")))?;
    if let Some(p) = scopes
        .iter()
        .find(|p| permissions::NEVER_ON_KEYS.contains(&p.as_str()))
    {
        return Err(invalid(
            "scopes",
            format!("{p} cannot be given to an API key"),
        ));
    }
    if let Some(held) = holds {
        if let Some(missing) = scopes.iter().find(|p| !held.contains(p)) {
            return Err(KeyError::NotHeld(missing.clone()));
        }
    }
    let environment = match input.environment.as_deref() {
        None => Environment::Live,
        Some(e) => {
            Environment::parse(e).ok_or_else(|| invalid("environment", "must be live or test"))?
        }
    };
    let lifetime_ms = match input.expires_in_days {
        None => Some(365 * DAY_MS),
        Some(None) => None,
        Some(Some(d)) if (1..=3650).contains(&d) => Some(d * DAY_MS),
        Some(Some(_)) => {
            return Err(invalid(
                "expires_in_days",
                "must be between 1 and 3650, or null for never",
            ))
        }
    };
    let metadata = check_metadata(input.metadata)?;
    let rate_limits = input.rate_limits.map(|r| check_rates(&r)).transpose()?;
    let credits = input.credits.map(check_credits).transpose()?;
    let budgets = input.budgets.map(check_key_budgets).transpose()?;
    let chat_limits = input.chat_limits.checked().map_err(chat_invalid)?;
    Ok(KeySettings {
        credits,
        budgets,
        name,
        scopes,
        environment,
        lifetime_ms,
        metadata,
        rate_limits,
        chat_limits,
    })
}

/// Checks a change: the same rules as at creation, for the fields given.
pub(super) fn check_update(update: KeyUpdate) -> Result<crate::store::KeyChange, KeyError> {
    Ok(crate::store::KeyChange {
        name: update.name.map(|n| check_name(&n)).transpose()?,
        metadata: update
            .metadata
            .map(|m| check_metadata(Some(m)))
            .transpose()?,
        rate_limits: update
            .rate_limits
            .map(|r| r.map(|r| check_rates(&r)).transpose())
            .transpose()?,
        credits: update
            .credits
            .map(|c| c.map(check_credits).transpose())
            .transpose()?,
        budgets: update
            .budgets
            .map(|b| b.map(check_key_budgets).transpose())
            .transpose()?,
        chat_limits: update.chat_limits.checked().map_err(chat_invalid)?,
    })
}

/// Credits: a balance and an amount from 0 to [`MAX_CREDITS`], a known interval, a day of
/// the month (1-31) only for a monthly refill.
pub(super) fn check_credits(c: CreditsInput) -> Result<CreditsSetting, KeyError> {
    let in_range = |n: i64| (0..=MAX_CREDITS).contains(&n);
    if !in_range(c.remaining) {
        return Err(invalid(
            "credits.remaining",
            format!("must be between 0 and {MAX_CREDITS}"),
        ));
    }
    let refill = match c.refill {
        None => None,
        Some(r) => {
            let interval = Interval::parse(&r.interval)
                .ok_or_else(|| invalid("credits.refill.interval", "must be daily or monthly"))?;
            if !in_range(r.amount) {
                return Err(invalid(
                    "credits.refill.amount",
                    format!("must be between 0 and {MAX_CREDITS}"),
                ));
            }
            let day = match (interval, r.day) {
                (Interval::Daily, None) => None,
                (Interval::Daily, Some(_)) => {
                    return Err(invalid(
                        "credits.refill.day",
                        "only a monthly refill has a day",
                    ))
                }
                (Interval::Monthly, None) => Some(1),
                (Interval::Monthly, Some(d)) if (1..=31).contains(&d) => Some(d as u8),
                (Interval::Monthly, Some(_)) => {
                    return Err(invalid("credits.refill.day", "must be between 1 and 31"))
                }
            };
            Some(Refill {
                interval,
                amount: r.amount,
                day,
            })
        }
    };
    Ok(CreditsSetting {
        remaining: c.remaining,
        refill,
    })
}

/// A display name: trimmed, 1 to 50 characters, no control characters.
fn check_name(raw: &str) -> Result<String, KeyError> {
    crate::domain::Name::parse(raw, MAX_NAME_CHARS)
        .map(crate::domain::Name::into_string)
        .map_err(|e| invalid("name", e.to_string()))
}

fn check_metadata(metadata: Option<Value>) -> Result<Value, KeyError> {
    let metadata = match metadata {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(m)) => Value::Object(m),
        Some(_) => return Err(invalid("metadata", "must be a JSON object")),
    };
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(invalid("metadata", "must be at most 4 KiB"));
    }
    Ok(metadata)
}

fn check_key_budgets(b: Vec<Budget>) -> Result<Vec<Budget>, KeyError> {
    check_budgets(&b).map_err(|e| invalid("budgets", e))?;
    Ok(b)
}

fn check_rates(specs: &[RateLimitSpec]) -> Result<Rates, KeyError> {
    let rates = specs
        .iter()
        .map(|s| Rate::checked(s.limit, s.window_seconds))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("rate_limits", e))?;
    Rates::checked(rates).map_err(|e| invalid("rate_limits", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str) -> KeyInput {
        KeyInput {
            name: name.into(),
            ..KeyInput::default()
        }
    }

    fn field_of(r: Result<KeySettings, KeyError>) -> Option<&'static str> {
        match r {
            Err(KeyError::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn defaults_are_a_live_key_for_a_year_with_empty_metadata() {
        let s = check_settings(input("  ci  "), None).ok();
        let s = s.as_ref();
        assert_eq!(s.map(|s| s.name.as_str()), Some("ci"));
        assert_eq!(s.map(|s| s.environment), Some(Environment::Live));
        assert_eq!(s.and_then(|s| s.lifetime_ms), Some(365 * DAY_MS));
        assert_eq!(s.map(|s| s.metadata.clone()), Some(json!({})));
    }

    #[test]
    fn keys_never_carry_key_or_member_management_and_only_held_scopes() {
        let mut i = input("ci");
        i.scopes = vec!["keys:write".into()];
        assert_eq!(field_of(check_settings(i, None)), Some("scopes"));
        let mut i = input("ci");
        i.scopes = vec!["chat:write".into()];
        let held = ["threads:read".to_string()];
        assert!(matches!(
            check_settings(i, Some(&held)),
            Err(KeyError::NotHeld(p)) if p == "chat:write"
        ));
    }

    #[test]
    fn out_of_range_settings_name_their_field() {
        let mut i = input("ci");
        i.expires_in_days = Some(Some(0));
        assert_eq!(field_of(check_settings(i, None)), Some("expires_in_days"));
        let mut i = input("ci");
        i.environment = Some("prod".into());
        assert_eq!(field_of(check_settings(i, None)), Some("environment"));
        let mut i = input("ci");
        i.metadata = Some(json!([1]));
        assert_eq!(field_of(check_settings(i, None)), Some("metadata"));
        assert_eq!(field_of(check_settings(input(" "), None)), Some("name"));
        let mut i = input("ci");
        i.expires_in_days = Some(None);
        assert!(check_settings(i, None).is_ok_and(|s| s.lifetime_ms.is_none()));
    }
}
