//! A widget's checked inputs: its name, its look (settings laid over the stored ones or the
//! defaults) and its origin allowlist (parsed, normalised, de-duplicated).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::WidgetError;
use crate::auth::widget::AllowedOrigin;

/// The most origins one widget may allow.
pub const MAX_ORIGINS: usize = 50;

/// The public look of a widget; every field optional on input (defaults apply).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WidgetSettings {
    /// The panel's title (1-80 characters once trimmed); default "Chat with us".
    pub title: Option<String>,
    /// The first message a visitor sees (at most 500 characters, no control characters but
    /// newlines); default "Hi! How can we help?".
    #[schema(max_length = 500)]
    pub greeting: Option<String>,
    /// `bottom-right` (default) or `bottom-left`.
    #[schema(value_type = Option<Position>)]
    pub position: Option<String>,
    /// `#rrggbb`; default `#2563eb`.
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$")]
    pub accent_color: Option<String>,
}

/// Where the widget's button sits.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    /// The bottom right corner.
    BottomRight,
    /// The bottom left corner.
    BottomLeft,
}

fn invalid(field: &str, problem: &str) -> WidgetError {
    WidgetError::Invalid {
        field: field.to_string(),
        problem: problem.to_string(),
    }
}

/// A display name: trimmed, 1 to `max` characters, no control characters.
pub fn check_name(field: &str, raw: &str, max: usize) -> Result<String, WidgetError> {
    crate::domain::Name::parse(raw, max)
        .map(crate::domain::Name::into_string)
        .map_err(|e| invalid(field, &e.to_string()))
}

/// Checks settings and lays them over `base` (the stored ones, or [`default_settings`]).
pub fn merge_settings(base: &Value, given: WidgetSettings) -> Result<Value, WidgetError> {
    let mut out: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
    if let Some(t) = given.title {
        out.insert("title".into(), json!(check_name("settings.title", &t, 80)?));
    }
    if let Some(g) = given.greeting {
        if g.chars().count() > 500 || g.chars().any(|c| c.is_control() && c != '\n') {
            return Err(invalid(
                "settings.greeting",
                "must be at most 500 characters of text",
            ));
        }
        out.insert("greeting".into(), json!(g.trim()));
    }
    if let Some(p) = given.position {
        if p != "bottom-right" && p != "bottom-left" {
            return Err(invalid(
                "settings.position",
                "must be bottom-right or bottom-left",
            ));
        }
        out.insert("position".into(), json!(p));
    }
    if let Some(c) = given.accent_color {
        let ok =
            c.len() == 7 && c.starts_with('#') && c.bytes().skip(1).all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(invalid(
                "settings.accent_color",
                "must be a colour like #2563eb",
            ));
        }
        out.insert("accent_color".into(), json!(c.to_ascii_lowercase()));
    }
    Ok(Value::Object(out))
}

/// The look of a new widget before its own settings are laid over it.
pub fn default_settings() -> Value {
    json!({
        "title": "Chat with us",
        "greeting": "Hi! How can we help?",
        "position": "bottom-right",
        "accent_color": "#2563eb",
    })
}

/// Parses, normalises and de-duplicates an allowlist.
pub fn check_origins(list: &[String]) -> Result<Vec<String>, WidgetError> {
    if list.len() > MAX_ORIGINS {
        return Err(invalid("allowed_origins", "must hold at most 50 origins"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, o) in list.iter().enumerate() {
        let parsed = AllowedOrigin::parse(o)
            .map_err(|why| invalid(&format!("allowed_origins[{i}]"), why))?
            .as_string();
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_laid_over_the_base() {
        let merged = merge_settings(
            &default_settings(),
            WidgetSettings {
                title: Some("  Help  ".into()),
                accent_color: Some("#AABBCC".into()),
                ..WidgetSettings::default()
            },
        )
        .map_err(|e| e.to_string());
        let merged = merged.unwrap_or_default();
        assert_eq!(merged["title"], "Help");
        assert_eq!(merged["accent_color"], "#aabbcc");
        assert_eq!(merged["position"], "bottom-right");
        let bad = merge_settings(
            &default_settings(),
            WidgetSettings {
                position: Some("top".into()),
                ..WidgetSettings::default()
            },
        );
        assert!(
            matches!(bad, Err(WidgetError::Invalid { field, .. }) if field == "settings.position")
        );
    }

    #[test]
    fn origins_are_normalised_and_deduplicated() {
        let list = vec![
            "https://app.example.com".to_string(),
            "https://app.example.com".to_string(),
        ];
        assert_eq!(check_origins(&list).map(|l| l.len()).ok(), Some(1));
        assert!(check_origins(&vec!["https://a.example".to_string(); 51]).is_err());
    }
}
