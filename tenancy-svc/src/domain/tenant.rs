//! Tenant names and slugs, parsed once at the edge.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("is required")]
    Required,
    #[error("is longer than {max} characters")]
    TooLong { max: usize },
    #[error("contains control characters")]
    ControlCharacters,
    #[error("must be lowercase letters, digits and single hyphens, starting with a letter")]
    InvalidSlug,
}

/// An organisation's display name: 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName(String);

impl TenantName {
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

/// A tenant's unique, URL-safe handle, such as `acme-dental`: 2 to 63 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSlug(String);

impl TenantSlug {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(FieldError::Required);
        }
        if value.len() > Self::MAX_LEN {
            return Err(FieldError::TooLong { max: Self::MAX_LEN });
        }
        let bytes = value.as_bytes();
        let valid = bytes.len() >= 2
            && bytes[0].is_ascii_lowercase()
            && !value.ends_with('-')
            && !value.contains("--")
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !valid {
            return Err(FieldError::InvalidSlug);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(TenantSlug::parse("acme-dental").unwrap().as_str(), "acme-dental");
        for bad in ["", "A", "Acme", "acme_dental", "-acme", "acme-", "ac--me", "1acme", "a"] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(TenantSlug::parse(&"a".repeat(64)), Err(FieldError::TooLong { max: 63 }));
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(TenantName::parse(" Acme Dental ").unwrap().as_str(), "Acme Dental");
        assert_eq!(TenantName::parse(""), Err(FieldError::Required));
        assert!(TenantName::parse(&"x".repeat(201)).is_err());
    }
}
