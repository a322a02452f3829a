//! One error contract for every service.
//!
//! Every error a client sees carries a `google.rpc.ErrorInfo` whose `reason` is a stable,
//! machine-readable name from `tether.common.v1.ErrorReason` (without its `ERROR_REASON_`
//! prefix) and whose `domain` is `tether`. The gRPC code follows from the reason through one
//! table, [`code_of`]: it has no wildcard arm, so a new reason cannot be added without deciding
//! its code, and one reason never travels with two codes. An error about one request field also
//! carries a `google.rpc.BadRequest` field violation. Internal failures are logged with the trace
//! id and answered with a bare INTERNAL naming that id, so nothing about the internals leaks.

use std::{collections::HashMap, fmt};

use tether_proto::common::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use tether_proto::ERROR_DOMAIN;

/// The gRPC code of each reason, as `common.proto` documents it next to the reason.
pub const fn code_of(reason: ErrorReason) -> Code {
    use ErrorReason as R;
    match reason {
        R::InvalidEmail
        | R::InvalidUuid
        | R::FieldTooLong
        | R::FieldRequired
        | R::InvalidPageToken
        | R::BatchTooLarge
        | R::WeakPassword
        | R::PasswordTooShort
        | R::PasswordTooLong
        | R::PasswordTooCommon
        | R::PasswordContainsPersonalInfo
        | R::PasswordReused
        | R::PasswordMissingCharacterClass
        | R::InvalidTotpCode
        | R::InvalidRecoveryCode
        | R::ValueOutOfRange
        | R::InvalidFormat
        | R::DuplicateEntry
        | R::InvalidTimeRange
        | R::InvalidConsistencyToken
        | R::CheckpointInvalid
        | R::InvitationTokenMalformed
        | R::PasswordResetTokenMalformed
        | R::CurrentPasswordIncorrect => Code::InvalidArgument,

        R::UserNotFound
        | R::TenantNotFound
        | R::InvitationNotFound
        | R::SessionNotFound
        | R::RoleNotFound
        | R::PermissionNotFound
        | R::ResourceNotFound
        | R::MembershipNotFound
        | R::AssignmentNotFound
        | R::OverrideNotFound
        | R::ResourceGrantNotFound
        | R::AuditEventNotFound => Code::NotFound,

        R::EmailTaken
        | R::SlugTaken
        | R::InvitationPending
        | R::RoleExists
        | R::MembershipExists
        | R::RequestIdReused => Code::AlreadyExists,

        R::LoginStepTokenInvalid
        | R::LoginStepTokenExpired
        | R::Unauthenticated
        | R::SessionExpired
        | R::LoginFailed => Code::Unauthenticated,

        R::PermissionDenied
        | R::RoleAboveOwn
        | R::OwnerRoleNotAssignable
        | R::OutsideTenant
        | R::RoleNotAssignable
        | R::MspStaffRequired
        | R::NotOwner => Code::PermissionDenied,

        R::InvitationExpired
        | R::InvitationUsed
        | R::InvitationRevoked
        | R::PasswordResetExpired
        | R::PasswordResetUsed
        | R::PasswordResetRevoked
        | R::AccountLocked
        | R::SecondFactorRequired
        | R::SecondFactorEnrollmentRequired
        | R::PasswordChangeRequired
        | R::TotpAlreadyEnabled
        | R::TotpNotEnabled
        | R::TotpEnrollmentNotStarted
        | R::LastAdmin
        | R::MspStaffOnlyRole
        | R::SelfActionForbidden
        | R::OwnerNotRemovable
        | R::TreeCycle
        | R::TreeTooDeep
        | R::TenantNotActive
        | R::NotAClient
        | R::AdminTenancyImmutable
        | R::NotAMember
        | R::NotADepartment
        | R::InvalidParent
        | R::NotMspStaff
        | R::UserNotActive
        | R::RoleBuiltIn
        | R::RoleInUse
        | R::ResourceHasChildren
        | R::RoleScopeMismatch
        | R::RevisionCompacted
        | R::ConfigInvalid => Code::FailedPrecondition,

        R::RevisionAhead => Code::OutOfRange,
        R::RateLimited | R::Overloaded | R::LimitReached => Code::ResourceExhausted,
        R::NotCaughtUp | R::IndexNotLoaded | R::IndexStale | R::Unavailable => Code::Unavailable,
        R::DeadlineExceeded => Code::DeadlineExceeded,
        R::NotImplemented => Code::Unimplemented,
        R::Unspecified | R::Internal => Code::Internal,
    }
}

/// A failed call: its reason (which decides the gRPC code), a message for people, and extra
/// `ErrorInfo.metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub reason: ErrorReason,
    pub message: String,
    /// Extra `ErrorInfo.metadata` (for example "field", the request field at fault).
    pub metadata: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), metadata: Vec::new() }
    }

    /// An error about one request field (a path such as `items[3].tenant_id`).
    pub fn field(reason: ErrorReason, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(reason, message).with_metadata("field", field)
    }

    /// An unexpected failure: the detail is logged with the trace id, the caller sees only the id.
    pub fn internal(detail: impl fmt::Display) -> Self {
        let trace_id = crate::telemetry::current_trace_id().unwrap_or_else(|| "none".to_owned());
        tracing::error!(%trace_id, error = %detail, "internal error");
        Self::new(ErrorReason::Internal, format!("internal error (trace id {trace_id})"))
    }

    /// Another Tether service's refusal passed on with its reason; a failure to reach it (or a
    /// status without a Tether reason) is UNAVAILABLE, naming the service.
    pub fn from_downstream(service: &str, status: &Status) -> Self {
        match reason_from(status) {
            Some(reason) if !matches!(code_of(reason), Code::Internal | Code::Unavailable | Code::DeadlineExceeded) => {
                let mut err = Self::new(reason, status.message());
                err.metadata =
                    status.get_details_error_info().map(|info| info.metadata.into_iter().collect()).unwrap_or_default();
                err
            }
            _ => Self::new(ErrorReason::Unavailable, format!("{service} is unavailable: {}", status.message())),
        }
    }

    pub fn code(&self) -> Code {
        code_of(self.reason)
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// The request field this error is about, if any.
    pub fn field_name(&self) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == "field").map(|(_, v)| v.as_str())
    }
}

impl From<tether_proto::values::FieldError> for ApiError {
    fn from(e: tether_proto::values::FieldError) -> Self {
        Self::field(e.reason, e.field, e.message)
    }
}

#[cfg(feature = "server")]
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

/// `ERROR_REASON_TENANT_NOT_FOUND` -> `TENANT_NOT_FOUND`.
pub fn reason_name(reason: ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// `TENANT_NOT_FOUND` -> `ERROR_REASON_TENANT_NOT_FOUND`; `None` for a name the contract lacks.
pub fn reason_named(name: &str) -> Option<ErrorReason> {
    ErrorReason::from_str_name(&format!("ERROR_REASON_{name}"))
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        let mut details = ErrorDetails::new();
        if let Some(field) = err.field_name() {
            details.add_bad_request_violation(field, err.message.clone());
        }
        details.set_error_info(
            reason_name(err.reason),
            ERROR_DOMAIN,
            err.metadata.into_iter().collect::<HashMap<_, _>>(),
        );
        Status::with_error_details(code, err.message, details)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}): {}", reason_name(self.reason), self.code(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// The reason name a status carries, for clients and tests: `None` if it has no Tether `ErrorInfo`.
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().filter(|info| info.domain == ERROR_DOMAIN).map(|info| info.reason)
}

/// The reason a status carries, as the contract's enum.
pub fn reason_from(status: &Status) -> Option<ErrorReason> {
    reason_of(status).as_deref().and_then(reason_named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_a_stable_reason_and_its_code() {
        let status: Status = ApiError::new(ErrorReason::TenantNotFound, "no such tenant").into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason_of(&status).as_deref(), Some("TENANT_NOT_FOUND"));
        assert_eq!(status.message(), "no such tenant");
    }

    #[test]
    fn reasons_whose_code_differs_from_their_section_keep_their_own() {
        // Spot checks of reasons whose code differs from their section's.
        assert_eq!(code_of(ErrorReason::InvitationTokenMalformed), Code::InvalidArgument);
        assert_eq!(code_of(ErrorReason::LastAdmin), Code::FailedPrecondition);
        assert_eq!(code_of(ErrorReason::MspStaffOnlyRole), Code::FailedPrecondition);
        assert_eq!(code_of(ErrorReason::RateLimited), Code::ResourceExhausted);
        assert_eq!(code_of(ErrorReason::RevisionAhead), Code::OutOfRange);
        assert_eq!(code_of(ErrorReason::RevisionCompacted), Code::FailedPrecondition);
        assert_eq!(code_of(ErrorReason::CurrentPasswordIncorrect), Code::InvalidArgument);
        assert_eq!(code_of(ErrorReason::AccountLocked), Code::FailedPrecondition);
    }

    #[test]
    fn the_table_agrees_with_the_contract() {
        // common.proto names each reason's code in brackets, on the reason or its section.
        let proto = include_str!("../../proto/tether/common/v1/common.proto");
        let body = proto.split("enum ErrorReason {").nth(1).unwrap_or_default();
        let mut section = None;
        let mut comment = String::new();
        let mut checked = 0;
        for line in body.lines().map(str::trim) {
            if let Some(text) = line.strip_prefix("//") {
                if text.trim_start().starts_with("---") {
                    section = bracketed(text);
                    comment.clear();
                } else {
                    comment.push_str(text);
                }
                continue;
            }
            let Some((name, _)) = line.split_once(" = ") else { continue };
            let Some(reason) = ErrorReason::from_str_name(name) else { continue };
            if let Some(code) = bracketed(&comment).or(section) {
                assert_eq!(code_of(reason), code, "{name}: the contract says {code:?}");
                checked += 1;
            }
            comment.clear();
        }
        assert!(checked > 90, "only {checked} reasons had a documented code");
    }

    fn bracketed(text: &str) -> Option<Code> {
        let inner = text.split('[').nth(1)?.split(']').next()?;
        let name = inner.split_whitespace().next()?;
        Some(match name {
            "INVALID_ARGUMENT" => Code::InvalidArgument,
            "NOT_FOUND" => Code::NotFound,
            "ALREADY_EXISTS" => Code::AlreadyExists,
            "FAILED_PRECONDITION" => Code::FailedPrecondition,
            "UNAUTHENTICATED" => Code::Unauthenticated,
            "PERMISSION_DENIED" => Code::PermissionDenied,
            "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
            "OUT_OF_RANGE" => Code::OutOfRange,
            "UNAVAILABLE" => Code::Unavailable,
            "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
            "INTERNAL" => Code::Internal,
            "UNIMPLEMENTED" => Code::Unimplemented,
            _ => return None,
        })
    }

    #[test]
    fn a_field_error_names_the_field_for_stock_clients() {
        let status: Status = ApiError::field(ErrorReason::FieldRequired, "items[2].tenant_id", "required").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = details.bad_request().map(|b| b.field_violations.clone()).unwrap_or_default();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "items[2].tenant_id");
        assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("FIELD_REQUIRED"));
    }

    #[test]
    fn internal_errors_do_not_leak_detail() {
        let status: Status = ApiError::internal("connection to 10.1.2.3 refused: password xyz").into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("xyz"));
        assert_eq!(reason_of(&status).as_deref(), Some("INTERNAL"));
    }

    #[test]
    fn a_downstream_refusal_keeps_its_reason_and_an_outage_is_unavailable() {
        let refused: Status = ApiError::field(ErrorReason::RoleNotFound, "role", "no such role").into();
        let passed = ApiError::from_downstream("authz-svc", &refused);
        assert_eq!((passed.code(), passed.reason), (Code::NotFound, ErrorReason::RoleNotFound));
        assert_eq!(passed.field_name(), Some("role"));
        let down = ApiError::from_downstream("authz-svc", &Status::unavailable("connection refused"));
        assert_eq!((down.code(), down.reason), (Code::Unavailable, ErrorReason::Unavailable));
    }
}
