//! gRPC handlers: decode the request, call the domain, encode the reply. No SQL, no rules.
//!
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).

mod call_classes;
pub use call_classes::SERVED;
use tether_proto::audit::v1::audit_service_server::AuditService;
use tether_runtime::db::Database;

pub struct AuditApi {
    #[allow(dead_code)] // used as the audit RPCs land
    database: Database,
}

impl AuditApi {
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {}
