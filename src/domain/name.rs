//! Display names (an organization's, a key's, a widget's, a widget title): trimmed, one to
//! a caller-given number of characters, no control characters.

use std::fmt;

/// A display name, already trimmed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

/// Why text is not a name. `Display` is the problem as a field error states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Nothing but white space.
    Missing,
    /// Longer than the limit (in characters).
    TooLong(usize),
    /// A control character inside.
    Control,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Missing => f.write_str("is required"),
            NameError::TooLong(max) => write!(f, "must be at most {max} characters"),
            NameError::Control => f.write_str("must not contain control characters"),
        }
    }
}

impl std::error::Error for NameError {}

impl Name {
    /// Trims `raw` and checks it: 1 to `max` characters (not bytes), no control characters.
    pub fn parse(raw: &str, max: usize) -> Result<Self, NameError> {
        let name = raw.trim();
        let n = name.chars().count();
        if n == 0 {
            return Err(NameError::Missing);
        }
        if n > max {
            return Err(NameError::TooLong(max));
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        Ok(Name(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as owned text.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded_in_characters() {
        assert_eq!(
            Name::parse("  Acme ", 100).map(Name::into_string),
            Ok("Acme".into())
        );
        assert_eq!(Name::parse(" \t", 100), Err(NameError::Missing));
        assert_eq!(Name::parse("abcd", 3), Err(NameError::TooLong(3)));
        assert_eq!(
            Name::parse("ééé", 3).map(Name::into_string),
            Ok("ééé".into())
        );
        assert_eq!(Name::parse("a\u{7}b", 100), Err(NameError::Control));
        assert_eq!(
            NameError::TooLong(3).to_string(),
            "must be at most 3 characters"
        );
    }
}
