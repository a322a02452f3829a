//! Which of authz's RPCs are not ordinary calls, for the server's budgets
//! (`tether_runtime::server::budget`); the others share the standard budget.

use tether_proto::authz::v1::authz_service_server::AuthzServiceServer;
use tether_runtime::server::{CallClass::*, ServedApi};
use tonic::server::NamedService;

pub const SERVED: ServedApi = ServedApi {
    name: <AuthzServiceServer<super::AuthzApi> as NamedService>::NAME,
    classes: &[
        // The decisions every other service asks for on every request: never crowded out by
        // the rest (role administration, explanations, lookups).
        ("Check", HotPath),
        ("BatchCheck", HotPath),
        ("CheckRoleGrant", HotPath),
    ],
};
