//! The outbox side of identity: change-stream messages, audit events, and the relay that
//! delivers membership intents to tenancy-svc.

pub mod relay;

use tether_proto::{common::v1 as common, identity::v1 as pb};

pub const SOURCE: &str = "identity-svc";

pub use tether_runtime::events::audit::{anonymous_actor as anonymous, system_actor as system};

/// A write of identity-svc: the runtime's one write recipe over identity's change stream.
pub type Write = tether_runtime::events::Write<pb::IdentityChange>;

/// An audit event of identity-svc (the runtime's one builder, with identity as its source).
pub fn audit(
    actor: common::Actor,
    client_ip: &str,
    action: &str,
    resource_type: &str,
    resource_id: &str,
) -> tether_runtime::events::Audit {
    tether_runtime::events::Audit::new(SOURCE, actor, client_ip, action, resource_type, resource_id)
}
