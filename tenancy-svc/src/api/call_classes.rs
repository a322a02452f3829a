//! Which of tenancy's RPCs are not ordinary calls, for the server's budgets
//! (`tether_runtime::server::budget`); the others share the standard budget.

use tether_proto::tenancy::v1::tenancy_service_server::TenancyServiceServer;
use tether_runtime::server::{CallClass::*, ServedApi};
use tonic::server::NamedService;

pub const SERVED: ServedApi = ServedApi {
    name: <TenancyServiceServer<super::TenancyApi> as NamedService>::NAME,
    classes: &[
        // What identity asks while it serves a request (a login's roles, the owner, the admin
        // tenancy): never crowded out by the rest.
        ("GetAdminTenancy", HotPath),
        ("ListUserTenants", HotPath),
        ("GetOwner", HotPath),
    ],
};
