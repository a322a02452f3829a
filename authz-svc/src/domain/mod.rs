//! authz's rules and typed values; no I/O.
//!
//! `policy`: the role pack file. `index`: the in-memory index, decisions and delegation rules.
//! `role_rules`: the rules for defining, changing and handing out roles. `resource_tree`: the
//! rules a product's resource tree keeps.

pub mod index;
pub mod policy;
pub mod resource_tree;
pub mod role_rules;

#[cfg(test)]
mod seed_tests;

use uuid::Uuid;

/// A canonical lower-case hyphenated UUID (the contract's one spelling), or `None`.
pub fn parse_uuid(raw: &str) -> Option<Uuid> {
    tether_proto::values::id("id", raw).ok()
}

/// A product-chosen resource id: 1-128 characters of `[A-Za-z0-9._:/-]`.
pub fn valid_resource_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 128
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'))
}

/// A resource type or custom role name: lower-case `[a-z0-9_]`, 1-64 characters.
pub fn valid_lower_name(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Free text: bounded, no control characters.
pub fn valid_text(raw: &str, max: usize) -> bool {
    raw.chars().count() <= max && !raw.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_must_be_canonical() {
        assert!(parse_uuid("3f2b1c4e-1111-4222-8333-444455556666").is_some());
        assert!(parse_uuid("3F2B1C4E-1111-4222-8333-444455556666").is_none());
        assert!(parse_uuid("3f2b1c4e111142228333444455556666").is_none());
        assert!(parse_uuid("nope").is_none());
    }

    #[test]
    fn resource_ids_and_names_are_bounded() {
        assert!(valid_resource_id("channel:eu/web-1"));
        assert!(!valid_resource_id(""));
        assert!(!valid_resource_id(&"a".repeat(129)));
        assert!(!valid_resource_id("a b"));
        assert!(valid_lower_name("channel_type"));
        assert!(!valid_lower_name("Channel"));
        assert!(!valid_text("a\u{7}b", 10));
    }
}
