//! Typed values parsed at the edge, and the one rejection type every rule returns.

use tether_proto::common::v1::ErrorReason;

/// A refused request: a stable reason, a message for people, and the field at fault if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: ErrorReason,
    pub message: String,
    pub field: Option<String>,
}

impl Rejection {
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), field: None }
    }

    pub fn on(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.reason, self.message)
    }
}

/// A canonical lower-case hyphenated UUID (the only id form Tether accepts).
pub fn parse_id(raw: &str, field: &str) -> Result<String, Rejection> {
    if raw.is_empty() {
        return Err(Rejection::new(ErrorReason::FieldRequired, format!("{field} is required")).on(field));
    }
    match uuid::Uuid::try_parse(raw) {
        Ok(id) if id.hyphenated().to_string() == raw => Ok(raw.to_owned()),
        _ => Err(Rejection::new(ErrorReason::InvalidUuid, format!("{field} is not a canonical UUID")).on(field)),
    }
}

/// Like [`parse_id`], but empty means "not given".
pub fn parse_optional_id(raw: &str, field: &str) -> Result<Option<String>, Rejection> {
    if raw.is_empty() { Ok(None) } else { parse_id(raw, field).map(Some) }
}

/// A role name of authz-svc's catalog: 1 to 64 of `[A-Za-z0-9_.-]` (packs spell them their way).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleName(String);

impl RoleName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str, field: &str) -> Result<Self, Rejection> {
        if raw.is_empty() {
            return Err(Rejection::new(ErrorReason::FieldRequired, format!("{field} is required")).on(field));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(
                Rejection::new(ErrorReason::FieldTooLong, format!("{field} is longer than 64 characters")).on(field)
            );
        }
        if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
            return Err(Rejection::new(ErrorReason::InvalidFormat, format!("{field} is not a role name")).on(field));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKind {
    Admin,
    Client,
    Department,
}

impl TenantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Client => "client",
            Self::Department => "department",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "client" => Some(Self::Client),
            "department" => Some(Self::Department),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    Suspended,
    Archived,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Archived => "archived",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MembershipKind {
    Direct,
    Shadow,
    Assigned,
}

impl MembershipKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Shadow => "shadow",
            Self::Assigned => "assigned",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "direct" => Some(Self::Direct),
            "shadow" => Some(Self::Shadow),
            "assigned" => Some(Self::Assigned),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_canonical_uuids() {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(parse_id(&id, "tenant_id").unwrap(), id);
        assert_eq!(parse_id("", "tenant_id").unwrap_err().reason, ErrorReason::FieldRequired);
        assert_eq!(parse_id("nope", "tenant_id").unwrap_err().reason, ErrorReason::InvalidUuid);
        assert_eq!(parse_id(&id.to_uppercase(), "tenant_id").unwrap_err().reason, ErrorReason::InvalidUuid);
        assert_eq!(parse_optional_id("", "x").unwrap(), None);
    }

    #[test]
    fn role_names_are_bounded() {
        assert!(RoleName::parse("client_admin", "role").is_ok());
        assert!(RoleName::parse("SUPER_ADMIN", "role").is_ok());
        assert_eq!(RoleName::parse("", "role").unwrap_err().reason, ErrorReason::FieldRequired);
        assert_eq!(RoleName::parse("a b", "role").unwrap_err().reason, ErrorReason::InvalidFormat);
        assert_eq!(RoleName::parse(&"r".repeat(65), "role").unwrap_err().reason, ErrorReason::FieldTooLong);
    }
}
