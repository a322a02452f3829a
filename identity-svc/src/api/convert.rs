//! Rows and domain values to protobuf messages (and change events), and domain errors to
//! `ApiError`. Shared by the handler files, it imports none of them, so imports point one way.

use tether_proto::{
    common::v1::{ConsistencyToken, ErrorReason, Revision, RevisionSource},
    identity::v1 as pb,
};
use tether_runtime::{ApiError, db::now_micros};

use crate::{
    domain::{
        account::{InputError, Status},
        login::LoginFailure,
        policy::{CharClass, PasswordPolicy, PasswordRule},
    },
    store::{accounts::AccountRow, invitations::InvitationRow, sessions::SessionRow},
};

pub use tether_runtime::db::timestamp;

pub fn ts(micros: i64) -> Option<prost_types::Timestamp> {
    Some(timestamp(micros))
}

pub fn user(a: &AccountRow) -> pb::User {
    let deleted = a.status == Status::Deleted;
    pb::User {
        user_id: a.id.clone(),
        email: a.email.clone().unwrap_or_default(),
        display_name: a.display_name.clone(),
        status: a.status.to_proto() as i32,
        is_msp_staff: a.is_msp_staff,
        primary_tenant_id: a.primary_tenant_id.clone().unwrap_or_default(),
        job_title: a.job_title.clone().unwrap_or_default(),
        notes: a.notes.clone().unwrap_or_default(),
        created_at: ts(a.created_at),
        joined_at: a.joined_at.and_then(ts),
        last_login_at: a.last_login_at.and_then(ts),
        two_factor_enabled: a.totp_enabled,
        must_change_password: a.must_change_password,
        deleted,
        deleted_at: a.deleted_at.and_then(ts),
        updated_at: ts(a.updated_at.max(a.created_at)),
    }
}

/// The account as audit before/after JSON: never a secret.
pub fn user_json(a: &AccountRow) -> serde_json::Value {
    serde_json::json!({
        "user_id": a.id,
        "email": a.email,
        "display_name": a.display_name,
        "status": a.status.as_str(),
        "is_msp_staff": a.is_msp_staff,
        "primary_tenant_id": a.primary_tenant_id,
        "job_title": a.job_title,
        "notes": a.notes,
        "two_factor_enabled": a.totp_enabled,
        "must_change_password": a.must_change_password,
    })
}

pub fn upserted(a: &AccountRow) -> pb::IdentityChange {
    pb::IdentityChange {
        change: Some(pb::identity_change::Change::UserUpserted(pb::UserUpserted { user: Some(user(a)) })),
        ..Default::default()
    }
}

pub fn session_revoked(session_id: &str, user_id: &str) -> pb::IdentityChange {
    pb::IdentityChange {
        change: Some(pb::identity_change::Change::SessionRevoked(pb::SessionRevoked {
            session_id: session_id.to_owned(),
            user_id: user_id.to_owned(),
        })),
        ..Default::default()
    }
}

pub fn invitation_status(row: &InvitationRow, now: i64) -> pb::InvitationStatus {
    match row.status.as_str() {
        "accepted" => pb::InvitationStatus::Accepted,
        "revoked" => pb::InvitationStatus::Revoked,
        _ if row.expires_at <= now => pb::InvitationStatus::Expired,
        _ => pb::InvitationStatus::Pending,
    }
}

pub fn invitation(row: &InvitationRow) -> pb::Invitation {
    pb::Invitation {
        invitation_id: row.id.clone(),
        user_id: row.account_id.clone(),
        email: row.email.clone(),
        display_name: row.display_name.clone(),
        tenant_id: row.tenant_id.clone(),
        role: row.role.clone(),
        is_msp_staff: row.is_msp_staff,
        status: invitation_status(row, now_micros()) as i32,
        invited_by_user_id: row.invited_by.clone(),
        created_at: ts(row.created_at),
        expires_at: ts(row.expires_at),
        last_sent_at: ts(row.last_sent_at),
        send_count: row.send_count as i32,
        accepted_at: row.accepted_at.and_then(ts),
    }
}

pub fn invitation_upserted(row: &InvitationRow) -> pb::IdentityChange {
    pb::IdentityChange {
        change: Some(pb::identity_change::Change::InvitationUpserted(pb::InvitationUpserted {
            invitation: Some(invitation(row)),
        })),
        ..Default::default()
    }
}

/// An invitation on the audit trail.
pub fn invitation_json(row: &InvitationRow) -> serde_json::Value {
    serde_json::json!({
        "invitation_id": row.id, "user_id": row.account_id, "email": row.email, "tenant_id": row.tenant_id,
        "role": row.role, "is_msp_staff": row.is_msp_staff, "status": row.status, "expires_at": row.expires_at,
    })
}

pub fn session(s: &SessionRow, idle_micros: i64, current: bool) -> pb::Session {
    pb::Session {
        session_id: s.id.clone(),
        user_id: s.account_id.clone(),
        created_at: ts(s.created_at),
        last_seen_at: ts(s.last_seen_at),
        idle_expires_at: ts((s.last_seen_at + idle_micros).min(s.expires_at)),
        expires_at: ts(s.expires_at),
        client_ip: s.client_ip.clone(),
        user_agent: s.user_agent.clone(),
        current,
        second_factor_verified: s.second_factor_verified,
    }
}

pub fn principal(a: &AccountRow, session_id: &str) -> pb::Principal {
    pb::Principal {
        user_id: a.id.clone(),
        is_msp_staff: a.is_msp_staff,
        primary_tenant_id: a.primary_tenant_id.clone().unwrap_or_default(),
        session_id: session_id.to_owned(),
        two_factor_enabled: a.totp_enabled,
        display_name: a.display_name.clone(),
        email: a.email.clone().unwrap_or_default(),
    }
}

pub fn login_failure(f: LoginFailure) -> pb::LoginFailureReason {
    use pb::LoginFailureReason as R;
    match f {
        LoginFailure::UnknownEmail => R::UnknownEmail,
        LoginFailure::WrongPassword => R::WrongPassword,
        LoginFailure::UserSuspended => R::UserSuspended,
        LoginFailure::InvitationNotAccepted => R::InvitationNotAccepted,
        LoginFailure::AccountLocked => R::AccountLocked,
        LoginFailure::IpLocked => R::IpLocked,
        LoginFailure::SecondFactorInvalid => R::SecondFactorInvalid,
        LoginFailure::MembershipPending => R::MembershipPending,
        LoginFailure::RolesUnavailable => R::RolesUnavailable,
    }
}

/// The audit trail's reason for a failed login: the contract's value name without its prefix.
pub fn login_failure_reason(f: LoginFailure) -> &'static str {
    let name = login_failure(f).as_str_name();
    name.strip_prefix("LOGIN_FAILURE_REASON_").unwrap_or(name)
}

pub fn token(revision: u64) -> Option<ConsistencyToken> {
    Some(ConsistencyToken { revisions: vec![Revision { source: RevisionSource::Identity as i32, value: revision }] })
}

pub fn input(e: InputError) -> ApiError {
    ApiError::new(e.reason, e.message).with_metadata("field", e.field)
}

/// `raw`, trimmed; INVALID_ARGUMENT (FIELD_TOO_LONG, naming the field) over `max` characters.
pub fn bounded(field: &'static str, raw: &str, max: usize) -> Result<String, ApiError> {
    if raw.chars().count() > max {
        return Err(ApiError::field(ErrorReason::FieldTooLong, field, format!("{field} is too long")));
    }
    Ok(raw.trim().to_owned())
}

fn rule_reason(rule: &PasswordRule) -> ErrorReason {
    match rule {
        PasswordRule::TooShort { .. } => ErrorReason::PasswordTooShort,
        PasswordRule::TooLong { .. } => ErrorReason::PasswordTooLong,
        PasswordRule::MissingClass(_) => ErrorReason::PasswordMissingCharacterClass,
        PasswordRule::TooCommon => ErrorReason::PasswordTooCommon,
        PasswordRule::ContainsPersonalInfo => ErrorReason::PasswordContainsPersonalInfo,
        PasswordRule::Reused { .. } => ErrorReason::PasswordReused,
    }
}

/// The first failed rule is the reason; `rules` lists them all.
pub fn password_rules(field: &str, rules: &[PasswordRule]) -> ApiError {
    let first = rules.first().map(rule_reason).unwrap_or(ErrorReason::WeakPassword);
    let message = rules.iter().map(PasswordRule::message).collect::<Vec<_>>().join("; ");
    let names = rules.iter().map(PasswordRule::name).collect::<Vec<_>>().join(",");
    ApiError::new(first, message).with_metadata("field", field).with_metadata("rules", names)
}

pub fn policy(p: &PasswordPolicy) -> pb::PasswordPolicy {
    pb::PasswordPolicy {
        min_length: p.min_length as i32,
        max_length: p.max_length as i32,
        required_character_classes: p
            .required_classes
            .iter()
            .map(|c| match c {
                CharClass::Lower => pb::CharacterClass::Lowercase as i32,
                CharClass::Upper => pb::CharacterClass::Uppercase as i32,
                CharClass::Digit => pb::CharacterClass::Digit as i32,
                CharClass::Symbol => pb::CharacterClass::Symbol as i32,
            })
            .collect(),
        reject_common: p.reject_common,
        reject_personal_info: p.reject_personal_info,
        history_count: p.history_count as i32,
    }
}

pub fn db(e: sqlx::Error) -> ApiError {
    ApiError::internal(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_failures_are_audited_under_the_contracts_names() {
        use LoginFailure::*;
        let names = [
            (UnknownEmail, "UNKNOWN_EMAIL"),
            (WrongPassword, "WRONG_PASSWORD"),
            (UserSuspended, "USER_SUSPENDED"),
            (InvitationNotAccepted, "INVITATION_NOT_ACCEPTED"),
            (AccountLocked, "ACCOUNT_LOCKED"),
            (IpLocked, "IP_LOCKED"),
            (SecondFactorInvalid, "SECOND_FACTOR_INVALID"),
            (MembershipPending, "MEMBERSHIP_PENDING"),
            (RolesUnavailable, "ROLES_UNAVAILABLE"),
        ];
        for (failure, name) in names {
            assert_eq!(login_failure_reason(failure), name);
            let value = login_failure(failure);
            assert_eq!(pb::LoginFailureReason::from_str_name(value.as_str_name()), Some(value));
        }
    }

    #[test]
    fn bounded_fields_are_trimmed_and_counted_in_characters() {
        assert_eq!(bounded("user_agent", "  curl/8  ", 10).ok().as_deref(), Some("curl/8"));
        assert!(bounded("user_agent", &"é".repeat(10), 10).is_ok(), "characters, not bytes");
        let e = bounded("client_ip", &"1".repeat(101), 100).unwrap_err();
        assert_eq!((e.reason, e.field_name()), (ErrorReason::FieldTooLong, Some("client_ip")));
    }
}
