//! The outbox side of identity: change-stream messages, audit events, and the relay that
//! delivers membership intents to tenancy-svc.

pub mod relay;

use tether_proto::common::v1::{self as common, AuditEvent, AuditOutcome};
use tether_runtime::db::now_micros;

pub const SOURCE: &str = "identity-svc";

pub fn anonymous(email: &str) -> common::Actor {
    common::Actor { kind: common::ActorKind::Anonymous as i32, email: email.to_owned(), ..Default::default() }
}

pub fn system(name: &str) -> common::Actor {
    common::Actor { kind: common::ActorKind::System as i32, system_name: name.to_owned(), ..Default::default() }
}

/// An audit event builder: the common fields filled, the rest set by the caller.
pub struct Audit(pub AuditEvent);

impl Audit {
    pub fn new(actor: common::Actor, client_ip: &str, action: &str, resource_type: &str, resource_id: &str) -> Self {
        Self(AuditEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: Some(crate::api::timestamp(now_micros())),
            source_service: SOURCE.to_owned(),
            actor: Some(actor),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.to_owned(),
            client_ip: client_ip.to_owned(),
            outcome: AuditOutcome::Success as i32,
            trace_id: tether_runtime::telemetry::current_trace_id().unwrap_or_default(),
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
    pub fn before(mut self, json: serde_json::Value) -> Self {
        self.0.before_json = json.to_string();
        self
    }
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
