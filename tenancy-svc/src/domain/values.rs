//! Typed values parsed at the edge, and the one rejection type every rule returns.

pub use tether_proto::values::RoleName;
use tether_proto::{
    common::v1::ErrorReason,
    values::{self, FieldError},
};

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

impl From<FieldError> for Rejection {
    fn from(e: FieldError) -> Self {
        Self { reason: e.reason, message: e.message, field: Some(e.field) }
    }
}

/// An id in the contract's one spelling (a canonical UUID), as text.
pub fn parse_id(field: &str, raw: &str) -> Result<String, Rejection> {
    Ok(values::id(field, raw)?.to_string())
}

/// Like [`parse_id`], but empty means "not given".
pub fn parse_optional_id(field: &str, raw: &str) -> Result<Option<String>, Rejection> {
    Ok(values::optional_id(field, raw)?.map(|id| id.to_string()))
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
        assert_eq!(parse_id("tenant_id", &id).unwrap(), id);
        assert_eq!(parse_id("tenant_id", "").unwrap_err().reason, ErrorReason::FieldRequired);
        assert_eq!(parse_id("tenant_id", "nope").unwrap_err().reason, ErrorReason::InvalidUuid);
        assert_eq!(parse_id("tenant_id", &id.to_uppercase()).unwrap_err().reason, ErrorReason::InvalidUuid);
        assert_eq!(parse_optional_id("x", "").unwrap(), None);
    }

    #[test]
    fn role_names_are_bounded() {
        assert!(RoleName::parse("role", "client_admin").is_ok());
        assert!(RoleName::parse("role", "SUPER_ADMIN").is_ok());
        assert_eq!(RoleName::parse("role", "").unwrap_err().reason, ErrorReason::FieldRequired);
        assert_eq!(RoleName::parse("role", "a b").unwrap_err().reason, ErrorReason::InvalidFormat);
        assert_eq!(RoleName::parse("role", &"r".repeat(65)).unwrap_err().reason, ErrorReason::FieldTooLong);
    }
}
