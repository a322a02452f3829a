//! One mapping from domain errors to gRPC status.
//!
//! Every error a client sees carries a `google.rpc.ErrorInfo` whose `reason` is a stable,
//! machine-readable name from `tether.common.v1.ErrorReason` (without its `ERROR_REASON_`
//! prefix) and whose `domain` is `tether`. Clients match on the reason, never on the message.
//! Internal failures are logged with the trace id and answered with a bare INTERNAL naming that
//! id, so nothing about the internals leaks.

use std::fmt;

use tether_proto::common::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use tether_proto::ERROR_DOMAIN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub reason: ErrorReason,
    pub message: String,
    /// Extra `ErrorInfo.metadata` (for example the field that failed validation).
    pub metadata: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(code: Code, reason: ErrorReason, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), metadata: Vec::new() }
    }
    pub fn invalid_argument(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, reason, message)
    }
    pub fn not_found(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, reason, message)
    }
    pub fn already_exists(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, reason, message)
    }
    pub fn failed_precondition(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }
    pub fn permission_denied(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }
    pub fn unauthenticated(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, reason, message)
    }
    pub fn unavailable(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, reason, message)
    }

    /// An unexpected failure: the detail is logged with the trace id, the caller sees only the id.
    pub fn internal(detail: impl fmt::Display) -> Self {
        let trace_id = crate::telemetry::current_trace_id().unwrap_or_else(|| "none".to_owned());
        tracing::error!(%trace_id, error = %detail, "internal error");
        Self::new(Code::Internal, ErrorReason::Internal, format!("internal error (trace id {trace_id})"))
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }
}

/// `ERROR_REASON_TENANT_NOT_FOUND` -> `TENANT_NOT_FOUND`.
pub fn reason_name(reason: ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let details = ErrorDetails::with_error_info(
            reason_name(err.reason),
            ERROR_DOMAIN,
            err.metadata.into_iter().collect::<std::collections::HashMap<_, _>>(),
        );
        Status::with_error_details(err.code, err.message, details)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}): {}", reason_name(self.reason), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The reason a status carries, for clients and tests: `None` if it has no Tether `ErrorInfo`.
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().filter(|info| info.domain == ERROR_DOMAIN).map(|info| info.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_a_stable_reason() {
        let status: Status = ApiError::not_found(ErrorReason::TenantNotFound, "no such tenant").into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason_of(&status).as_deref(), Some("TENANT_NOT_FOUND"));
        assert_eq!(status.message(), "no such tenant");
    }

    #[test]
    fn internal_errors_do_not_leak_detail() {
        let status: Status = ApiError::internal("connection to 10.1.2.3 refused: password xyz").into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("xyz"));
        assert_eq!(reason_of(&status).as_deref(), Some("INTERNAL"));
    }
}
