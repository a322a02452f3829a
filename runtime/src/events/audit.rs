//! The one builder of audit events: every service fills the common fields the same way.

use tether_proto::common::v1::{Actor, ActorKind, AuditEvent, AuditOutcome};

use crate::db::{now_micros, timestamp};

/// An audit event in the making: id, time, source, actor, action, resource, client address and
/// trace id filled; outcome success unless [`Audit::failed`].
pub struct Audit(AuditEvent);

impl Audit {
    pub fn new(
        source: &str,
        actor: Actor,
        client_ip: &str,
        action: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> Self {
        Self(AuditEvent {
            // Time-ordered ids: events sort by id in the order they happened.
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: Some(timestamp(now_micros())),
            source_service: source.to_owned(),
            actor: Some(actor),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.to_owned(),
            client_ip: client_ip.to_owned(),
            outcome: AuditOutcome::Success as i32,
            trace_id: crate::telemetry::current_trace_id().unwrap_or_default(),
            span_id: crate::telemetry::current_span_id().unwrap_or_default(),
            ..Default::default()
        })
    }

    pub fn tenant(mut self, tenant_id: &str) -> Self {
        self.0.tenant_id = tenant_id.to_owned();
        self
    }

    pub fn failed(mut self, reason: &str) -> Self {
        self.0.outcome = AuditOutcome::Failure as i32;
        self.0.reason = reason.to_owned();
        self
    }

    /// The state before the change (never a secret).
    pub fn before(mut self, json: serde_json::Value) -> Self {
        self.0.before_json = json.to_string();
        self
    }

    /// The state after the change (never a secret).
    pub fn after(mut self, json: serde_json::Value) -> Self {
        self.0.after_json = json.to_string();
        self
    }

    pub fn metadata(mut self, json: serde_json::Value) -> Self {
        self.0.metadata_json = json.to_string();
        self
    }

    pub fn build(self) -> AuditEvent {
        self.0
    }
}

/// A service acting on its own (bootstrap, relays, housekeeping).
pub fn system_actor(name: &str) -> Actor {
    Actor { kind: ActorKind::System as i32, system_name: name.to_owned(), ..Default::default() }
}

/// Someone not signed in (a login attempt names the email it tried).
pub fn anonymous_actor(email: &str) -> Actor {
    Actor { kind: ActorKind::Anonymous as i32, email: email.to_owned(), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_carries_its_common_fields_and_states() {
        let event = Audit::new("identity-svc", system_actor("bootstrap"), "10.0.0.1", "user.create", "user", "u1")
            .tenant("t1")
            .after(serde_json::json!({ "email": "a@b.example" }))
            .build();
        assert_eq!(event.source_service, "identity-svc");
        assert_eq!(
            (event.action.as_str(), event.resource_id.as_str(), event.tenant_id.as_str()),
            ("user.create", "u1", "t1")
        );
        assert_eq!(event.outcome, AuditOutcome::Success as i32);
        assert_eq!(event.after_json, r#"{"email":"a@b.example"}"#);
        assert!(uuid::Uuid::parse_str(&event.event_id).is_ok());
        let failed =
            Audit::new("identity-svc", anonymous_actor("x@y"), "", "login", "user", "").failed("LOGIN_FAILED").build();
        assert_eq!((failed.outcome, failed.reason.as_str()), (AuditOutcome::Failure as i32, "LOGIN_FAILED"));
    }
}
