//! gRPC handlers: decode the request, call the domain, encode the reply. No SQL, no rules.
//!
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).

use tether_proto::tenancy::v1::tenancy_service_server::TenancyService;
use tether_runtime::db::Database;

pub struct TenancyApi {
    #[allow(dead_code)] // used as the tenancy RPCs land
    database: Database,
}

impl TenancyApi {
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[tonic::async_trait]
impl TenancyService for TenancyApi {}
