//! The rules and types of identity: no I/O here.

pub mod account;
pub mod lockout;
pub mod login;
mod names;
pub mod password;
pub mod policy;
pub mod tokens;
pub mod totp;
pub mod totp_keys;
pub mod two_factor;

pub use names::{DisplayName, Email, FieldError};
