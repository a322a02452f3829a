//! The rules and types of tenancy: no I/O here.

pub mod ownership;
mod paging;
mod records;
pub mod rules;
mod tenant;
mod values;

pub use ownership::{Transferor, ensure_grantable, ensure_owner_kept};
pub use paging::{PageRequest, PageToken};
pub use records::{AssignmentRow, HeldMembership, MembershipRow, OwnershipRow, TenantRow};
pub use rules::{child_kind, ensure_admin_kept, ensure_depth, ensure_movable, slug_from_name, strongest_kind_rank};
pub use tenant::{FieldError, TenantName, TenantSlug};
pub use values::{MembershipKind, Rejection, RoleName, TenantKind, TenantStatus, parse_id, parse_optional_id};
