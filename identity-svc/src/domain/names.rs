//! Typed values parsed once at the edge.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("is required")]
    Required,
    #[error("is longer than {max} characters")]
    TooLong { max: usize },
    #[error("is not a valid email address")]
    InvalidEmail,
    #[error("contains control characters")]
    ControlCharacters,
}

/// An email address, trimmed; compared case-insensitively through [`Email::normalized`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// RFC 5321 caps a forward path at 254 characters.
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(FieldError::Required);
        }
        if value.chars().count() > Self::MAX_LEN {
            return Err(FieldError::TooLong { max: Self::MAX_LEN });
        }
        let (local, domain) = value.rsplit_once('@').ok_or(FieldError::InvalidEmail)?;
        let valid_domain = !domain.is_empty()
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        let valid_local = !local.is_empty() && local.len() <= 64 && !local.contains(char::is_whitespace);
        if !valid_domain || !valid_local || local.contains('@') || value.chars().any(char::is_control) {
            return Err(FieldError::InvalidEmail);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used for uniqueness: addresses differing only in case are the same person.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's display name: 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_LEN: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(FieldError::Required);
        }
        if value.chars().count() > Self::MAX_LEN {
            return Err(FieldError::TooLong { max: Self::MAX_LEN });
        }
        if value.chars().any(char::is_control) {
            return Err(FieldError::ControlCharacters);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_compared_without_case() {
        let email = Email::parse("  Mitch@KWGroup.uk ").unwrap();
        assert_eq!(email.as_str(), "Mitch@KWGroup.uk");
        assert_eq!(email.normalized(), "mitch@kwgroup.uk");
        for bad in ["", "no-at-sign", "@domain", "user@", "user@.x", "a b@c.d", "x@y..z"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(FieldError::TooLong { max: 254 }));
    }

    #[test]
    fn display_names_are_bounded() {
        assert_eq!(DisplayName::parse("  Emma ").unwrap().as_str(), "Emma");
        assert_eq!(DisplayName::parse(" "), Err(FieldError::Required));
        assert!(DisplayName::parse(&"x".repeat(201)).is_err());
        assert_eq!(DisplayName::parse("a\u{7}b"), Err(FieldError::ControlCharacters));
    }
}
