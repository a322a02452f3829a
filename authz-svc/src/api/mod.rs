//! gRPC handlers: decode the request, call the domain, encode the reply. No SQL, no rules.
//!
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).

use tether_proto::authz::v1::authz_service_server::AuthzService;
use tether_runtime::db::Database;

pub struct AuthzApi {
    #[allow(dead_code)] // used as the authz RPCs land
    database: Database,
}

impl AuthzApi {
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[tonic::async_trait]
impl AuthzService for AuthzApi {}
