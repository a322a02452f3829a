//! The rules and types of tenancy: no I/O here.

mod tenant;

pub use tenant::{FieldError, TenantName, TenantSlug};
