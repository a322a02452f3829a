//! Which of audit's RPCs are not ordinary calls, for the server's budgets
//! (`tether_runtime::server::budget`); the others share the standard budget.

use tether_proto::audit::v1::audit_service_server::AuditServiceServer;
use tether_runtime::server::{CallClass::*, ServedApi};
use tonic::server::NamedService;

pub const SERVED: ServedApi = ServedApi {
    name: <AuditServiceServer<super::AuditApi> as NamedService>::NAME,
    classes: &[
        // Every service's outbox delivers here: searches and exports must not hold it up.
        ("Ingest", HotPath),
    ],
};
