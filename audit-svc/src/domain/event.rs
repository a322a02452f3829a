//! What audit stores: an ingested event, checked field by field and normalised.
//!
//! Rules (each broken rule rejects that event alone, naming the field):
//!
//! 1. `event_id` is a canonical UUID (the idempotency key).
//! 2. `occurred_at` is set, not before 2000-01-01 and not later than now plus the allowed clock
//!    skew; it is stored to the microsecond.
//! 3. `source_service`, `action` and `resource_type` are required; `action` and `resource_type`
//!    are lower-case `[a-z0-9_.]` words (`user.create`).
//! 4. The actor has a kind; a USER actor names a canonical user UUID; `tenant_id` is empty or a
//!    canonical UUID; `client_ip` is empty or an IP address; `trace_id` is empty or 32 lower-case
//!    hex digits and `span_id` 16.
//! 5. The outcome is SUCCESS, FAILURE or DENIED.
//! 6. `before_json`, `after_json` and `metadata_json` are empty or a JSON object of at most the
//!    configured size (default 64 KiB); other identifiers and names are at most 256 characters,
//!    `user_agent` 512, and the whole event 256 KiB encoded.

use prost::Message;
use tether_proto::{
    common::v1::{ActorKind, AuditEvent, AuditOutcome, ErrorReason},
    values::{self, FieldError},
};

/// Bounds of one event.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    pub max_json_bytes: usize,
    /// How far in the future `occurred_at` may be (producers' clocks drift).
    /// At most [`MAX_CLOCK_SKEW_MICROS`].
    pub max_skew_micros: i64,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self { max_json_bytes: 64 * 1024, max_skew_micros: 5 * 60 * 1_000_000 }
    }
}

/// The most `TETHER_AUDIT_MAX_CLOCK_SKEW_MS` may allow (a day). Searches rely on it: no stored
/// event was received more than this before it occurred.
pub const MAX_CLOCK_SKEW_MICROS: i64 = 86_400 * 1_000_000;

const MAX_NAME: usize = 256;
const MAX_USER_AGENT: usize = 512;
const MAX_ENCODED: usize = 256 * 1024;
/// 2000-01-01T00:00:00Z in unix microseconds.
const EARLIEST: i64 = 946_684_800_000_000;

/// `event` checked and normalised, or why it is refused. `now` is unix microseconds.
pub fn validate(mut event: AuditEvent, limits: &EventLimits, now: i64) -> Result<AuditEvent, FieldError> {
    if event.encoded_len() > MAX_ENCODED {
        return Err(FieldError::too_long("event", MAX_ENCODED));
    }
    values::id("event_id", &event.event_id)?;
    let occurred = event.occurred_at.ok_or_else(|| FieldError::required("occurred_at"))?;
    let micros = tether_runtime::db::micros(&occurred);
    if !(0..1_000_000_000).contains(&occurred.nanos) || micros < EARLIEST || micros > now + limits.max_skew_micros {
        return Err(FieldError::new(
            ErrorReason::ValueOutOfRange,
            "occurred_at",
            "occurred_at must lie between 2000-01-01 and now",
        ));
    }
    event.occurred_at = Some(tether_runtime::db::timestamp(micros));
    name("source_service", &event.source_service, true)?;
    word("action", &event.action)?;
    word("resource_type", &event.resource_type)?;
    name("resource_id", &event.resource_id, false)?;
    values::optional_id("tenant_id", &event.tenant_id)?;
    if !event.client_ip.is_empty() && event.client_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(FieldError::new(ErrorReason::InvalidFormat, "client_ip", "client_ip is not an IP address"));
    }
    hex_id("trace_id", &event.trace_id, 32)?;
    hex_id("span_id", &event.span_id, 16)?;
    name("reason", &event.reason, false)?;
    if event.user_agent.chars().count() > MAX_USER_AGENT {
        return Err(FieldError::too_long("user_agent", MAX_USER_AGENT));
    }
    match AuditOutcome::try_from(event.outcome) {
        Ok(AuditOutcome::Success | AuditOutcome::Failure | AuditOutcome::Denied) => {}
        Ok(AuditOutcome::Unspecified) => return Err(FieldError::required("outcome")),
        Err(_) => {
            return Err(FieldError::new(ErrorReason::ValueOutOfRange, "outcome", "outcome is not a known outcome"));
        }
    }
    let actor = event.actor.as_ref().ok_or_else(|| FieldError::required("actor"))?;
    match ActorKind::try_from(actor.kind) {
        Ok(ActorKind::User) => {
            values::id("actor.user_id", &actor.user_id)?;
        }
        Ok(ActorKind::System | ActorKind::Anonymous) => {}
        Ok(ActorKind::Unspecified) => return Err(FieldError::required("actor.kind")),
        Err(_) => {
            return Err(FieldError::new(ErrorReason::ValueOutOfRange, "actor.kind", "actor.kind is not a known kind"));
        }
    }
    for (field, value) in [
        ("actor.display_name", &actor.display_name),
        ("actor.email", &actor.email),
        ("actor.system_name", &actor.system_name),
        ("actor.session_id", &actor.session_id),
    ] {
        name(field, value, false)?;
    }
    for (field, value) in [
        ("before_json", &event.before_json),
        ("after_json", &event.after_json),
        ("metadata_json", &event.metadata_json),
    ] {
        json_object(field, value, limits.max_json_bytes)?;
    }
    Ok(event)
}

fn name(field: &str, value: &str, required: bool) -> Result<(), FieldError> {
    if required { values::required_text(field, value, MAX_NAME) } else { values::text(field, value, MAX_NAME) }
        .map(|_| ())
}

fn word(field: &str, value: &str) -> Result<(), FieldError> {
    name(field, value, true)?;
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.') {
        return Err(FieldError::new(
            ErrorReason::InvalidFormat,
            field,
            format!("{field} is lower-case letters, digits, '_' and '.'"),
        ));
    }
    Ok(())
}

fn hex_id(field: &str, value: &str, len: usize) -> Result<(), FieldError> {
    if value.is_empty()
        || (value.len() == len && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Ok(());
    }
    Err(FieldError::new(ErrorReason::InvalidFormat, field, format!("{field} is {len} lower-case hex digits")))
}

fn json_object(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > max {
        return Err(FieldError::too_long(field, max));
    }
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(FieldError::new(ErrorReason::InvalidFormat, field, format!("{field} is not a JSON object"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::common::v1::Actor;

    const NOW: i64 = 1_790_000_000_000_000;

    fn good() -> AuditEvent {
        AuditEvent {
            event_id: "0192f3a4-5b6c-7d8e-9f01-23456789abcd".into(),
            occurred_at: Some(prost_types::Timestamp { seconds: 1_789_999_999, nanos: 123_456_789 }),
            source_service: "identity-svc".into(),
            actor: Some(Actor {
                kind: ActorKind::User as i32,
                user_id: "3f2b8c1e-9d4a-4b6f-8e2d-1a2b3c4d5e6f".into(),
                ..Default::default()
            }),
            action: "user.create".into(),
            resource_type: "user".into(),
            client_ip: "10.0.0.1".into(),
            outcome: AuditOutcome::Success as i32,
            after_json: r#"{"email":"a@b.example"}"#.into(),
            ..Default::default()
        }
    }

    fn refused(event: AuditEvent) -> (ErrorReason, String) {
        let e = validate(event, &EventLimits::default(), NOW).expect_err("refused");
        (e.reason, e.field)
    }

    #[test]
    fn a_good_event_is_kept_with_its_time_cut_to_microseconds() {
        let stored = validate(good(), &EventLimits::default(), NOW).unwrap();
        assert_eq!(stored.occurred_at.unwrap().nanos, 123_456_000);
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        let cases: Vec<(AuditEvent, ErrorReason, &str)> = vec![
            (AuditEvent { event_id: "nope".into(), ..good() }, ErrorReason::InvalidUuid, "event_id"),
            (AuditEvent { occurred_at: None, ..good() }, ErrorReason::FieldRequired, "occurred_at"),
            (
                AuditEvent { occurred_at: Some(prost_types::Timestamp { seconds: 900_000_000, nanos: 0 }), ..good() },
                ErrorReason::ValueOutOfRange,
                "occurred_at",
            ),
            (
                AuditEvent { occurred_at: Some(prost_types::Timestamp { seconds: 1_790_001_000, nanos: 0 }), ..good() },
                ErrorReason::ValueOutOfRange,
                "occurred_at",
            ),
            (AuditEvent { action: String::new(), ..good() }, ErrorReason::FieldRequired, "action"),
            (AuditEvent { action: "User Create".into(), ..good() }, ErrorReason::InvalidFormat, "action"),
            (AuditEvent { outcome: 0, ..good() }, ErrorReason::FieldRequired, "outcome"),
            (AuditEvent { outcome: 9, ..good() }, ErrorReason::ValueOutOfRange, "outcome"),
            (AuditEvent { actor: None, ..good() }, ErrorReason::FieldRequired, "actor"),
            (AuditEvent { tenant_id: "x".into(), ..good() }, ErrorReason::InvalidUuid, "tenant_id"),
            (AuditEvent { client_ip: "999.1.1.1".into(), ..good() }, ErrorReason::InvalidFormat, "client_ip"),
            (AuditEvent { trace_id: "abc".into(), ..good() }, ErrorReason::InvalidFormat, "trace_id"),
            (AuditEvent { before_json: "{not json".into(), ..good() }, ErrorReason::InvalidFormat, "before_json"),
            (AuditEvent { after_json: "[1,2]".into(), ..good() }, ErrorReason::InvalidFormat, "after_json"),
            (
                AuditEvent { metadata_json: format!(r#"{{"x":"{}"}}"#, "a".repeat(70_000)), ..good() },
                ErrorReason::FieldTooLong,
                "metadata_json",
            ),
            (AuditEvent { resource_id: "r".repeat(300), ..good() }, ErrorReason::FieldTooLong, "resource_id"),
        ];
        for (event, reason, field) in cases {
            assert_eq!(refused(event), (reason, field.to_owned()), "{field}");
        }
    }

    #[test]
    fn the_json_cap_is_configurable() {
        let limits = EventLimits { max_json_bytes: 16, ..EventLimits::default() };
        let e = validate(good(), &limits, NOW).expect_err("after_json is over 16 bytes");
        assert_eq!((e.reason, e.field.as_str()), (ErrorReason::FieldTooLong, "after_json"));
    }
}
