//! The rules and types of identity: no I/O here.

mod names;
pub mod password;

pub use names::{DisplayName, Email, FieldError};
