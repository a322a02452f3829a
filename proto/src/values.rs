//! The value rules of the contract's conventions (`common.proto`), in one place: every service
//! parses a request's ids, role names, page sizes and free text through these at the edge, so
//! the same input is accepted or refused the same way everywhere, with the same reason, and
//! page tokens are made and read one way.

use crate::common::v1::ErrorReason;

/// A refused value: the stable reason, the request field at fault (a path such as
/// `memberships[2].role`), and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub reason: ErrorReason,
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(reason: ErrorReason, field: &str, message: impl Into<String>) -> Self {
        Self { reason, field: field.to_owned(), message: message.into() }
    }

    pub fn required(field: &str) -> Self {
        Self::new(ErrorReason::FieldRequired, field, format!("{field} is required"))
    }

    pub fn too_long(field: &str, max: usize) -> Self {
        Self::new(ErrorReason::FieldTooLong, field, format!("{field} is longer than {max} characters"))
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

/// An id: a UUID in its canonical lower-case hyphenated form, and only that form, so one
/// entity has one spelling in every request, reply, event and log line. Never trimmed.
pub fn id(field: &str, raw: &str) -> Result<uuid::Uuid, FieldError> {
    if raw.is_empty() {
        return Err(FieldError::required(field));
    }
    // 36 bytes of lower-case hex and hyphens, checked before parsing (this runs on every
    // decision request).
    let canonical =
        raw.len() == 36 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-');
    match uuid::Uuid::try_parse(raw) {
        Ok(id) if canonical => Ok(id),
        _ => Err(FieldError::new(ErrorReason::InvalidUuid, field, format!("{field} is not a canonical UUID"))),
    }
}

/// An id that may be left empty (meaning "none").
pub fn optional_id(field: &str, raw: &str) -> Result<Option<uuid::Uuid>, FieldError> {
    if raw.is_empty() { Ok(None) } else { id(field, raw).map(Some) }
}

/// A role's catalog name: 1 to 64 of `[A-Za-z0-9_]`, case-sensitive (role packs spell their
/// roles their way, "client_admin" or "SUPER_ADMIN"), never trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName(String);

impl RoleName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        if raw.is_empty() {
            return Err(FieldError::required(field));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(FieldError::too_long(field, Self::MAX_LEN));
        }
        if !Self::is_valid(raw) {
            return Err(FieldError::new(
                ErrorReason::InvalidFormat,
                field,
                format!("{field} is not a role name (letters, digits and _)"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Whether `name` follows the rule (for policy files, which report errors their own way).
    pub fn is_valid(name: &str) -> bool {
        !name.is_empty() && name.len() <= Self::MAX_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A page size (AIP-158): 0 means the default, a value above the maximum is coerced to it, a
/// negative one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(usize);

impl PageSize {
    pub const DEFAULT: usize = 50;
    pub const MAX: usize = 500;

    pub fn parse(field: &str, raw: i32) -> Result<Self, FieldError> {
        match raw {
            n if n < 0 => {
                Err(FieldError::new(ErrorReason::ValueOutOfRange, field, format!("{field} must not be negative")))
            }
            0 => Ok(Self(Self::DEFAULT)),
            n => Ok(Self(usize::try_from(n).unwrap_or(Self::MAX).min(Self::MAX))),
        }
    }

    pub fn get(self) -> usize {
        self.0
    }
}

/// A page token (AIP-158): opaque to callers, carrying where the next page starts and bound to
/// the request's other fields, so a token used with other filters is refused rather than read
/// as a position in a different list.
pub struct PageToken;

impl PageToken {
    /// Longer tokens are refused unread.
    pub const MAX_LEN: usize = 2048;

    /// The token of the page after `cursor` for a request whose other fields are `filters`.
    pub fn encode(filters: &str, cursor: &str) -> String {
        hex::encode(format!("{:016x}|{cursor}", fingerprint(filters)))
    }

    /// The cursor in `token` (`None` for the first page), if it was issued for `filters`.
    pub fn decode(field: &str, token: &str, filters: &str) -> Result<Option<String>, FieldError> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad =
            || FieldError::new(ErrorReason::InvalidPageToken, field, format!("{field} is not valid for this request"));
        if token.len() > Self::MAX_LEN {
            return Err(bad());
        }
        let text = hex::decode(token).ok().and_then(|bytes| String::from_utf8(bytes).ok()).ok_or_else(bad)?;
        let (print, cursor) = text.split_once('|').ok_or_else(bad)?;
        if print != format!("{:016x}", fingerprint(filters)) {
            return Err(bad());
        }
        Ok(Some(cursor.to_owned()))
    }
}

/// FNV-1a: stable across builds and processes, which std's hasher is not guaranteed to be.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Free text (names, titles, notes, descriptions): surrounding whitespace trimmed, at most
/// `max` characters, no control characters except line breaks and tabs. Empty is allowed
/// (the caller decides whether the field is required).
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.chars().count() > max {
        return Err(FieldError::too_long(field, max));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(FieldError::new(ErrorReason::InvalidFormat, field, format!("{field} contains control characters")));
    }
    Ok(value.to_owned())
}

/// Like [`text`], but empty is refused.
pub fn required_text(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let value = text(field, raw, max)?;
    if value.is_empty() { Err(FieldError::required(field)) } else { Ok(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason<T: std::fmt::Debug>(r: Result<T, FieldError>) -> ErrorReason {
        r.expect_err("refused").reason
    }

    #[test]
    fn ids_are_canonical_uuids_only() {
        let canonical = "3f2b8c1e-9d4a-4b6f-8e2d-1a2b3c4d5e6f";
        assert_eq!(id("user_id", canonical).map(|u| u.to_string()).as_deref(), Ok(canonical));
        assert_eq!(reason(id("user_id", "")), ErrorReason::FieldRequired);
        assert_eq!(reason(id("user_id", &canonical.to_uppercase())), ErrorReason::InvalidUuid);
        assert_eq!(reason(id("user_id", &format!(" {canonical}"))), ErrorReason::InvalidUuid);
        assert_eq!(reason(id("user_id", &canonical.replace('-', ""))), ErrorReason::InvalidUuid);
        assert_eq!(reason(id("user_id", &format!("{{{canonical}}}"))), ErrorReason::InvalidUuid);
        assert_eq!(reason(id("user_id", "3f2b8c1e-9d4a-4b6f-8e2d-1a2b3c4d5e6-")), ErrorReason::InvalidUuid);
        assert_eq!(optional_id("parent_id", ""), Ok(None));
        let err = id("items[3].tenant_id", "x").expect_err("refused");
        assert_eq!(err.field, "items[3].tenant_id");
    }

    #[test]
    fn role_names_follow_the_catalog_rule() {
        assert!(RoleName::parse("role", "client_admin").is_ok());
        assert!(RoleName::parse("role", "SUPER_ADMIN").is_ok());
        assert!(RoleName::parse("role", &"r".repeat(64)).is_ok());
        assert_eq!(reason(RoleName::parse("role", "")), ErrorReason::FieldRequired);
        assert_eq!(reason(RoleName::parse("role", &"r".repeat(65))), ErrorReason::FieldTooLong);
        assert_eq!(reason(RoleName::parse("role", " client_admin")), ErrorReason::InvalidFormat);
        assert_eq!(reason(RoleName::parse("role", "client-admin")), ErrorReason::InvalidFormat);
        assert_eq!(reason(RoleName::parse("role", "client.admin")), ErrorReason::InvalidFormat);
        assert_eq!(reason(RoleName::parse("role", "rôle")), ErrorReason::InvalidFormat);
    }

    #[test]
    fn page_sizes_default_and_coerce_and_refuse_negatives() {
        assert_eq!(PageSize::parse("page_size", 0).map(PageSize::get), Ok(PageSize::DEFAULT));
        assert_eq!(PageSize::parse("page_size", 7).map(PageSize::get), Ok(7));
        assert_eq!(PageSize::parse("page_size", 500).map(PageSize::get), Ok(500));
        assert_eq!(PageSize::parse("page_size", 501).map(PageSize::get), Ok(PageSize::MAX));
        assert_eq!(PageSize::parse("page_size", i32::MAX).map(PageSize::get), Ok(PageSize::MAX));
        assert_eq!(reason(PageSize::parse("page_size", -1)), ErrorReason::ValueOutOfRange);
    }

    #[test]
    fn page_tokens_are_bound_to_their_filters() {
        let token = PageToken::encode("tenant=a", "42");
        assert_eq!(PageToken::decode("page_token", &token, "tenant=a"), Ok(Some("42".to_owned())));
        assert_eq!(PageToken::decode("page_token", "", "tenant=a"), Ok(None));
        assert_eq!(reason(PageToken::decode("page_token", &token, "tenant=b")), ErrorReason::InvalidPageToken);
        assert_eq!(reason(PageToken::decode("page_token", "zz", "tenant=a")), ErrorReason::InvalidPageToken);
        let long = "0".repeat(PageToken::MAX_LEN + 2);
        assert_eq!(reason(PageToken::decode("page_token", &long, "tenant=a")), ErrorReason::InvalidPageToken);
    }

    #[test]
    fn text_is_trimmed_bounded_and_printable() {
        assert_eq!(text("title", "  Lead  ", 10).as_deref(), Ok("Lead"));
        assert_eq!(text("notes", "a\nb\tc", 10).as_deref(), Ok("a\nb\tc"));
        assert_eq!(text("title", "", 10).as_deref(), Ok(""));
        assert_eq!(reason(text("title", "ééééééééééé", 10)), ErrorReason::FieldTooLong);
        assert!(text("title", "éééééééééé", 10).is_ok(), "characters, not bytes");
        assert_eq!(reason(text("title", "a\u{0}b", 10)), ErrorReason::InvalidFormat);
        assert_eq!(reason(required_text("name", "   ", 10)), ErrorReason::FieldRequired);
    }
}
