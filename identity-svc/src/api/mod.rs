//! gRPC handlers: decode the request, call the domain, encode the reply. No SQL, no rules.
//!
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).

use tether_proto::identity::v1::identity_service_server::IdentityService;
use tether_runtime::db::Database;

pub struct IdentityApi {
    #[allow(dead_code)] // used as the identity RPCs land
    database: Database,
}

impl IdentityApi {
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {}
